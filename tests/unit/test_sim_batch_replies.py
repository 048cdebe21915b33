"""The list-based ``deliver_batch`` (small dispatches) against the per-message stage path:
the same reply for every message, whatever the mix of recipients, the messages per
connection and the provider (greylisting included), and the same per-kind reply counts."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.providers import MessageFacts, ProviderModel, load_params

IP = "127.0.5.9"
FACTS = MessageFacts(mail_from="bounce@news.acme.example", recipients=(),
                     dkim_domain="news.acme.example", spf_domain="news.acme.example",
                     spf_pass=True, from_domain="news.acme.example", lane="lifecycle")
# no trap addresses: a trap hit lands at once, so the stage path judges the next message
# of the same instant on the lowered reputation and the batch does not (by design)
KINDS = ("u", "unknown-u", "inactive-u", "full-u", "engaged-u", "complain-u", "bad address ")
ACCEPTED = ("u", "engaged-u", "complain-u")


def _model(name: str, per_conn_limit: int) -> ProviderModel:
    params = dataclasses.replace(load_params(name), max_messages_per_connection=per_conn_limit)
    m = ProviderModel(params, random.Random(1), start=0.0)
    m.set_ip_age(IP, 400.0, 0.0)
    return m


def _single(m: ProviderModel, now: float, rcpts: list[str], per_conn: int) -> list[str]:
    out: list[str] = []
    for c0 in range(0, len(rcpts), per_conn):
        session, greet = m.connect(now, IP, tls=True)
        if greet.code >= 400:
            out.extend(greet.line() for _ in rcpts[c0:c0 + per_conn])
            continue
        for i, r in enumerate(rcpts[c0:c0 + per_conn], c0):
            reply = m.mail(session, now, FACTS.mail_from)
            if reply.code < 400:
                reply = m.rcpt(session, now, r)
            if reply.code < 400:
                facts = dataclasses.replace(FACTS, recipients=(r,), message_id=f"<{i}@x>",
                                            ref=str(i))
                reply = m.data(session, now, facts).reply
                m.reset(session)
            out.append(reply.line())
        m.close(session, now)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["gmail", "yahoo", "generic"]),
       st.lists(st.sampled_from(KINDS), min_size=1, max_size=40),
       st.integers(1, 12), st.integers(1, 6), st.integers(0, 3))
def test_batch_replies_equal_the_stage_path(provider: str, kinds: list[str], per_conn: int,
                                            limit: int, repeat: int) -> None:
    if per_conn > limit:
        # the batch judges RCPT before the per-connection MAIL limit (a documented
        # approximation): compare the limit on mail that passes RCPT
        kinds = [k for k in kinds if k in ACCEPTED] or ["u"]
    rcpts = [f"{k}{i}@{provider}.example" for i, k in enumerate(kinds)]
    one, many = _model(provider, limit), _model(provider, limit)
    now = 1000.0
    for r in range(repeat + 1):  # later rounds meet the greylist's and windows' memory
        t = now + r * 400.0
        want = _single(one, t, rcpts, per_conn)
        br = many.deliver_batch(t, IP, FACTS, rcpts, [str(i) for i in range(len(rcpts))],
                                per_connection=per_conn, rng=np.random.default_rng(r))
        got = [br.line(i) for i in range(len(rcpts))]
        assert got == want
        codes = np.asarray(br.codes).tolist()
        assert codes == [int(line[:3]) for line in want]
    # the same count of every reply kind (the stage path also counts banners and 250 OKs)
    assert many.stats == {k: v for k, v in one.stats.items() if k not in ("banner", "ok")}


def test_empty_and_all_refused_batches_have_no_consequences() -> None:
    m = _model("gmail", 100)
    br = m.deliver_batch(5.0, IP, FACTS, [], [], per_connection=10,
                         rng=np.random.default_rng(0))
    assert np.asarray(br.codes).tolist() == [] and br.consequences == 0
    m.list_netblock("127.0.5.0/24", 1e9)
    rcpts = [f"engaged-u{i}@gmail.com" for i in range(7)]
    br = m.deliver_batch(6.0, IP, FACTS, rcpts, [str(i) for i in range(7)], per_connection=3,
                         rng=np.random.default_rng(0))
    assert len(set(np.asarray(br.text_ids).tolist())) == 1 and br.consequences == 0
    assert all(c >= 500 or 400 <= c < 500 for c in np.asarray(br.codes).tolist())
    assert m.stats["dnsbl_listed"] == 7 and not m.pending
