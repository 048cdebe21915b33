"""``ProviderModel.deliver_batch`` against the per-message stage methods: exact where the
per-message path is deterministic, the same counts where it draws."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.providers import MessageFacts, ProviderModel, load_params
from sim.providers.params import Brownout

IP = "127.0.5.9"
FACTS = MessageFacts(mail_from="bounce@news.acme.example", recipients=(),
                     dkim_domain="news.acme.example", spf_domain="news.acme.example",
                     spf_pass=True, from_domain="news.acme.example", lane="lifecycle")


def _model(name: str, seed: int = 1) -> ProviderModel:
    m = ProviderModel(load_params(name), random.Random(seed), start=0.0)
    m.set_ip_age(IP, 400.0, 0.0)  # a warm IP: no young-IP daily cap
    return m


def _single(m: ProviderModel, now: float, rcpts: list[str], per_conn: int) -> list[str]:
    """The per-message path the world used to drive: one session per chunk."""
    out: list[str] = []
    for c0 in range(0, len(rcpts), per_conn):
        session, greet = m.connect(now, IP, tls=True)
        if greet.code >= 400:
            out.extend(greet.line() for _ in rcpts[c0:c0 + per_conn])
            continue
        m.helo(session, now, "sim.example")
        for i, r in enumerate(rcpts[c0:c0 + per_conn], c0):
            reply = m.mail(session, now, FACTS.mail_from)
            if reply.code < 400:
                reply = m.rcpt(session, now, r)
            if reply.code < 400:
                facts = MessageFacts(mail_from=FACTS.mail_from, recipients=(r,),
                                     message_id=f"<{i}@x>", dkim_domain=FACTS.dkim_domain,
                                     spf_domain=FACTS.spf_domain, spf_pass=True,
                                     from_domain=FACTS.from_domain, lane="lifecycle",
                                     ref=str(i))
                reply = m.data(session, now, facts).reply
                m.reset(session)
            out.append(reply.line())
        m.close(session, now)
    return out


def _batch(m: ProviderModel, now: float, rcpts: list[str], per_conn: int,
           seed: int = 1) -> list[str]:
    br = m.deliver_batch(now, IP, FACTS, rcpts, [str(i) for i in range(len(rcpts))],
                         per_connection=per_conn, rng=np.random.default_rng(seed))
    assert len(np.asarray(br.codes)) == len(rcpts)
    return [br.line(i) for i in range(len(rcpts))]


def test_named_recipients_get_exactly_the_per_message_replies() -> None:
    rcpts = [f"{w}-{i}@gmail.com" for i in range(40)
             for w in ("unknown", "inactive", "full", "engaged", "trap")]
    for name in ("gmail", "outlook", "yahoo", "generic"):
        batch = _batch(_model(name), 100.0, rcpts, 50)
        single = _single(_model(name), 100.0, rcpts, 50)
        # unknown-, inactive-, full-: decided at RCPT, deterministic within the first
        # session (later sessions of the single path may be refused at connect once the
        # unknowns sank the IP's reputation; the batch judges the connection once)
        for k in range(3):
            assert batch[k:50:5] == single[k:50:5]
        unknown = _model(name).params.replies["unknown_user"]
        assert all(x.startswith(f"{unknown.code} {unknown.enhanced}") for x in batch[::5])
    # a clean list: every reply identical
    clean = [f"engaged-{i}@gmail.com" for i in range(60)] + ["unknown-x@gmail.com"]
    for name in ("gmail", "outlook", "yahoo", "generic"):
        assert _batch(_model(name), 100.0, clean, 20) == _single(_model(name), 100.0, clean, 20)


def test_rate_window_cuts_the_batch_where_the_single_path_does() -> None:
    """A burst far over the per-IP minute limit: the same number accepted, then the same
    rate reply, in the same positions."""
    rcpts = [f"u{i}@gmail.com" for i in range(3000)]
    single = _single(_model("gmail"), 50.0, rcpts, 100)
    batch = _batch(_model("gmail"), 50.0, rcpts, 100)
    acc_s = [x[:3] == "250" for x in single]
    acc_b = [x[:3] == "250" for x in batch]
    assert acc_b == acc_s
    assert 0 < sum(acc_b) < len(rcpts)  # the limit bit (else this test tests nothing)
    assert sorted(set(batch)) == sorted(set(single))


def test_young_ip_daily_cap_matches() -> None:
    rcpts = [f"u{i}@yahoo.com" for i in range(5000)]
    a, b = _model("yahoo"), _model("yahoo")
    a.set_ip_age(IP, 0.0, 0.0)
    b.set_ip_age(IP, 0.0, 0.0)
    single, batch = _single(a, 10.0, rcpts, 50), _batch(b, 10.0, rcpts, 50)
    assert [x[:3] for x in batch] == [x[:3] for x in single]
    assert a.daily == b.daily


def test_consequence_counts_are_distributionally_equal() -> None:
    """Same state, same N: scheduled complaints / engagements / bounces agree within a
    few standard deviations, and reputation windows count the same accepted mail."""
    rcpts = [f"u{i}@generic.example" for i in range(20000)]
    got = {}
    for path in ("single", "batch"):
        m = _model("generic", seed=3)
        m.collect_fired = True
        for t in range(0, 20000, 500):
            chunk = rcpts[t:t + 500]
            now = 1000.0 + t  # spread over time so the rate windows never bind
            if path == "single":
                _single(m, now, chunk, 50)
            else:
                _batch(m, now, chunk, 50, seed=t)
        kinds = [c.kind for c in m.scheduled()]
        got[path] = {k: kinds.count(k) for k in ("complaint", "engagement", "bounce")}
        got[path]["accepted"] = m.stats.get("accepted", 0)
    assert got["batch"]["accepted"] == got["single"]["accepted"] > 15000
    for k in ("complaint", "engagement", "bounce"):
        s, b = got["single"][k], got["batch"][k]
        assert abs(s - b) <= 5 * max(s, 1) ** 0.5 + 3, (k, s, b)
    assert got["batch"]["engagement"] > 100


def test_refused_connection_refuses_the_whole_batch() -> None:
    m = _model("gmail")
    m.list_netblock("127.0.5.0/24", 10_000.0)
    lines = _batch(m, 5.0, [f"u{i}@gmail.com" for i in range(30)], 10)
    single = _single(_model("gmail"), 5.0, ["u0@gmail.com"], 10)
    assert len(set(lines)) == 1 and lines[0][0] in "45"
    assert lines[0] != single[0]
    assert m.stats["dnsbl_listed"] == 30


# ---------------------------------------------------------------- the cheap batch path

def _reference_schedule(m: ProviderModel, now: float, rcpts: list[str], seed: int,
                        lane: str) -> list[tuple[str, float, str, str]]:
    """What the batch must schedule for an all-accepted dispatch, from the documented
    rules on whole arrays: three uniforms and one normal per message (one call each),
    traps, then bounces, complaints, engagements; delays ``median * exp(sigma * z)``
    with numpy's exp over the selected normals."""
    p = m.params
    g = np.random.default_rng(seed)
    a = len(rcpts)
    u = g.random((a, 3))
    z = g.standard_normal(a)
    named = [r.split("-", 1)[0] for r in rcpts]
    traps = [j for j in range(a) if named[j] == "trap"]
    bounce = [j for j in range(a) if j not in traps
              and (named[j] == "bounce" or u[j, 0] < p.async_bounce_fraction)]
    compl = [j for j in range(a) if j not in traps and j not in bounce
             and (named[j] == "complain" or u[j, 1] < p.complaint_rate[lane])]
    eng = [j for j in range(a) if j not in traps and j not in bounce and j not in compl
           and (named[j] == "engaged" or u[j, 2] < p.engagement_rate[lane])]
    out = [("trap_hit", now, rcpts[j], str(j)) for j in traps]
    out += [("bounce", now + p.async_bounce_delay_s, rcpts[j], str(j)) for j in bounce]
    for sel, kind, median, sigma in (
            (compl, "complaint", p.complaint_delay_median_s, p.complaint_delay_sigma),
            (eng, "engagement", p.engagement_delay_median_s, p.engagement_delay_sigma)):
        if sel:
            ats = (now + median * np.exp(sigma * z[sel])).tolist()
            out += [(kind, at, rcpts[j], str(j)) for j, at in zip(sel, ats, strict=True)]
    return sorted(out, key=lambda c: c[1])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["u", "engaged", "complain", "bounce", "trap"]),
                min_size=1, max_size=60),
       st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.2, 0.9]))
