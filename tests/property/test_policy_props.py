"""Property tests of the policy core: each states an invariant that a wrong core breaks."""

from __future__ import annotations

import math
import random
from itertools import pairwise

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.policy import (
    TERMINAL_TYPES,
    TRANSITIONS,
    Automation,
    Breaker,
    Dispatch,
    Result,
    Retry,
    Scheduler,
    Signal,
    TokenBucket,
    guaranteed_share,
    plan_retry,
    retry_delays,
    retry_times,
)
from engine.policy.params import (
    AutomationSpec,
    BreakerSpec,
    LaneSpec,
    PolicyParams,
    PoolSpec,
    RetrySpec,
)
from engine.policy.types import ProviderProfile, ReplyRule, Shaping, Verdict

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def params(rate: float = 100.0, burst: int = 10, ttl: float = 600.0) -> PolicyParams:
    retry = RetrySpec(delays_s=(5.0, 20.0, 60.0), jitter=0.3, max_attempts=6)
    return PolicyParams(
        version="p",
        lanes={
            "transactional": LaneSpec(name="transactional", weight=6, reserved_share=0.2,
                                      ttl_s=ttl, max_wait_s=60, retry=retry),
            "lifecycle": LaneSpec(name="lifecycle", weight=3, ttl_s=ttl * 1.5, retry=retry),
            "prospecting": LaneSpec(name="prospecting", weight=1, ttl_s=ttl * 2, retry=retry),
        },
        pools={"a": PoolSpec(name="a", source_ips=("127.0.0.2",)),
               "b": PoolSpec(name="b", source_ips=("127.0.0.3", "127.0.0.4"))},
        providers={
            "gmail": ProviderProfile(name="gmail", shaping=Shaping(
                messages_per_second=rate, burst=burst), rules=(ReplyRule(
                    id="g.rate", provider="gmail", category="throttled",
                    action="retry_slow_down", scope="ip", threshold_per_hour=3,
                    effect="throttle", throttle_factor=0.5, duration_s=30),)),
            "yahoo": ProviderProfile(name="yahoo", shaping=Shaping(
                messages_per_second=rate / 2, burst=burst)),
        },
        breaker=BreakerSpec(min_volume=20, open_s=40, step_s=10),
        automation=AutomationSpec(recovery_step=0.2, recovery_step_s=10, resume_spread_s=20),
    )


# -- buckets ------------------------------------------------------------------------------
@FAST
@given(st.lists(st.tuples(st.floats(0, 3), st.integers(0, 40),
                          st.one_of(st.none(), st.floats(0, 1))), min_size=1, max_size=60),
       st.floats(0.5, 50), st.integers(1, 30))
def test_bucket_never_exceeds_rate_over_any_window(ops: list[tuple[float, int, float | None]],
                                                   rate: float, burst: int) -> None:
    b = TokenBucket(rate, burst, now=0.0)
    now = 0.0
    log: list[tuple[float, int]] = []
    for dt, n, factor in ops:
        now += dt
        if factor is not None:
            b.scale(factor, now)
        log.append((now, b.take(n, now)))
    for i in range(len(log)):
        total = 0
        for j in range(i, len(log)):
            total += log[j][1]
            assert total <= burst + rate * (log[j][0] - log[i][0]) + 1e-6


# -- lanes ----------------------------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(st.integers(0, 150_000),
       st.lists(st.tuples(st.floats(0, 5), st.integers(1, 60)), min_size=1, max_size=8))
@example(120_000, [(0.0, 10), (2.5, 10), (4.0, 10)])
@example(100_001, [(1.0, 60), (1.05, 60)])
def test_transactional_wait_bounded_whatever_the_backlog(
        bulk: int, arrivals: list[tuple[float, int]]) -> None:
    p = params(rate=100.0, burst=10)
    s = Scheduler(p, random.Random(1))
    for i in range(bulk):
        s.submit(1_000_000 + i, lane="prospecting", tenant="bulk", sending_domain="m",
                 provider="gmail", now=0.0)
    pending = sorted(arrivals)
    submitted: dict[int, float] = {}
    waits: list[float] = []
    dt = 0.1
    total_rate = 100.0 * 3  # three source IPs
    share = guaranteed_share(p.lanes, "transactional")
    k = sum(n for _, n in arrivals)
    next_id = 0
    for step in range(int(12 / dt)):
        now = step * dt
        while pending and pending[0][0] <= now:
            _, n = pending.pop(0)
            for _ in range(n):
                s.submit(next_id, lane="transactional", tenant="t", sending_domain="x",
                         provider="gmail", now=now)
                submitted[next_id] = now
                next_id += 1
        for d in s.due(now):
            if d.lane == "transactional":
                waits.extend(now - submitted[i] for i in d.ids)
    assert len(waits) == k
    bound = k / (share * total_rate) + 3 * dt + 10 / total_rate
    assert max(waits) <= bound
    assert max(waits) <= p.lanes["transactional"].max_wait_s


