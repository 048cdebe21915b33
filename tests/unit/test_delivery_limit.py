"""The connection limit per (source IP, host) follows the latest plan: after the core lowers
``max_connections`` (a 4.7.28 throttle, a breaker) new sessions wait until the running ones
are down to the new limit; raised again, they run side by side."""

from __future__ import annotations

import asyncio

from engine.delivery.smtp import _Limit


def test_a_lower_limit_holds_new_sessions_until_running_ones_end() -> None:
    async def go() -> list[tuple[str, int]]:
        lim = _Limit()
        trace: list[tuple[str, int]] = []
        release = [asyncio.Event() for _ in range(3)]

        async def session(name: str, limit: int, gate: asyncio.Event | None) -> None:
            async with lim.hold(limit):
                trace.append((name, lim.active))
                if gate is not None:
                    await gate.wait()

        wide = [asyncio.create_task(session(f"w{k}", 3, release[k])) for k in range(3)]
        await asyncio.sleep(0.01)
        narrow = asyncio.create_task(session("n", 1, None))
        await asyncio.sleep(0.01)
        assert not narrow.done()  # three running, the plan now says one
        release[0].set()
        release[1].set()
        await asyncio.sleep(0.01)
        assert not narrow.done()  # still one running: at the limit
        release[2].set()
        await asyncio.wait_for(narrow, 1)
        await asyncio.gather(*wide)
        # raised again: several at once
        gates = [asyncio.Event() for _ in range(2)]
        both = [asyncio.create_task(session(f"r{k}", 2, gates[k])) for k in range(2)]
        await asyncio.sleep(0.01)
        assert lim.active == 2
        for g in gates:
            g.set()
        await asyncio.gather(*both)
        assert lim.active == 0
        return trace

    trace = asyncio.run(go())
    assert ("n", 1) in trace and [t for t in trace if t[0].startswith("w")][-1][1] == 3