def test_scheduled_consequences_repeat_the_array_rules_bit_for_bit(
        words: list[str], seed: int, rate: float) -> None:
    """One message, a few, and more than the vectorised threshold: the kinds, the times
    (to the last bit) and the order of what is scheduled follow the array formulas."""
    params = dataclasses.replace(
        load_params("generic"), engagement_rate={"lifecycle": rate},
        complaint_rate={"lifecycle": rate / 4}, async_bounce_fraction=rate / 8,
        dnsbl_trap_threshold=10**6)
    m = ProviderModel(params, random.Random(1), start=0.0)
    m.set_ip_age(IP, 400.0, 0.0)
    rcpts = [f"{w}-{i}@generic.example" for i, w in enumerate(words)]
    now = 5000.0
    br = m.deliver_batch(now, IP, FACTS, rcpts, [str(i) for i in range(len(rcpts))],
                         per_connection=100, rng=np.random.default_rng(seed))
    assert set(br.kinds) == {"accepted"}
    want = _reference_schedule(m, now, rcpts, seed, "lifecycle")
    fired_now = m.due(now)  # traps land at once
    got = [(c.kind, c.at, c.recipient, c.ref) for c in (*fired_now, *m.scheduled())]
    assert sorted(got, key=lambda c: c[1]) == want
    assert br.consequences == len(want)
    for c in m.scheduled():
        assert (c.provider, c.source_ip, c.mail_from) == ("generic", IP, FACTS.mail_from)
        assert c.report == (c.kind == "bounce" or (c.kind == "complaint" and params.fbl))