# -- breaker --------------------------------------------------------------------------------
breaker_ops = st.lists(st.one_of(
    st.tuples(st.just("obs"), st.integers(0, 30), st.integers(0, 5), st.integers(0, 2),
              st.integers(0, 15)),
    st.tuples(st.just("wait"), st.floats(0, 60)),
    st.tuples(st.just("incident")),
), max_size=80)


@FAST
@given(breaker_ops)
def test_breaker_transitions_follow_the_table(ops: list[tuple[object, ...]]) -> None:
    b = Breaker(BreakerSpec(min_volume=20, step_s=10, open_s=30), "a", "g")
    now = 0.0
    state = "closed"
    for op in ops:
        if op[0] == "obs":
            _, a, bo, c, d = op
            changes = b.observe(now, attempts=int(a), bounces=int(bo), complaints=int(c),  # type: ignore[call-overload]
                                deferrals=int(d))  # type: ignore[call-overload]
        elif op[0] == "wait":
            now += float(op[1])  # type: ignore[arg-type]
            changes = b.advance(now)
        else:
            changes = b.incident(now, "test")
        for ch in changes:
            assert ch.from_state == state
            assert TRANSITIONS[(ch.from_state, ch.trigger)] == ch.to_state
            assert ch.reasons and all(ch.reasons)
            assert (ch.factor == 0.0) == (ch.to_state == "open")
            assert (ch.factor == 1.0) == (ch.to_state == "closed")
            assert 0.0 <= ch.factor <= 1.0
            state = ch.to_state
        assert b.state == state


# -- retry ------------------------------------------------------------------------------------
@FAST
@given(st.lists(st.floats(1, 5000), min_size=1, max_size=8), st.floats(0, 0.9),
       st.integers(0, 2**32), st.floats(10, 1e6), st.one_of(st.none(), st.floats(0, 9000)))
def test_retry_schedules_monotone_and_ttl_capped(delays: list[float], jitter: float, seed: int,
                                                 ttl: float, override: float | None) -> None:
    spec = RetrySpec(delays_s=tuple(delays), jitter=jitter, max_attempts=25)
    seq = list(retry_delays(spec, random.Random(seed), override))
    assert all(x <= y for x, y in pairwise(seq))
    if override is not None:
        assert all(x >= override for x in seq)
    times = list(retry_times(spec, random.Random(seed), start=0.0, deadline=ttl))
    assert all(t < ttl for t in times)
    assert all(x < y for x, y in pairwise(times))
    # the stepwise planner a scheduler uses agrees: never past the deadline, never shrinking
    rng = random.Random(seed)
    prev, now = 0.0, 0.0
    for attempt in range(1, 25):
        plan = plan_retry(spec, attempt=attempt, previous=prev, now=now, deadline=ttl, rng=rng,
                          override_s=override)
        if plan.at is None:
            break
        assert plan.at < ttl and plan.delay >= prev
        prev, now = plan.delay, plan.at


# -- automation -----------------------------------------------------------------------------
@FAST
@given(st.lists(st.tuples(st.floats(0, 50), st.booleans(), st.floats(0.1, 0.9)), max_size=60))
def test_automation_recovery_is_gradual(ops: list[tuple[float, bool, float]]) -> None:
    spec = AutomationSpec(recovery_step=0.2, recovery_step_s=10)
    a = Automation(spec, "a", "g")
    now = 0.0
    for dt, suspend, factor in ops:
        before, t0 = a.factor, now
        now += dt
        changes = a.advance(now)
        # between two looks the factor rises by at most one step per step period elapsed
        steps = math.floor(dt / spec.recovery_step_s) + 1
        assert a.factor - before <= spec.recovery_step * steps + 1e-9
        for ch in changes:
            assert t0 - 1e-9 <= ch.at <= now
        rule = ReplyRule(id="r", provider="g", category="throttled", action="retry_slow_down",
                         scope="ip", effect="suspend" if suspend else "throttle",
                         throttle_factor=factor, duration_s=15)
        before = a.factor
        a.match(rule, now)
        assert a.factor <= before  # an effect never raises the rate


