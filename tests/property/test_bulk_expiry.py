"""Property tests of the bulk expiry verb: ``tick_batched`` must expire the same messages,
at the same times, in the same order, with the same reasons as ``tick`` -- and both must
match an independent model of the expiry wheel (deadline passed, found <= 16 s late)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.policy import Expire, Result, Scheduler
from engine.policy.params import LaneSpec, PolicyParams, PoolSpec, RetrySpec
from engine.policy.scheduler import ExpireBatch, tick_batched
from engine.policy.types import ProviderProfile, Shaping

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHEEL_S = 16.0  # the scheduler's documented lateness bound for queued/deferred expiry


def params() -> PolicyParams:
    retry = RetrySpec(delays_s=(5.0, 30.0, 90.0), jitter=0.3, max_attempts=5)
    return PolicyParams(
        version="p",
        lanes={
            "transactional": LaneSpec(name="transactional", weight=6, reserved_share=0.2,
                                      ttl_s=40, max_wait_s=20, retry=retry),
            "lifecycle": LaneSpec(name="lifecycle", weight=3, ttl_s=90, retry=retry),
            "prospecting": LaneSpec(name="prospecting", weight=1, ttl_s=150, retry=retry),
        },
        pools={"a": PoolSpec(name="a", source_ips=("127.0.0.2",))},
        providers={"gmail": ProviderProfile(name="gmail", shaping=Shaping(
            messages_per_second=3, burst=4))},
    )


LANES = ["transactional", "lifecycle", "prospecting"]
step = st.tuples(
    st.floats(0.0, 60.0),  # time advance
    st.lists(st.tuples(st.sampled_from(LANES), st.integers(0, 30),
                       st.one_of(st.none(), st.floats(1.0, 200.0))), max_size=3),
    st.booleans(),  # dispatch what is due this step
    st.lists(st.sampled_from([250, 421, 451]), min_size=1, max_size=8),  # reply pattern
)


def _drive(steps: list[Any], seed: int, batched: bool) -> tuple[list[str], int]:
    s = Scheduler(params(), random.Random(seed))
    log: list[str] = []
    batches = 0
    now = 0.0
    next_id = 0

    def tick() -> None:
        nonlocal batches
        if not batched:
            log.extend(map(repr, s.tick(now)))
            return
        for dec in tick_batched(s, now):
            if isinstance(dec, ExpireBatch):
                batches += 1
                assert dec.n == len(set(dec.ids)) > 0
                log.extend(map(repr, dec.expand()))
            else:
                log.append(repr(dec))

    for dt, subs, send, pattern in steps:
        now += dt
        for lane, count, ttl in subs:
            ids = list(range(next_id, next_id + count))
            next_id += count
            s.submit_many(ids, lane=lane, tenant="t", sending_domain="d", provider="gmail",
                          now=now, expires=None if ttl is None else now + ttl)
        tick()
        if send:
            k = 0
            for d in s.due(now):
                codes = [pattern[(k + j) % len(pattern)] for j in range(d.n)]
                k += d.n
                for mid, code in zip(d.ids, codes, strict=True):
                    log.extend(map(repr, s.record(Result(
                        id=mid, pool=d.pool, source_ip=d.source_ip, provider=d.provider,
                        code=code, text=f"{code} x"), now)))
        tick()
        log.append(f"len={len(s)} wake={s.next_wakeup()} rng={s.rng.random()}")
    return log, batches


@FAST
@given(st.lists(step, min_size=1, max_size=20), st.integers(0, 2**16))
def test_tick_batched_expands_to_exactly_what_tick_returns(steps: list[Any],
                                                           seed: int) -> None:
    single, _ = _drive(steps, seed, batched=False)
    batched, _ = _drive(steps, seed, batched=True)
    assert batched == single


@FAST
@given(st.lists(st.tuples(st.floats(0.0, 50.0), st.integers(1, 40), st.floats(1.0, 120.0)),
                min_size=1, max_size=12),
       st.lists(st.floats(0.5, 80.0), min_size=1, max_size=12))
def test_tick_batched_expires_what_the_wheel_model_says(
        subs: list[tuple[float, int, float]], ticks: list[float]) -> None:
    """Nothing is dispatched: every message expires at the first tick at or after
    ``(floor(deadline / 16) + 1) * 16`` (its wheel bucket's end, never before its
    deadline), each run of one deadline as one batch with the deadline in its reason."""
    s = Scheduler(params(), random.Random(1))
    deadline: dict[int, float] = {}
    events: list[tuple[float, str, Any]] = []
    t = 0.0
    for dt, n, ttl in subs:
        t += dt
        events.append((t, "submit", (n, ttl)))
    t = 0.0
    for dt in ticks:
        t += dt
        events.append((t, "tick", None))
    events.sort(key=lambda e: (e[0], e[1] == "tick"))
    got: dict[int, float] = {}
    next_id = 0
    for now, what, arg in events:
        if what == "submit":
            n, ttl = arg
            ids = list(range(next_id, next_id + n))
            next_id += n
            s.submit_many(ids, lane="prospecting", tenant="t", sending_domain="d",
                          provider="gmail", now=now, expires=now + ttl)
            deadline.update(dict.fromkeys(ids, now + ttl))
            continue
        for dec in tick_batched(s, now):
            assert isinstance(dec, ExpireBatch)
            assert dec.state == "queued" and dec.at == now
            first = deadline[dec.ids[0]]
            assert all(deadline[i] == first for i in dec.ids)
            assert dec.reasons == (f"TTL reached at {first:.0f} while queued",)
            for i in dec.ids:
                assert i not in got
                got[i] = now
        expected = {i for i, d in deadline.items()
                    if d <= now and (d // WHEEL_S + 1) * WHEEL_S <= now}
        assert set(got) == expected
        for i in expected:  # expired at the first tick that was late enough
            d = deadline[i]
            assert got[i] == min(tm for tm, w, _ in events
                                 if w == "tick" and tm >= d and tm >= (d // WHEEL_S + 1) * WHEEL_S)
    assert len(s) == len(deadline) - len(got)


def test_expire_batch_expands_in_order() -> None:
    from array import array

    b = ExpireBatch(ids=array("q", [5, 3, 9]), at=7.0, state="deferred", reasons=("r",))
    assert b.n == 3
    assert b.expand() == [Expire(id=i, at=7.0, state="deferred", reasons=("r",))
                          for i in (5, 3, 9)]
