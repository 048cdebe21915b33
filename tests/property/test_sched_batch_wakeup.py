"""``Scheduler.next_wakeup(expiry_slack_s=...)``: a driver that wakes only when told, with
expiries allowed to ride ``S`` seconds late, still ends every message exactly once, never
dispatches a message past its deadline, and sees each expiry at most 16 s + ``S`` late."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy import Expire, Scheduler
from engine.policy.scheduler import TERMINAL_TYPES
from tests.property.test_batch_props import REPLIES, classify, params

LANES = ("transactional", "lifecycle", "prospecting")


def _run(arrivals: list[tuple[float, int, int]], pattern: list[int], slack: float,
         seed: int) -> None:
    s = Scheduler(params(), random.Random(seed), classify=classify)
    ttl = {lane: s.params.lanes[lane].ttl_s for lane in LANES}  # type: ignore[index]
    deadline: dict[int, float] = {}
    ended: dict[int, Any] = {}
    todo = sorted(arrivals)
    now, next_id, k = 0.0, 0, 0

    def book(decisions: list[Any]) -> None:
        for dec in decisions:
            if isinstance(dec, TERMINAL_TYPES):
                assert dec.id not in ended, f"{dec.id} ended twice"
                ended[dec.id] = dec
                if isinstance(dec, Expire):
                    assert dec.at <= deadline[dec.id] + 16.0 + slack + 1e-6

    while True:
        assert s.next_wakeup(expiry_slack_s=0.0) == s.next_wakeup()
        w = s.next_wakeup(expiry_slack_s=slack)
        cands = [t for t in (w, todo[0][0] if todo else None) if t is not None]
        if not cands:
            break
        now = max(now, min(cands))
        while todo and todo[0][0] <= now:
            _, lane_k, count = todo.pop(0)
            lane = LANES[lane_k]
            for _ in range(count):
                deadline[next_id] = now + ttl[lane]  # type: ignore[index]
                s.submit(next_id, lane=lane, tenant="t", sending_domain="d",  # type: ignore[arg-type]
                         provider="gmail", now=now)
                next_id += 1
        book(s.tick(now))
        for d in s.due(now):
            assert all(deadline[i] > now for i in d.ids), "dispatched past its deadline"
            outs = [REPLIES[pattern[(k + j) % len(pattern)]] for j in range(d.n)]
            k += d.n
            rec = s.record_batch(list(d.ids), [c for c, _ in outs], [t for _, t in outs],
                                 pool=d.pool, source_ip=d.source_ip, provider=d.provider,
                                 now=now)
            book(rec.ordered())
        book(s.tick(now))
    assert len(s) == 0
    assert set(ended) == set(deadline)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0.0, 2000.0), st.integers(0, 2), st.integers(0, 30)),
                min_size=1, max_size=12),
       st.lists(st.integers(0, len(REPLIES) - 1), min_size=1, max_size=20),
       st.sampled_from([0.0, 30.0, 300.0]), st.integers(0, 2**16))
def test_slack_driver_ends_every_message_once_and_never_sends_late(
        arrivals: list[tuple[float, int, int]], pattern: list[int], slack: float,
        seed: int) -> None:
    _run(arrivals, pattern, slack, seed)
