"""``ProviderModel.deliver_batch`` against the per-message stage methods: exact where the
per-message path is deterministic, the same counts where it draws."""

from __future__ import annotations

import random

import numpy as np

from sim.providers import MessageFacts, ProviderModel, load_params

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
        kinds = [c.kind for _, _, c, _ in m.pending]
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
