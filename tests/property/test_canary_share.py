"""A pool split between two schedulers (a canary: candidate share s, current policy 1 - s)
never sends more, in sum, than one scheduler would: path buckets, connections and warmup caps
scale with ``Scheduler.set_share``; a share of 1 changes nothing."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InputError
from engine.policy import Result, Scheduler
from engine.policy.params import PoolSpec, WarmupPlan
from tests.property.test_policy_props import FAST, params

RATE, BURST = 20.0, 10


def _feed(s: Scheduler, first: int, n: int) -> None:
    s.submit_many(range(first, first + n), lane="lifecycle", tenant="t", sending_domain="d",
                  provider="gmail", now=0.0)


def _run(scheds: list[Scheduler], horizon: float, step: float) -> list[list[int]]:
    """Dispatched counts per scheduler per step, every dispatch accepted at once."""
    sent: list[list[int]] = [[] for _ in scheds]
    now = 0.0
    while now <= horizon:
        for k, s in enumerate(scheds):
            got = 0
            for d in s.due(now):
                got += len(d.ids)
                for i in d.ids:
                    s.record(Result(id=i, pool=d.pool, source_ip=d.source_ip,
                                    provider=d.provider, code=250), now)
            sent[k].append(got)
        now += step
    return sent


@FAST
@given(st.floats(0.05, 0.95), st.sampled_from([0.05, 0.3, 1.0]))
def test_two_arms_together_stay_within_one_pool(share: float, step: float) -> None:
    p = params(rate=RATE, burst=BURST, ttl=10_000.0)
    one = replace(p, pools={"a": p.pools["a"]})  # one IP: one path bucket
    cand, ctrl = Scheduler(one, random.Random(1)), Scheduler(one, random.Random(2))
    cand.set_share(share, 0.0)
    ctrl.set_share(1.0 - share, 0.0)
    _feed(cand, 0, 5000)
    _feed(ctrl, 10_000, 5000)
    horizon = 30.0
    sent = _run([cand, ctrl], horizon, step)
    total = [a + b for a, b in zip(*sent, strict=True)]
    # over every window of steps i..j (refill since step i - 1): the rate times its length plus
    # the bursts (each arm's burst scales with its share; a scaled one is at least 1 token)
    for i in range(len(total)):
        acc = 0
        for j in range(i, len(total)):
            acc += total[j]
            assert acc <= RATE * (j - i + 1) * step + BURST + 2 + 1e-9, (i, j, acc)
    # and the split wastes little: together they send about what one scheduler sends
    alone = Scheduler(one, random.Random(3))
    _feed(alone, 0, 10_000)
    solo = sum(_run([alone], horizon, step)[0])
    assert sum(total) >= 0.85 * solo - 2, (sum(total), solo)
    # each arm got about its share
    assert abs(sum(sent[0]) - share * sum(total)) <= 0.1 * sum(total) + BURST


def test_warmup_caps_are_split_too() -> None:
    p = params(rate=1000.0, burst=1000, ttl=80_000.0)
    plan = WarmupPlan(name="w", caps={"*": (100, 200)}, jitter=0.0)
    warm = replace(p, pools={"a": PoolSpec(name="a", source_ips=("127.0.0.2",), warmup="w",
                                           warmup_start=0.0)}, warmups={"w": plan})
    cand, ctrl = Scheduler(warm, random.Random(1)), Scheduler(warm, random.Random(2))
    cand.set_share(0.25, 0.0)
    ctrl.set_share(0.75, 0.0)
    _feed(cand, 0, 500)
    _feed(ctrl, 10_000, 500)
    a, b = (sum(x) for x in _run([cand, ctrl], 3600.0, 60.0))
    assert (a, b) == (25, 75)  # day 0's cap of 100, split 25 / 75


def test_share_of_one_changes_nothing_and_bad_shares_are_refused() -> None:
    p = params()
    a, b = Scheduler(p, random.Random(7)), Scheduler(p, random.Random(7))
    b.set_share(1.0, 0.0)
    for s in (a, b):
        _feed(s, 0, 300)
    assert _run([a], 5.0, 0.5) == _run([b], 5.0, 0.5)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(InputError):
            a.set_share(bad, 0.0)
