"""Per-pool policies: every distinct policy of the lab gets its own scheduler, and a pool on
its own policy (mkt-b runs warmup-conservative-v1 in fixtures/lab.toml) carries traffic.

Real sockets: an aiosmtpd receiver on 127.0.0.1 records the source address of each
session, which names the pool (tx-a .2/.3, mkt-b .4-.7, shared-c .8).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.runner import Runner, own_routes
from engine.spool import Spool

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
POOL_OF = {"127.0.0.2": "tx-a", "127.0.0.3": "tx-a", "127.0.0.8": "shared-c",
           **{f"127.0.0.{i}": "mkt-b" for i in range(4, 8)}}


class PeerSink:
    """Records (peer address, recipient) of every accepted message."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.got.extend((session.peer[0], r) for r in envelope.rcpt_tos)
        return "250 2.0.0 ok"


@pytest.fixture
def peer_sink() -> Any:
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    sink = PeerSink()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    ctl.stop()


def _config(port: int) -> Any:
    env = dict(os.environ, INBOXLAB_PORT_OTHER=str(port), INBOXLAB_SANDBOX_HOST="127.0.0.1")
    return load_config(LAB, env=env)


def test_one_scheduler_per_policy_with_narrowed_routes(tmp_path: Path) -> None:
    config = _config(2529)
    spool = Spool(tmp_path / "s.db")
    runner = Runner(config, spool, secret=b"k" * 32)
    assert set(runner.groups) == {config.pool_policy["tx-a"], config.pool_policy["mkt-b"]}
    warm = runner.groups[config.pool_policy["mkt-b"]]
    assert warm.owned == {"mkt-b"}
    # shared-c is in the warmup group's pools (mkt-b overflows there) but no route names it
    assert "shared-c" in warm.scheduler.params.pools
    assert all(rc.pools and "shared-c" not in rc.pools for rc in warm.scheduler.params.routes)
    assert own_routes(warm.scheduler.params, frozenset({"mkt-b"})).routes == \
        warm.scheduler.params.routes
    # transactional mail is tx-a only: it never reaches the warmup group
    assert {runner.group_for(i, "acme", "transactional").name  # type: ignore[union-attr]
            for i in range(200)} == {config.pool_policy["tx-a"]}
    # prospecting (mkt-b, shared-c) splits between the two groups, stably
    picks = [runner.group_for(i, "acme", "prospecting") for i in range(400)]
    assert picks == [runner.group_for(i, "acme", "prospecting") for i in range(400)]
    share = sum(p is warm for p in picks) / len(picks)
    assert 0.35 < share < 0.65, share
    # globex may not use mkt-b at all
    assert all(runner.group_for(i, "globex", "lifecycle") is not warm for i in range(200))
    spool.close()


def test_pool_on_its_own_policy_gets_traffic(peer_sink: Any, tmp_path: Path) -> None:
    config = _config(peer_sink.port)
    spool = Spool(tmp_path / "s.db")
    body = b"Subject: hi\r\nFrom: news@news.acme.example\r\n\r\nhello\r\n"
    n = 0
    for lane in ("prospecting", "transactional"):
        for i in range(40):
            spool.accept(tenant="acme", idem_key=f"{lane}{i}", request=b"r%d" % n, lane=lane,
                         campaign="c", sending_domain="news.acme.example",
                         mail_from="news@news.acme.example",
                         recipients=[f"{lane}{i}@example.net"], body=body)
            n += 1

    async def go() -> None:
        runner = Runner(config, spool, secret=b"k" * 32, seed=3, timeout=10)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.02))
        for _ in range(1500):
            await asyncio.sleep(0.02)
            if spool.active() == 0:
                break
        stop.set()
        await task

    asyncio.run(go())
    states = Counter(spool.state(i)[0] for i in range(1, n + 1))
    spool.close()
    assert states == {"delivered": n}
    by_lane: dict[str, Counter[str]] = {"prospecting": Counter(), "transactional": Counter()}
    for peer, rcpt in peer_sink.got:
        by_lane["prospecting" if rcpt.startswith("prospecting") else "transactional"][
            POOL_OF[peer]] += 1
    assert by_lane["prospecting"]["mkt-b"] > 0, by_lane
    assert set(by_lane["prospecting"]) <= {"mkt-b", "shared-c"}
    assert set(by_lane["transactional"]) == {"tx-a"}
    assert len(peer_sink.got) == n
