"""Unit tests of the pure policy core: buckets, lanes, retries, breaker table, automation,
warmup, windows, routes and the Scheduler's verbs end to end."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from engine.errors import InputError, StateError
from engine.policy import (
    TRANSITIONS,
    Ambiguous,
    Automation,
    AutomationChange,
    Breaker,
    BreakerChange,
    DeadLetter,
    Delivered,
    Expire,
    LaneSplitter,
    Result,
    Retry,
    Scheduler,
    Signal,
    Suppress,
    TokenBucket,
    allowed_routes,
    connection_plan,
    day_cap,
    in_window,
    next_open,
    outlook,
    plan_retry,
    strict_order,
)
from engine.policy.params import (
    AutomationSpec,
    BreakerSpec,
    BucketSpec,
    LaneSpec,
    PolicyParams,
    PoolSpec,
    RetrySpec,
    RouteConstraint,
    WarmupPlan,
)
from engine.policy.types import ProviderProfile, ReplyRule, Shaping, Verdict

NO_JITTER = RetrySpec(delays_s=(60.0, 300.0, 900.0), jitter=0.0, max_attempts=5)


def params(**kw: object) -> PolicyParams:
    lanes = {
        "transactional": LaneSpec(name="transactional", weight=6, reserved_share=0.2,
                                  ttl_s=3600, retry=NO_JITTER),
        "lifecycle": LaneSpec(name="lifecycle", weight=3, retry=NO_JITTER),
        "prospecting": LaneSpec(name="prospecting", weight=1, retry=NO_JITTER),
    }
    base: dict[str, object] = {
        "version": "t1",
        "lanes": lanes,
        "pools": {"a": PoolSpec(name="a", source_ips=("127.0.0.2",))},
        "providers": {"gmail": ProviderProfile(
            name="gmail", domains=("gmail.com",),
            shaping=Shaping(messages_per_second=10, burst=10, max_connections=4,
                            max_messages_per_connection=50))},
    }
    base.update(kw)
    return PolicyParams(**base)  # type: ignore[arg-type]


def temp(rule: str = "t", retry_after: int | None = None, action: str = "retry_soon") -> Verdict:
    return Verdict(temporary=True, category="throttled", action=action,  # type: ignore[arg-type]
                   scope="ip", retry_after_s=retry_after, rule=rule, provider="gmail",
                   reasons=("test verdict",))


def send_all(s: Scheduler, now: float) -> list[int]:
    return [i for d in s.due(now) for i in d.ids]


# -- buckets ----------------------------------------------------------------------------
def test_bucket_refills_and_caps_at_burst() -> None:
    b = TokenBucket(2.0, 5, now=0.0)
    assert b.take(10, 0.0) == 5
    assert b.available(1.0) == 2
    assert b.available(100.0) == 5
    assert b.time_until(3, 100.0) == 0.0


def test_bucket_scale_settles_old_rate_first() -> None:
    b = TokenBucket(10.0, 10, now=0.0)
    b.take(10, 0.0)
    b.scale(0.1, 0.5)  # 5 tokens earned at the full rate before the change
    assert b.available(0.5) == 1  # but a throttled bucket keeps at most burst * factor
    b.scale(0.0, 1.0)
    assert b.available(50.0) == 0
    assert b.time_until(1, 50.0) == float("inf")


def test_connection_plan_shrinks_with_factor() -> None:
    sh = Shaping(max_connections=10, max_messages_per_connection=20)
    assert connection_plan(sh).max_connections == 10
    assert connection_plan(sh, 0.25).max_connections == 2
    assert connection_plan(sh, 0.01).max_connections == 1
    assert connection_plan(sh, 0.0).max_connections == 0


# -- lanes ------------------------------------------------------------------------------
def test_split_weights_and_reserve() -> None:
    sp = LaneSplitter(params().lanes)
    got = sp.split(100, {"transactional": 1000, "lifecycle": 1000, "prospecting": 1000})
    assert sum(got.values()) == 100
    assert got["transactional"] >= 20 + 45  # reserve + 6/10 of the rest (rounding)
    assert got["prospecting"] >= 7


def test_split_gives_unused_share_away() -> None:
    sp = LaneSplitter(params().lanes)
    got = sp.split(100, {"transactional": 3, "prospecting": 1000})
    assert got == {"transactional": 3, "lifecycle": 0, "prospecting": 97}


def test_split_small_batches_do_not_starve_low_weight() -> None:
    sp = LaneSplitter(params().lanes)
    total = dict.fromkeys(("transactional", "lifecycle", "prospecting"), 0)
    for _ in range(1000):
        for lane, n in sp.split(1, {"transactional": 9, "lifecycle": 9, "prospecting": 9}).items():
            total[lane] += n
    assert total["prospecting"] >= 80
    assert total["transactional"] > total["lifecycle"] > total["prospecting"]


def test_strict_order() -> None:
    got = strict_order(5, {"prospecting": 10, "transactional": 3},
                       ("transactional", "lifecycle", "prospecting"))
    assert got["transactional"] == 3 and got["prospecting"] == 2


# -- retry ------------------------------------------------------------------------------
def test_retry_override_wins_only_when_larger() -> None:
    rng = random.Random(1)
    p = plan_retry(NO_JITTER, attempt=1, previous=0, now=0, deadline=1e9, rng=rng,
                   override_s=600)
    assert p.at == 600
    p = plan_retry(NO_JITTER, attempt=1, previous=0, now=0, deadline=1e9, rng=rng,
                   override_s=10)
    assert p.at == 60


def test_retry_stops_at_ttl_and_max_attempts() -> None:
    rng = random.Random(1)
    assert plan_retry(NO_JITTER, attempt=2, previous=60, now=0, deadline=300,
                      rng=rng).at is None
    assert plan_retry(NO_JITTER, attempt=5, previous=60, now=0, deadline=1e9,
                      rng=rng).at is None


# -- breaker ----------------------------------------------------------------------------
def test_breaker_table_rows() -> None:
    spec = BreakerSpec(min_volume=100, step_s=10, open_s=50, additive_increase=0.3)
    b = Breaker(spec, "a", "gmail")
    assert b.observe(0, attempts=94) == []
    [c] = b.observe(1, attempts=6, bounces=6)  # 6 % bounces: review
    assert (c.from_state, c.trigger, c.to_state) == ("closed", "review", "slow_start")
    assert c.factor == pytest.approx(0.1) and "bounce rate" in c.reasons[0]
    steps = b.advance(100)
    assert [x.to_state for x in steps][-1] == "closed"
    assert [round(x.factor, 2) for x in steps] == [0.4, 0.7, 1.0]
    [c] = b.observe(200, attempts=100, complaints=1)  # 1 % complaints: pause
    assert (c.from_state, c.to_state) == ("closed", "open") and c.factor == 0
    [c] = b.advance(255)
    assert (c.trigger, c.to_state) == ("open_elapsed", "slow_start")
    for change in (*steps, c):
        assert TRANSITIONS[(change.from_state, change.trigger)] == change.to_state


def test_breaker_review_in_slow_start_halves() -> None:
    b = Breaker(BreakerSpec(min_volume=10, slow_start_fraction=0.4), "a", "g")
    b.observe(0, attempts=10, deferrals=3)
    [c] = b.observe(1, attempts=10, deferrals=3)
    assert c.trigger == "review" and c.factor == pytest.approx(0.2)


# -- automation ---------------------------------------------------------------------------
RULE = ReplyRule(id="g.rate", provider="gmail", category="throttled", action="retry_slow_down",
                 scope="ip", threshold_per_hour=3, effect="throttle", throttle_factor=0.5,
                 duration_s=600)


def test_automation_threshold_then_gradual_recovery() -> None:
    a = Automation(AutomationSpec(recovery_step=0.25, recovery_step_s=100), "a", "gmail")
    assert a.match(RULE, 0) == [] and a.match(RULE, 10) == []
    [c] = a.match(RULE, 20)
    assert c.state == "throttled" and c.factor == 0.5 and c.until == 620
    assert a.advance(619) == []
    steps = a.advance(2000)
    assert [s.factor for s in steps] == [0.75, 1.0]
    assert [s.at for s in steps] == [620, 720]


def test_automation_hits_outside_hour_do_not_count() -> None:
    a = Automation(AutomationSpec(), "a", "gmail")
    a.match(RULE, 0)
    a.match(RULE, 10)
    assert a.match(RULE, 4000) == []


def test_suspension_spreads_resumes() -> None:
    a = Automation(AutomationSpec(resume_spread_s=600), "a", "gmail")
    a.match(replace(RULE, effect="suspend", threshold_per_hour=None), 0)
    rng = random.Random(3)
    times = [a.resume_at(10, rng) for _ in range(200)]
    assert all(t is not None and 600 <= t <= 1200 for t in times)
    assert len({round(t or 0) for t in times}) > 100


# -- warmup, windows, routes ---------------------------------------------------------------
PLAN = WarmupPlan(name="w", caps={"gmail": (10, 20), "*": (5,)}, jitter=0.2)


def test_day_cap_jitter_is_seeded_and_bounded() -> None:
    caps = [day_cap(PLAN, "gmail", 1, salt=s, ip="127.0.0.2") for s in range(50)]
    assert all(c is not None and 16 <= c <= 24 for c in caps)
    assert len(set(caps)) > 3
    assert day_cap(PLAN, "gmail", 1, salt=7, ip="x") == day_cap(PLAN, "gmail", 1, salt=7, ip="x")
    assert day_cap(PLAN, "gmail", 2, salt=7, ip="x") is None
    assert day_cap(PLAN, "yahoo", 0, salt=7, ip="x") is not None


def test_outlook_says_overflow_or_wait() -> None:
    o = outlook(PLAN, "yahoo", ["ip"], backlog=100, day=0, ttl_days=1, salt=1, overflow_to=None)
    assert o.verdict == "waits" and o.expiring >= 94  # "*" caps ~5 on day 0, TTL one day
    o = outlook(PLAN, "yahoo", ["ip"], backlog=100, day=0, ttl_days=2, salt=1, overflow_to=None)
    assert o.verdict == "fits" and o.day == 1  # warm on day 1
    o = outlook(PLAN, "gmail", ["ip"], backlog=1000, day=0, ttl_days=2, salt=1, overflow_to=None)
    assert o.verdict == "waits" and o.expiring > 900
    o = outlook(PLAN, "gmail", ["ip"], backlog=1000, day=0, ttl_days=2, salt=1, overflow_to="b")
    assert o.verdict == "overflows" and o.pool == "b"


def test_windows_wrap_midnight() -> None:
    assert in_window(22 * 3600, 0, (21, 6))
    assert in_window(2 * 3600, 0, (21, 6))
    assert not in_window(12 * 3600, 0, (21, 6))
    assert in_window(12 * 3600, 600, (21, 6))  # UTC+10: 22:00 local
    assert next_open(12 * 3600, 0, (21, 6)) == 21 * 3600
    assert in_window(12 * 3600, None, (21, 6))


def test_routes_filter_pools_and_ipv6() -> None:
    pools = {"shared": PoolSpec(name="shared", source_ips=("127.0.0.9",), dedicated=False),
             "ded": PoolSpec(name="ded", source_ips=("127.0.0.2", "::1"))}
    r = (RouteConstraint(tenant="t", dedicated_only=True, ipv4_only=True),)
    assert allowed_routes(pools, r, "t", "transactional") == {"ded": ("127.0.0.2",)}
    assert set(allowed_routes(pools, r, "other", "prospecting")) == {"shared", "ded"}


# -- scheduler end to end -----------------------------------------------------------------
def test_dispatch_batches_respect_bucket_and_connection_plan() -> None:
    s = Scheduler(params(), random.Random(0))
    for i in range(25):
        s.submit(i, lane="prospecting", tenant="t", sending_domain="d.example", now=0,
                 recipient_domain="gmail.com")
    first = s.due(0)
    assert sum(d.n for d in first) == 10  # burst
    assert first[0].pool == "a" and first[0].source_ip == "127.0.0.2"
    assert first[0].messages_per_connection == 50 and first[0].max_connections == 4
    assert sum(d.n for d in s.due(0.5)) == 5
    assert s.state_of(0) == "in flight" and s.state_of(24) == "queued"
    assert s.next_wakeup() is not None


def test_record_outcomes() -> None:
    s = Scheduler(params(), random.Random(0))
    for i in range(6):
        s.submit(i, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0)
    send_all(s, 0)

    def rec(i: int, code: int | None, text: str = "", **kw: object) -> list[object]:
        return list(s.record(Result(id=i, pool="a", source_ip="127.0.0.2", provider="gmail",
                                    code=code, text=text, **kw), 1))  # type: ignore[arg-type]

    assert isinstance(rec(0, 250)[-1], Delivered)
    assert isinstance(rec(1, 550, "550 5.1.1 no such user")[-1], Suppress)
    assert isinstance(rec(2, 554, "554 5.6.0 bad message")[-1], DeadLetter)
    assert isinstance(rec(3, None, data_completed=True)[-1], Ambiguous)
    retry = rec(4, 421, verdict=temp(retry_after=120))[-1]
    assert isinstance(retry, Retry) and retry.at == 121 and retry.attempt == 1
    assert any("provider asks" in r for r in retry.reasons)
    conn = rec(5, None)[-1]
    assert isinstance(conn, Retry) and conn.at == 61
    with pytest.raises(StateError):
        rec(0, 250)
    assert s.state_of(4) == "deferred"
    assert send_all(s, 100) == [5]
    assert send_all(s, 130) == [4]


def test_ttl_enforced_queued_deferred_and_at_record() -> None:
    s = Scheduler(params(), random.Random(0))
    s.submit(1, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0,
             not_before=5000)  # deferred from the start
    s.submit(2, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0,
             expires=100)
    s.submit(3, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0)
    assert set(send_all(s, 0)) == {2, 3}
    r = s.record(Result(id=3, pool="a", source_ip="127.0.0.2", provider="gmail", code=451,
                        verdict=temp(retry_after=5000)), 10)
    assert isinstance(r[-1], Expire) and r[-1].state == "deferred"  # retry would pass TTL
    ended = s.tick(3700)
    assert [(e.id, e.state) for e in ended if isinstance(e, Expire)] == [(1, "deferred")]
    assert s.state_of(2) == "in flight"  # in flight mail is the driver's until recorded
    assert len(s) == 1


def test_queued_mail_expires_even_when_never_dispatchable() -> None:
    # breaker open forever-ish: mail sits queued, and TTL still ends it (kumomta#539)
    s = Scheduler(params(breaker=BreakerSpec(open_s=1e9)), random.Random(0))
    s.feedback(Signal(kind="incident", pool="a", provider="gmail", reason="manual"), 0)
    s.submit(7, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0)
    assert s.due(10) == []
    ended = s.tick(4000)
    assert any(isinstance(e, Expire) and e.id == 7 and e.state == "queued" for e in ended)


def test_bad_input() -> None:
    s = Scheduler(params(), random.Random(0))
    with pytest.raises(InputError):
        s.submit(1, lane="bulk", tenant="t", sending_domain="d", now=0)  # type: ignore[arg-type]
    s.submit(1, lane="transactional", tenant="t", sending_domain="d", now=0)
    with pytest.raises(InputError):
        s.submit(1, lane="transactional", tenant="t", sending_domain="d", now=0)
    with pytest.raises(InputError):
        s.submit(2, lane="transactional", tenant="t", sending_domain="d", now=5, expires=5)
    with pytest.raises(StateError):
        s.record(Result(id=1, pool="a", source_ip="x", provider="generic", code=250), 1)


def test_automation_rule_throttles_path_and_suspension_spreads_retries() -> None:
    rule = ReplyRule(id="g.block", provider="gmail", category="reputation_block",
                     action="pause_pool", scope="ip", effect="suspend", duration_s=1000)
    prof = ProviderProfile(name="gmail", shaping=Shaping(messages_per_second=100, burst=100),
                           rules=(rule,))
    s = Scheduler(params(providers={"gmail": prof}), random.Random(5))
    for i in range(50):
        s.submit(i, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail", now=0)
    ids = send_all(s, 0)
    v = Verdict(temporary=True, category="reputation_block", action="pause_pool", scope="ip",
                retry_after_s=None, rule="g.block", provider="gmail")
    out = s.record(Result(id=ids[0], pool="a", source_ip="127.0.0.2", provider="gmail",
                          code=421, verdict=v), 1)
    assert any(isinstance(d, AutomationChange) and d.state == "suspended" for d in out)
    assert s.factor("a", "gmail") == 0.0
    retries = [out[-1]]
    for i in ids[1:]:
        retries += [d for d in s.record(Result(id=i, pool="a", source_ip="127.0.0.2",
                                               provider="gmail", code=421, verdict=v), 2)
                    if isinstance(d, Retry)]
    at = sorted(r.at for r in retries if isinstance(r, Retry))
    assert at[0] >= 1001 and at[-1] - at[0] > 300  # spread, not one instant
    # recovery is gradual: the factor climbs in steps after the hold
    s.tick(1010)
    assert 0 < s.factor("a", "gmail") < 0.5


def test_breaker_feedback_moves_factor_and_events() -> None:
    s = Scheduler(params(breaker=BreakerSpec(min_volume=10)), random.Random(0))
    for i in range(10):
        s.submit(i, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail", now=0)
    for i in send_all(s, 0):
        s.record(Result(id=i, pool="a", source_ip="127.0.0.2", provider="gmail", code=250), 1)
    out = s.feedback(Signal(kind="complaint", pool="a", provider="gmail"), 2)
    assert isinstance(out[0], BreakerChange) and out[0].to_state == "open"
    assert s.breaker_state("a", "gmail") == "open" and s.factor("a", "gmail") == 0


def test_warmup_caps_order_lanes_and_overflow() -> None:
    pools = {
        "new": PoolSpec(name="new", source_ips=("127.0.0.3",), warmup="w", warmup_start=0,
                        overflow_to="warm"),
        "warm": PoolSpec(name="warm", source_ips=("127.0.0.4",)),
    }
    plan = WarmupPlan(name="w", caps={"*": (20,)}, jitter=0.0)
    routes = (RouteConstraint(tenant="t", pools=("new",)),)
    s = Scheduler(params(pools=pools, warmups={"w": plan}, routes=routes,
                         providers={"gmail": ProviderProfile(
                             name="gmail", shaping=Shaping(messages_per_second=1000,
                                                           burst=1000))}),
                  random.Random(0))
    for i in range(30):
        s.submit(i, lane="prospecting", tenant="t", sending_domain="d", provider="gmail", now=0)
    for i in range(30, 40):
        s.submit(i, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0)
    first = s.due(0)
    new = [d for d in first if d.pool == "new"]
    assert sum(d.n for d in new) == 20
    assert {i for d in new if d.lane == "transactional" for i in d.ids} == set(range(30, 40))
    second = s.due(1)  # cap reached: the rest overflows to the warm pool
    assert {d.pool for d in second} == {"warm"} and sum(d.n for d in second) == 20


def test_send_window_holds_until_local_open() -> None:
    lanes = dict(params().lanes)
    lanes["lifecycle"] = LaneSpec(name="lifecycle", weight=3, send_window=(9, 17), ttl_s=86400)
    s = Scheduler(params(lanes=lanes), random.Random(0))
    s.submit(1, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail", now=0,
             utc_offset_min=0)  # 00:00 local: closed
    s.submit(2, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail", now=0,
             utc_offset_min=600)  # 10:00 local: open
    assert send_all(s, 0) == [2]
    assert s.next_wakeup() == 9 * 3600
    assert send_all(s, 9 * 3600) == [1]


def test_domain_and_tenant_buckets_limit() -> None:
    s = Scheduler(params(domain_buckets={"d": BucketSpec(rate=1, burst=3)},
                         tenant_buckets={"u": BucketSpec(rate=1, burst=2)}), random.Random(0))
    for i in range(10):
        s.submit(i, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail", now=0)
        s.submit(100 + i, lane="lifecycle", tenant="u", sending_domain="e", provider="gmail",
                 now=0)
    got = s.due(0)
    by = {(d.tenant, d.sending_domain): d.n for d in got}
    by_t = {k: sum(v for (t, _), v in by.items() if t == k) for k in ("t", "u")}
    assert by_t == {"t": 3, "u": 2}


def test_real_classifier_if_present() -> None:
    classify_mod = pytest.importorskip("engine.policy.classify")
    prof = ProviderProfile(name="gmail")
    clf = classify_mod.Classifier({"gmail": prof})
    s = Scheduler(params(), random.Random(0), classify=clf.classify)
    s.submit(1, lane="transactional", tenant="t", sending_domain="d", provider="gmail", now=0)
    send_all(s, 0)
    out = s.record(Result(id=1, pool="a", source_ip="127.0.0.2", provider="gmail", code=550,
                          text="550 5.1.1 The email account that you tried to reach does not"
                               " exist."), 1)
    assert isinstance(out[-1], Suppress)


def test_wakeup_when_a_pass_empties_the_bucket_with_mail_waiting() -> None:
    # 25 queued, burst 10 at 10/s: the first pass sends 10 and must ask to be woken when
    # the bucket refills (0.1 s), not whenever the next arrival happens to come
    s = Scheduler(params(), random.Random(0))
    for i in range(25):
        s.submit(i, lane="prospecting", tenant="t", sending_domain="d.example", now=0,
                 recipient_domain="gmail.com")
    assert sum(d.n for d in s.due(0)) == 10
    wake = s.next_wakeup()
    assert wake is not None and 0 < wake <= 0.11
    # and with nothing left waiting, no bucket wake-up is asked for
    s2 = Scheduler(params(), random.Random(0))
    for i in range(5):
        s2.submit(i, lane="prospecting", tenant="t", sending_domain="d.example", now=0,
                  recipient_domain="gmail.com")
    assert sum(d.n for d in s2.due(0)) == 5
    w2 = s2.next_wakeup()
    assert w2 is None or w2 > 1.0