# -- whole scheduler: determinism and conservation ------------------------------------------
OUTCOMES = ("ok", "ok", "ok", "defer", "throttle", "unknown", "reject", "silent", "conn")


Run = tuple[list[str], dict[int, int], set[int], Scheduler, int]


def run_script(seed: int, n: int, steps: int) -> Run:
    """Drive a Scheduler with a seeded random world; returns its decision log, the terminal
    decisions per id, the ids still in flight, the scheduler and how many ids were submitted."""
    world = random.Random(seed)
    s = Scheduler(params(rate=5.0, burst=5, ttl=60.0), random.Random(seed + 1))
    log: list[str] = []
    terminal: dict[int, int] = {}
    inflight: set[int] = set()
    lanes = ("transactional", "lifecycle", "prospecting")
    next_id = 0
    now = 0.0

    def take(decisions: list[object]) -> None:
        for d in decisions:
            log.append(repr(d))
            if isinstance(d, TERMINAL_TYPES):
                terminal[d.id] = terminal.get(d.id, 0) + 1
                inflight.discard(d.id)
            elif isinstance(d, Retry):
                inflight.discard(d.id)

    for _ in range(steps):
        now += world.choice((0.05, 0.5, 3.0, 20.0))
        for _ in range(world.randrange(0, max(1, n // 10))):
            if next_id < n:
                s.submit(next_id, lane=world.choice(lanes), tenant=world.choice("tu"),
                         sending_domain="d", provider=world.choice(("gmail", "yahoo")),
                         now=now, not_before=now + world.choice((0, 0, 30)))
                next_id += 1
        take(list(s.tick(now)))
        batch: list[Dispatch] = s.due(now)
        take(list(s.tick(now)))
        for d in batch:
            log.append(repr(d))
            for i in d.ids:
                assert i not in inflight, f"{i} dispatched twice"
                assert i not in terminal, f"{i} dispatched after its end"
                inflight.add(i)
        if world.random() < 0.2:
            take(list(s.feedback(Signal(kind=world.choice(("complaint", "bounce", "incident")),
                                        pool=world.choice("ab"), provider="gmail"), now)))
        for d in batch:
            for i in d.ids:
                if world.random() < 0.1:
                    continue  # answered later (or never within the run)
                take(list(s.record(result_for(world.choice(OUTCOMES), i, d), now)))
        for i in sorted(inflight):
            if world.random() < 0.5 and s.state_of(i) == "in flight":
                take(list(s.record(Result(id=i, pool="a", source_ip="127.0.0.2",
                                          provider="gmail", code=250), now)))
    return log, terminal, inflight, s, next_id


def result_for(kind: str, i: int, d: Dispatch) -> Result:
    base = {"id": i, "pool": d.pool, "source_ip": d.source_ip, "provider": d.provider}
    if kind == "ok":
        return Result(code=250, **base)  # type: ignore[arg-type]
    if kind == "defer":
        return Result(code=451, text="451 4.3.0 try later", **base)  # type: ignore[arg-type]
    if kind == "throttle":
        v = Verdict(temporary=True, category="throttled", action="retry_slow_down", scope="ip",
                    retry_after_s=60, rule="g.rate", provider=d.provider)
        return Result(code=421, verdict=v, **base)  # type: ignore[arg-type]
    if kind == "unknown":
        return Result(code=550, text="550 5.1.1 no such user", **base)  # type: ignore[arg-type]
    if kind == "reject":
        return Result(code=554, text="554 5.7.1 policy", **base)  # type: ignore[arg-type]
    if kind == "silent":
        return Result(code=None, data_completed=True, **base)  # type: ignore[arg-type]
    return Result(code=None, **base)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 300), st.integers(1, 120))
def test_same_seed_same_decisions(seed: int, n: int, steps: int) -> None:
    first = run_script(seed, n, steps)[0]
    assert first == run_script(seed, n, steps)[0]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 400), st.integers(1, 150))
def test_no_message_lost_or_ended_twice(seed: int, n: int, steps: int) -> None:
    _, terminal, inflight, s, count = run_script(seed, n, steps)
    assert all(c == 1 for c in terminal.values())
    submitted = set(range(count))
    assert set(terminal) <= submitted
    for i in submitted:
        held = s.state_of(i) is not None
        assert held != (i in terminal), f"message {i}: held={held} ended={i in terminal}"
    assert {i for i in inflight} == {i for i in submitted if s.state_of(i) == "in flight"}
