"""Provider models under a plain loop with a fake clock: no sockets, no event loop."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from sim.providers import MessageFacts, ProviderModel, load_params
from sim.providers.mailboxes import mailbox_kind
from sim.providers.params import MODELS_DIR, REPLY_KINDS

PROVIDERS = sorted(p.stem for p in MODELS_DIR.glob("*.toml"))


def signed(i: int, *, domain: str = "news.example.com", rcpt: str = "") -> MessageFacts:
    return MessageFacts(
        mail_from=f"bounce@{domain}",
        recipients=(rcpt or f"user{i}@gmail.com",),
        message_id=f"<{i}@{domain}>",
        dkim_domain=domain,
        spf_domain=domain,
        spf_pass=True,
        link_domains=(f"links.{domain}",),
        lane="lifecycle",
    )


def send(model: ProviderModel, now: float, ip: str, facts: MessageFacts, *, tls: bool = True):
    """One whole SMTP transaction; returns the first non-2xx/3xx reply or the DATA reply."""
    session, reply = model.connect(now, ip, tls=tls)
    try:
        if not reply.ok:
            return reply
        model.helo(session, now, "mta.example.com")
        reply = model.mail(session, now, facts.mail_from, facts.size)
        if not reply.ok:
            return reply
        for rcpt in facts.recipients:
            reply = model.rcpt(session, now, rcpt)
            if not reply.ok:
                return reply
        return model.data(session, now, facts).reply
    finally:
        model.close(session, now)


def gmail(**overrides) -> ProviderModel:
    base = {"young_ip": {"assume_new": False},
            "mailboxes": {"unknown_fraction": 0.0, "full_fraction": 0.0}}
    params = load_params("gmail", overrides={**base, **overrides})
    return ProviderModel(params, np.random.default_rng(7))


@pytest.mark.parametrize("name", PROVIDERS)
def test_every_model_file_loads_with_every_reply(name: str) -> None:
    params = load_params(name)
    assert params.name == name
    assert set(params.replies) == set(REPLY_KINDS)
    for reply in params.replies.values():
        assert 200 <= reply.code <= 599
        assert not reply.enhanced or reply.enhanced[0] == str(reply.code)[0]


def test_model_files_cite_sources() -> None:
    for path in MODELS_DIR.glob("*.toml"):
        text = path.read_text()
        assert text.lstrip().startswith("#"), path
        assert "modelling assumption" in text.lower() or "[3p]" in text.lower(), path


def test_burst_from_one_ip_draws_4728_while_second_ip_stays_clean() -> None:
    model = gmail()
    limit = model.params.rate_limits["ip"][1]  # a new IP is in the medium tier
    replies = [send(model, 1000 + i * 0.01, "127.0.0.2", signed(i, domain=f"d{i}.example"))
               for i in range(limit + 5)]
    codes = [(r.code, r.enhanced) for r in replies]
    assert codes[:limit] == [(250, "2.0.0")] * limit
    assert codes[limit:] == [(421, "4.7.28")] * 5
    assert "IP address 127.0.0.2" in replies[-1].text and replies[-1].kind == "rate_ip"
    clean = send(model, 1001, "127.0.0.3", signed(10_000, domain="other.example"))
    assert (clean.code, clean.enhanced) == (250, "2.0.0")
    # the window slides: a minute later the first IP is accepted again
    later = send(model, 1000 + 61, "127.0.0.2", signed(20_000, domain="x.example"))
    assert later.code == 250


@pytest.mark.parametrize(
    ("scope", "word"),
    [("dkim_domain", "DKIM domain"), ("spf_domain", "SPF domain"), ("link_domain", "URL domains")],
)
def test_4728_variant_names_the_scope_that_tripped(scope: str, word: str) -> None:
    low = {"ip": [10**6] * 3, "netblock": [10**6] * 3, "dkim_domain": [10**6] * 3,
           "spf_domain": [10**6] * 3, "link_domain": [10**6] * 3}
    low[scope] = [5, 5, 5]
    model = gmail(rates=low)
    replies = []
    for i in range(7):
        f = signed(i)
        if scope != "link_domain":  # only the scope under test repeats its key
            f = MessageFacts(**{**_asdict(f), "link_domains": (f"l{i}.example",)})
        replies.append(send(model, 10 + i, f"127.0.{i}.9", f))
    assert [r.code for r in replies] == [250] * 5 + [421, 421]
    assert replies[-1].kind == f"rate_{scope}" and word in replies[-1].text


def _asdict(f: MessageFacts) -> dict:
    return {k: getattr(f, k) for k in f.__dataclass_fields__}


def test_duplicate_message_id_quota() -> None:
    model = gmail()
    facts = signed(1)
    replies = [send(model, 5 + i, f"127.0.{i}.2", facts) for i in range(model.params.message_id_limit + 1)]
    assert replies[-1].kind == "rate_message_id" and "same Message-ID" in replies[-1].text


def test_unsigned_mail_to_gmail_gets_5726_and_signed_is_accepted() -> None:
    model = gmail()
    unsigned = MessageFacts(mail_from="a@shop.example", recipients=("bob@gmail.com",),
                            message_id="<u@shop.example>", spf_domain="shop.example")
    reply = send(model, 0, "127.0.0.2", unsigned)
    assert (reply.code, reply.enhanced) == (550, "5.7.26")
    assert "[shop.example] with ip: [127.0.0.2]" in reply.text
    assert send(model, 1, "127.0.0.2", signed(1)).code == 250


def test_gmail_refuses_mail_before_starttls() -> None:
    model = gmail()
    reply = send(model, 0, "127.0.0.2", signed(1), tls=False)
    assert (reply.code, reply.enhanced) == (421, "4.7.29")


def test_mailbox_convention_and_hash_are_deterministic() -> None:
    model = gmail()
    assert send(model, 0, "127.0.0.2", signed(1, rcpt="unknown-7@gmail.com")).enhanced == "5.1.1"
    assert send(model, 0, "127.0.0.2", signed(2, rcpt="full.3@gmail.com")).enhanced == "4.2.2"
    assert send(model, 0, "127.0.0.2", signed(3, rcpt="inactive@gmail.com")).enhanced == "5.2.1"
    kinds = [mailbox_kind(f"u{i}@x.test", 0.2, 0.1) for i in range(4000)]
    assert kinds == [mailbox_kind(f"u{i}@x.test", 0.2, 0.1) for i in range(4000)]
    share_unknown = kinds.count("unknown") / len(kinds)
    share_full = kinds.count("full") / len(kinds)
    assert 0.17 < share_unknown < 0.23 and 0.08 < share_full < 0.12


def test_greylisting_then_acceptance_after_delay() -> None:
    model = ProviderModel(load_params("gmx"), random.Random(1))
    delay = model.params.greylist_delay_s
    facts = MessageFacts(mail_from="a@shop.example", recipients=("bob@gmx.de",))
    first = send(model, 0, "127.0.0.2", facts)
    assert first.kind == "greylisted" and first.temporary
    assert send(model, delay / 2, "127.0.0.2", facts).kind == "greylisted"  # too soon
    assert send(model, delay + 1, "127.0.0.2", facts).code == 250
    assert send(model, delay + 2, "127.0.0.2", facts).code == 250  # whitelisted now
    other = MessageFacts(mail_from="a@shop.example", recipients=("eve@gmx.de",))
    assert send(model, delay + 3, "127.0.0.2", other).kind == "greylisted"  # new triplet


def test_young_ip_daily_cap_and_next_day() -> None:
    params = load_params("yahoo", overrides={"young_ip": {"day0_cap": 10.0, "growth": 2.0},
                                             "rates": {"ip": [10**6] * 3, "netblock": [10**6] * 3,
                                                       "spf_domain": [10**6] * 3},
                                             "mailboxes": {"unknown_fraction": 0.0}})
    model = ProviderModel(params, random.Random(3))
    model.set_ip_age("127.0.0.2", 0, 0.0)
    model.set_ip_age("127.0.0.3", 90, 0.0)  # an established IP has no cap
    young = [send(model, i, "127.0.0.2", signed(i, rcpt=f"u{i}@yahoo.com")) for i in range(12)]
    assert [r.code for r in young[:10]] == [250] * 10
    assert young[10].kind == "daily_cap" and "[TSS04] Messages from 127.0.0.2" in young[10].text
    old = [send(model, i, "127.0.0.3", signed(100 + i, rcpt=f"v{i}@yahoo.com")) for i in range(12)]
    assert all(r.code == 250 for r in old)
    # day 1: the cap doubled to 20
    day1 = [send(model, 86400 + i, "127.0.0.2", signed(200 + i, rcpt=f"w{i}@yahoo.com"))
            for i in range(21)]
    assert [r.code for r in day1].count(250) == 20


def test_complaints_are_scheduled_later_and_lower_reputation() -> None:
    model = ProviderModel(load_params("yahoo"), np.random.default_rng(5))
    now = 100.0
    session, _ = model.connect(now, "127.0.0.2")
    model.mail(session, now, "bounce@news.example.com")
    model.rcpt(session, now, "complain-1@yahoo.com")
    outcome = model.data(session, now, signed(1, rcpt="complain-1@yahoo.com"))
    assert outcome.reply.code == 250
    (c,) = outcome.consequences
    assert c.kind == "complaint" and c.report and c.at > now
    before = model.score("ip", "127.0.0.2", now)
    assert model.due(c.at - 1e-6) == []
    assert model.due(c.at) == [c]
    after = model.score("ip", "127.0.0.2", c.at)
    assert after < before - 0.5 * model.params.rep_complaint_penalty
    assert model.score("dkim_domain", "news.example.com", c.at) < model.params.rep_initial


def test_trap_hits_list_the_netblock_until_delisting() -> None:
    model = gmail()
    threshold = model.params.dnsbl_trap_threshold
    for i in range(threshold):
        reply = send(model, i, f"127.0.0.{10 + i}", signed(i, domain=f"t{i}.example", rcpt=f"trap-{i}@gmail.com"))
        assert reply.code == 250  # traps accept
    _, refused = model.connect(threshold + 1, "127.0.0.77")  # same /24
    assert refused.kind == "dnsbl_listed" and refused.permanent
    _, other = model.connect(threshold + 1, "127.0.1.2")
    assert other.ok
    _, back = model.connect(threshold + model.params.dnsbl_listing_s + 10, "127.0.0.77")
    assert back.ok


def test_connection_cap_and_messages_per_connection() -> None:
    model = gmail(connections={"max_per_ip": 2, "max_messages": 2})
    s1, r1 = model.connect(0, "127.0.0.2")
    s2, r2 = model.connect(0, "127.0.0.2")
    _s3, r3 = model.connect(0, "127.0.0.2")
    assert r1.ok and r2.ok and r3.code == 421
    model.close(s2, 0)
    assert model.connect(0, "127.0.0.2")[1].ok
    s1.tls = True
    for i in range(2):
        assert model.mail(s1, 0, "a@news.example.com").ok
        model.rcpt(s1, 0, f"u{i}@gmail.com")
        assert model.data(s1, 0, signed(i)).reply.ok
    assert model.mail(s1, 0, "a@news.example.com").kind == "too_many_messages"


def test_brownout_window() -> None:
    model = ProviderModel(
        load_params("generic", overrides={"brownouts": [{"start_s": 60, "duration_s": 30}]}),
        random.Random(1), start=1000.0,
    )
    assert model.connect(1059, "127.0.0.2")[1].ok
    assert model.connect(1060, "127.0.0.2")[1].kind == "brownout"
    assert model.connect(1090, "127.0.0.2")[1].ok


def run_traffic(seed: int) -> list[tuple]:
    model = ProviderModel(load_params("generic"), np.random.default_rng(seed))
    log = []
    for i in range(400):
        facts = MessageFacts(mail_from="a@news.example", recipients=(f"u{i}@example.net",),
                             message_id=f"<{i}@n>", lane="prospecting")
        log.append(send(model, i * 0.5, "127.0.0.2", facts).line())
    log.extend((c.kind, c.recipient, round(c.at, 6)) for c in model.due(10**9))
    return log


def test_seeded_runs_repeat_exactly_and_seeds_differ() -> None:
    a, b, c = run_traffic(11), run_traffic(11), run_traffic(12)
    assert a == b
    assert a != c


def test_bad_model_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "generic.toml").write_text((MODELS_DIR / "generic.toml").read_text())
    bad = tmp_path / "bad.toml"
    bad.write_text('[rates]\nip = [1, 2]\n')
    with pytest.raises(ConfigError, match=r"rates\.ip"):
        load_params(bad)
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_params(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.toml")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 5), st.integers(2, 4), st.integers(0, 30)),
             min_size=1, max_size=120),
)
def test_property_accepted_per_ip_never_exceeds_its_window_limit(steps) -> None:
    model = gmail()
    now = 0.0
    accepted: list[tuple[float, str]] = []
    for dt, host, n in steps:
        now += dt
        ip = f"127.0.0.{host}"
        reply = send(model, now, ip, signed(n, domain=f"d{n}.example"))
        if reply.code == 250:
            accepted.append((now, ip))
    window = model.params.rate_window_s
    top = max(model.params.rate_limits["ip"])
    for t, ip in accepted:
        in_window = sum(1 for u, j in accepted if j == ip and t - window < u <= t)
        assert in_window <= top


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["complaint", "engagement", "bounce", "trap_hit"]), max_size=50))
def test_property_reputation_stays_in_unit_interval(kinds) -> None:
    model = gmail()
    for i, kind in enumerate(kinds):
        delta = {"complaint": -0.3, "engagement": 0.3, "bounce": -0.1, "trap_hit": -0.5}[kind]
        model.bump("ip", "127.0.0.2", float(i), delta)
        assert 0.0 <= model.score("ip", "127.0.0.2", float(i)) <= 1.0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 3 * 86400.0),
                          st.integers(1, 9), st.booleans()), max_size=80))
def test_bucket_counter_running_totals_match_its_slots(ops) -> None:
    """``BucketCounter`` keeps a running total per key; it must equal the sum of the key's
    live slots after any mix of adds and counts (times only move forward)."""
    from sim.providers.windows import BucketCounter, add_count

    c, twin = BucketCounter(86400.0, 24), BucketCounter(86400.0, 24)
    now = 0.0
    for key, dt, n, add in ops:
        now += dt / 40
        if add:
            c.add(key, now, n)
            assert add_count(twin, key, now, n) == c.count(key, now)
        got = c.count(key, now)
        assert twin.count(key, now) == got
        slot = int(now // c.width)
        live = [k for s, k in c.counts.get(key, ()) if s >= slot - c.buckets]
        assert got == sum(live)
        assert set(c.totals) == set(c.counts)


def test_mailbox_kind_uses_the_same_unit_as_address_unit() -> None:
    from sim.providers.mailboxes import _unit, address_unit

    for i in range(200):
        a = f"User{i}@Example.test"
        assert _unit(a) == address_unit(a) == address_unit(a.lower())


def test_tap_hears_every_connect_and_data_answer_without_changing_them() -> None:
    """The recorder hook (``ProviderModel.tap``, used by ``sim.parity.tap_model``) sees each
    connect and end-of-DATA answer with its session, and the answers stay the ones an
    untapped model gives."""
    heard: list[tuple[str, float, str, int, int]] = []
    tapped, plain = gmail(), gmail()
    tapped.tap = lambda *args: heard.append(args)
    limit = tapped.params.rate_limits["ip"][1]
    got = [send(tapped, 1000 + i * 0.01, "127.0.0.2", signed(i, domain=f"d{i}.example"))
           for i in range(limit + 2)]
    want = [send(plain, 1000 + i * 0.01, "127.0.0.2", signed(i, domain=f"d{i}.example"))
            for i in range(limit + 2)]
    assert [(r.code, r.text) for r in got] == [(r.code, r.text) for r in want]
    stages = [h[0] for h in heard]
    assert stages == ["connect", "data"] * (limit + 2)
    data = [h for h in heard if h[0] == "data"]
    assert [h[4] for h in data] == [r.code for r in got]  # the 421s included
    assert [h[3] for h in data] == list(range(1, limit + 3))  # one session each
    assert all(h[2] == "127.0.0.2" for h in heard)
