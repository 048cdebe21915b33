"""Property tests of the scheduler's batch verbs: ``submit_many`` / ``record_batch`` must
decide exactly what ``submit`` / ``record`` called one by one decide, for the same seed."""

from __future__ import annotations

import random
from array import array
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InputError, StateError
from engine.policy import Result, Scheduler, Signal
from engine.policy.params import (
    AutomationSpec,
    BreakerSpec,
    LaneSpec,
    PolicyParams,
    PoolSpec,
    RetrySpec,
)
from engine.policy.types import ProviderProfile, ReplyRule, Shaping, Verdict

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# (code, text) outcomes a dispatch's messages may get
REPLIES: tuple[tuple[int | None, str], ...] = (
    (250, "250 2.0.0 OK"),
    (250, "250 2.0.0 OK"),
    (250, "250 2.0.0 OK"),
    (251, "251 2.1.5 forwarded"),
    (421, "421 4.7.28 rate limited"),
    (451, "451 4.3.0 try later"),
    (550, "550 5.1.1 no such user"),
    (554, "554 5.7.1 blocked"),
    (None, "connection lost"),
)


def params() -> PolicyParams:
    retry = RetrySpec(delays_s=(5.0, 20.0, 60.0), jitter=0.3, max_attempts=4)
    return PolicyParams(
        version="p",
        lanes={
            "transactional": LaneSpec(name="transactional", weight=6, reserved_share=0.2,
                                      ttl_s=300, max_wait_s=60, retry=retry),
            "lifecycle": LaneSpec(name="lifecycle", weight=3, ttl_s=500, retry=retry),
            "prospecting": LaneSpec(name="prospecting", weight=1, ttl_s=700, retry=retry),
        },
        pools={"a": PoolSpec(name="a", source_ips=("127.0.0.2",)),
               "b": PoolSpec(name="b", source_ips=("127.0.0.3", "127.0.0.4"))},
        providers={
            "gmail": ProviderProfile(name="gmail", shaping=Shaping(
                messages_per_second=40, burst=25), rules=(ReplyRule(
                    id="g.rate", provider="gmail", category="throttled",
                    action="retry_slow_down", scope="ip", threshold_per_hour=3,
                    effect="throttle", throttle_factor=0.5, duration_s=30),)),
            "yahoo": ProviderProfile(name="yahoo", shaping=Shaping(
                messages_per_second=20, burst=15)),
        },
        breaker=BreakerSpec(min_volume=12, open_s=40, step_s=10),
        automation=AutomationSpec(recovery_step=0.2, recovery_step_s=10, resume_spread_s=20),
    )


def classify(provider: str, code: int | None, text: str) -> Verdict:
    """A small classifier: gmail's 4.7.28 matches the throttling rule, 5.7.1 pauses."""
    if code is not None and code == 421 and provider == "gmail":
        return Verdict(temporary=True, category="throttled", action="retry_slow_down",
                       scope="ip", retry_after_s=30, rule="g.rate", code=code,
                       enhanced="4.7.28", provider=provider, reasons=("4.7.28",))
    if code == 554:
        return Verdict(temporary=True, category="policy", action="pause_pool", scope="pool",
                       retry_after_s=None, rule="x.block", code=code, enhanced="5.7.1",
                       provider=provider, reasons=("blocked",))
    from engine.policy.scheduler import basic_verdict

    return basic_verdict(provider, code, text)


step = st.tuples(
    st.floats(0.0, 15.0),  # time advance
    st.lists(st.tuples(st.sampled_from(["transactional", "lifecycle", "prospecting"]),
                       st.sampled_from(["gmail", "yahoo", "other"]),
                       st.integers(0, 40)), max_size=3),  # submitted batches
    st.lists(st.integers(0, len(REPLIES) - 1), min_size=1, max_size=30),  # reply pattern
    st.one_of(st.none(), st.tuples(st.sampled_from(["complaint", "bounce", "incident"]),
                                   st.sampled_from(["a", "b"]),
                                   st.sampled_from(["gmail", "yahoo"]))),
)