def test_count_only_kinds_are_counted_with_the_same_reputation_effect() -> None:
    """A driver that only totals engagements gets counts instead of objects; everything
    else (the other kinds, reputation) is as with full collection."""
    rcpts = [f"{w}-{i}@generic.example" for i in range(300)
             for w in ("u", "engaged", "complain", "bounce")]
    full, counted = _model("generic"), _model("generic")
    counted.count_only = frozenset({"engagement"})
    for m in (full, counted):
        for k in range(0, len(rcpts), 40):
            m.deliver_batch(100.0 + k, IP, FACTS, rcpts[k:k + 40],
                            [str(i) for i in range(k, k + 40)], per_connection=50,
                            rng=np.random.default_rng(k))
    a, b = full.due(10**7), counted.due(10**7)
    engaged = [c for c in a if c.kind == "engagement"]
    assert len(engaged) > 100
    assert [c for c in a if c.kind != "engagement"] == b
    assert counted.take_counts() == {"engagement": len(engaged)}
    assert counted.take_counts() == {}
    assert full.rep == counted.rep and not full.pending and not counted.pending


def test_one_message_results_are_read_only_and_independent() -> None:
    """Single-message results share read-only arrays: writing fails loudly instead of
    changing another result."""
    m = _model("generic")
    first = m.deliver_batch(1.0, IP, FACTS, ["u1@generic.example"], ["1"], per_connection=1,
                            rng=np.random.default_rng(1))
    refused = m.deliver_batch(2.0, IP, FACTS, ["unknown-1@generic.example"], ["2"],
                              per_connection=1, rng=np.random.default_rng(2))
    again = m.deliver_batch(3.0, IP, FACTS, ["u2@generic.example"], ["3"], per_connection=1,
                            rng=np.random.default_rng(3))
    assert np.asarray(first.codes).tolist() == [250] == np.asarray(again.codes).tolist()
    assert np.asarray(refused.codes).tolist() == [550]
    with pytest.raises(ValueError):
        first.codes[0] = 421  # type: ignore[index]
    assert np.asarray(again.codes).tolist() == [250]


def test_new_params_are_honoured_by_the_next_batch() -> None:
    """What a batch memoises per (IP, facts) is dropped when the params object changes
    (incidents add brownouts by replacing it)."""
    m = _model("generic")
    ok = _batch(m, 10.0, ["u1@generic.example"], 1)
    assert ok[0].startswith("250")
    m.params = dataclasses.replace(m.params, brownouts=(Brownout(0.0, 100.0),))
    assert _batch(m, 20.0, ["u2@generic.example"], 1) == _single(_model_like(m), 20.0,
                                                                 ["u2@generic.example"], 1)
    m.params = dataclasses.replace(m.params, brownouts=(), auth_require="spf_and_dkim")
    unsigned = dataclasses.replace(FACTS, dkim_domain=None)
    br = m.deliver_batch(200.0, IP, unsigned, ["u3@generic.example"], ["3"],
                         per_connection=1, rng=np.random.default_rng(1))
    assert br.kinds == ["unauthenticated"]
    br = m.deliver_batch(201.0, IP, FACTS, ["u4@generic.example"], ["4"],
                         per_connection=1, rng=np.random.default_rng(1))
    assert br.kinds == ["accepted"]


def _model_like(m: ProviderModel) -> ProviderModel:
    twin = ProviderModel(m.params, random.Random(1), start=0.0)
    twin.set_ip_age(IP, 400.0, 0.0)
    return twin


@settings(max_examples=200, deadline=None)
@given(st.floats(-700.0, 700.0, allow_nan=False))
def test_numpy_exp_of_one_value_has_the_bits_of_the_array_loop(x: float) -> None:
    """The batch path takes numpy's exp of a single normal for a few delays and of an array
    for many: both must give the same bits (math.exp need not)."""
    arr = np.exp(np.array([x, 0.5, -x, 1.0, x / 3, 2.0, x, 0.0, -1.0]))
    assert float(np.exp(x)) == arr[0] == arr[6]
