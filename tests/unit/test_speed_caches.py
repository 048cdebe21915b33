"""The simulation speed caches give the same answers as the uncached functions.

Covers ``WarmupCounter``'s per-day cap cache (vs ``day_cap``, across day changes and in any
call order) and the provider model's memo of mailbox kinds (vs ``mailbox_kind``).
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.policy.params import WarmupPlan
from engine.policy.warmup import DAY_S, WarmupCounter, day_cap
from sim.providers import MessageFacts, ProviderModel, load_params
from sim.providers.mailboxes import mailbox_kind, valid_address

PLAN = WarmupPlan(name="t", caps={"gmail": (50, 60, 70, 80), "*": (10, 20)}, jitter=0.3)
IPS = ("127.0.2.4", "127.0.2.5", "10.0.0.1")
PROVIDERS = ("gmail", "yahoo", "outlook")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-2 * DAY_S, 7 * DAY_S), st.sampled_from(IPS),
                          st.sampled_from(PROVIDERS), st.integers(0, 40)),
                min_size=1, max_size=40),
       st.integers(0, 2**64 - 1))
def test_cached_caps_equal_day_cap_and_counts_reset_daily(
        calls: list[tuple[float, str, str, int]], salt: int) -> None:
    start = 1000.0
    counter = WarmupCounter(PLAN, start, salt)
    sent: dict[tuple[str, str], int] = {}
    day = None
    for t, ip, prov, n in sorted(calls, key=lambda c: c[0]):
        now = start + t
        d = max(0, int((now - start) // DAY_S))
        if d != day:
            day, sent = d, {}
        cap = day_cap(PLAN, prov, d, salt=salt, ip=ip)
        assert counter.cap(ip, prov, now) == cap
        left = counter.remaining(ip, prov, now)
        assert left == (None if cap is None else max(0, cap - sent.get((ip, prov), 0)))
        counter.count(ip, prov, n)
        sent[(ip, prov)] = sent.get((ip, prov), 0) + n


def test_cap_cache_is_order_independent() -> None:
    a = WarmupCounter(PLAN, 0.0, 99)
    b = WarmupCounter(PLAN, 0.0, 99)
    keys = [(ip, p) for ip in IPS for p in PROVIDERS]
    first = {k: a.cap(*k, 3600.0) for k in keys}
    second = {k: b.cap(*k, 3600.0) for k in reversed(keys)}
    assert first == second
    assert len(set(first.values())) > 1  # jitter makes caps differ between IPs
    assert a.cap(IPS[0], "gmail", DAY_S * 1.5) == day_cap(PLAN, "gmail", 1, salt=99, ip=IPS[0])
    assert a.cap(IPS[0], "yahoo", DAY_S * 2.5) is None  # past the "*" row: warm


def test_model_memoises_mailbox_kinds_without_changing_replies() -> None:
    params = load_params("gmail")
    rcpts = [f"user{i}@gmail.com" for i in range(400)] + ["unknown-1@gmail.com",
                                                          "not an address", "trap-3@gmail.com"]
    facts = MessageFacts(mail_from="b@news.example", recipients=(), dkim_domain="news.example",
                         spf_domain="news.example", spf_pass=True, from_domain="news.example",
                         lane="lifecycle")
    m = ProviderModel(params, random.Random(1))
    m.set_ip_age("127.0.1.2", 400, 0.0)
    br = m.deliver_batch(10.0, "127.0.1.2", facts, rcpts, [str(i) for i in range(len(rcpts))],
                         per_connection=100, rng=np.random.default_rng(1))
    uf, ff = params.unknown_fraction, params.full_fraction
    for r in rcpts:
        want = mailbox_kind(r, uf, ff) if valid_address(r) else None
        assert m.kind_cache[r] == want
    kinds = [m.kind_cache[r] for r in rcpts]
    lines = [br.lines[t] for t in np.asarray(br.text_ids).tolist()]
    for k, line in zip(kinds, lines, strict=True):
        if k in (None, "unknown", "inactive", "full"):
            assert not line.startswith("250")
    assert any(line.startswith("250") for line in lines)