def _drive(steps: list[Any], seed: int, batch: bool) -> list[str]:
    s = Scheduler(params(), random.Random(seed), classify=classify)
    log: list[str] = []
    now = 0.0
    next_id = 0
    for dt, subs, pattern, signal in steps:
        now += dt
        for lane, prov, count in subs:
            ids = list(range(next_id, next_id + count))
            next_id += count
            if batch:
                s.submit_many(array("q", ids), lane=lane, tenant="t", sending_domain="d",
                              provider=prov, now=now)
            else:
                for i in ids:
                    s.submit(i, lane=lane, tenant="t", sending_domain="d", provider=prov,
                             now=now)
        if signal is not None:
            kind, pool, prov = signal
            log.extend(map(repr, s.feedback(Signal(kind=kind, pool=pool, provider=prov,
                                                   reason="x"), now)))
        log.extend(map(repr, s.tick(now)))
        k = 0
        for d in s.due(now):
            log.append(repr(d))
            outs = [REPLIES[pattern[(k + j) % len(pattern)]] for j in range(d.n)]
            k += d.n
            if batch:
                rec = s.record_batch(np.asarray(d.ids), [c for c, _ in outs],
                                     [t for _, t in outs], pool=d.pool,
                                     source_ip=d.source_ip, provider=d.provider, now=now)
                log.extend(map(repr, rec.ordered()))
            else:
                for mid, (code, text) in zip(d.ids, outs, strict=True):
                    log.extend(map(repr, s.record(Result(
                        id=mid, pool=d.pool, source_ip=d.source_ip, provider=d.provider,
                        code=code, text=text), now)))
        log.extend(map(repr, s.tick(now)))
        log.append(f"len={len(s)} wake={s.next_wakeup()} rng={s.rng.random()}")
    return log


@FAST
@given(st.lists(step, min_size=1, max_size=25), st.integers(0, 2**16))
def test_batch_verbs_decide_exactly_like_single_verbs(steps: list[Any], seed: int) -> None:
    single = _drive(steps, seed, batch=False)
    batched = _drive(steps, seed, batch=True)
    assert batched == single


@FAST
@given(st.integers(1, 200), st.integers(0, 60), st.integers(0, 2**16))
def test_long_accept_runs_trip_the_breaker_where_single_records_do(
        n: int, bad: int, seed: int) -> None:
    """A dispatch of ``bad`` hard bounces then ``n`` accepts: the breaker's transition (if
    any) lands on the same message in both, and the logs are identical."""
    logs = []
    for batch in (False, True):
        s = Scheduler(params(), random.Random(seed), classify=classify)
        ids = list(range(bad + n))
        s.submit_many(ids, lane="lifecycle", tenant="t", sending_domain="d", provider="yahoo",
                      now=0.0)
        log: list[str] = []
        now = 0.0
        pending = set(ids)
        while pending and now < 100:
            for d in s.due(now):
                outs = [(550, "550 5.1.1 no such user") if i < bad else (250, "250 ok")
                        for i in d.ids]
                if batch:
                    rec = s.record_batch(d.ids, [c for c, _ in outs], [t for _, t in outs],
                                         pool=d.pool, source_ip=d.source_ip,
                                         provider=d.provider, now=now)
                    got = rec.ordered()
                else:
                    got = [x for mid, (c, t) in zip(d.ids, outs, strict=True)
                           for x in s.record(Result(id=mid, pool=d.pool, source_ip=d.source_ip,
                                                    provider=d.provider, code=c, text=t), now)]
                log.extend(map(repr, got))
                pending -= set(d.ids)
            log.extend(map(repr, s.tick(now)))
            now += 1.0
        logs.append(log)
    assert logs[0] == logs[1]
    assert any("Delivered" in x for x in logs[1])


def test_batch_verbs_reject_bad_input_and_change_nothing() -> None:
    s = Scheduler(params(), random.Random(1))
    s.submit_many([1, 2, 3], lane="lifecycle", tenant="t", sending_domain="d",
                  provider="gmail", now=0.0)
    with pytest.raises(InputError):
        s.submit_many([4, 2], lane="lifecycle", tenant="t", sending_domain="d", now=0.0)
    with pytest.raises(InputError):
        s.submit_many([5, 5], lane="lifecycle", tenant="t", sending_domain="d", now=0.0)
    with pytest.raises(InputError):
        s.submit_many([-1], lane="lifecycle", tenant="t", sending_domain="d", now=0.0)
    with pytest.raises(InputError):
        s.submit_many([9], lane="nope", tenant="t", sending_domain="d", now=0.0)  # type: ignore[arg-type]
    assert len(s) == 3 and s.state_of(4) is None
    ds = s.due(0.0)
    assert sum(d.n for d in ds) == 3
    d = ds[0]
    with pytest.raises(StateError):
        s.record_batch([*d.ids, 99], [250] * (d.n + 1), ["ok"] * (d.n + 1), pool=d.pool,
                       source_ip=d.source_ip, provider=d.provider, now=0.0)
    assert all(s.state_of(i) == "in flight" for i in d.ids)
    rec = s.record_batch(d.ids, [250] * d.n, ["ok"] * d.n, pool=d.pool,
                         source_ip=d.source_ip, provider=d.provider, now=0.0)
    assert rec.delivered == list(d.ids) and len(rec.ordered()) == d.n
