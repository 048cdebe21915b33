"""Bulk-sender rules of the provider models under a fake clock (no sockets).

Gmail: above 5,000 messages a day per organizational domain SPF *and* DKIM must pass, and
the bulk status is permanent. Outlook.com: above 5,000 a day SPF, DKIM and aligned DMARC,
else ``550 5.7.515``. Sources: /work/shared/reference/providers-and-standards.md §2.1, §2.4.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.providers import MessageFacts, ProviderModel, load_params
from sim.providers.domains import aligned, org_domain
from sim.providers.model import DAY
from sim.providers.windows import BucketCounter

BIG = [10**9] * 3
OPEN = {"rates": {"ip": BIG, "netblock": BIG, "dkim_domain": BIG, "spf_domain": BIG,
                  "link_domain": BIG, "message_id": 10**9},
        "young_ip": {"assume_new": False, "days": 0},
        "connections": {"max_messages": 10**9},
        "mailboxes": {"unknown_fraction": 0.0, "full_fraction": 0.0,
                      "async_bounce_fraction": 0.0}}


def model(name: str, **extra: object) -> ProviderModel:
    return ProviderModel(load_params(name, overrides={**OPEN, **extra}), np.random.default_rng(3))


def facts(i: int, *, domain: str = "news.example.com", from_domain: str = "",
          dkim: bool = True, spf: bool = True, dmarc_record: bool = True,
          rcpt_domain: str = "gmail.com", n_rcpt: int = 1) -> MessageFacts:
    return MessageFacts(
        mail_from=f"bounce@{domain}", recipients=tuple(f"u{i}.{k}@{rcpt_domain}"
                                                       for k in range(n_rcpt)),
        message_id=f"<{i}@{domain}>", dkim_domain=domain if dkim else None,
        spf_domain=domain, spf_pass=spf, from_domain=from_domain or domain,
        dmarc_record=dmarc_record)


class Sender:
    """One open connection reused for many messages at fake times."""

    def __init__(self, m: ProviderModel, now: float = 0.0) -> None:
        self.m = m
        self.session, reply = m.connect(now, "127.0.0.2", tls=True)
        assert reply.ok

    def send(self, now: float, f: MessageFacts):
        s, m = self.session, self.m
        reply = m.mail(s, now, f.mail_from)
        assert reply.ok, reply
        for r in f.recipients:
            assert m.rcpt(s, now, r).ok
        return m.data(s, now, f).reply


def fill(sender: Sender, n: int, now: float, **kw: object) -> list[int]:
    return [sender.send(now, facts(i, **kw)).code for i in range(n)]


def test_gmail_spf_only_sender_is_fine_until_5000_then_gets_4727() -> None:
    m = model("gmail")
    s = Sender(m)
    codes = fill(s, 5000, 100.0, dkim=False)
    assert codes == [250] * 5000
    reply = s.send(101.0, facts(5001, dkim=False))
    assert (reply.code, reply.enhanced) == (421, "4.7.30")  # DKIM is now required too
    assert "bulk email senders" in reply.text and "DKIM" in reply.text
    assert s.send(102.0, facts(5002)).code == 250  # SPF + DKIM still accepted


def test_gmail_dkim_only_bulk_sender_gets_4727_naming_spf_domain_and_ip() -> None:
    m = model("gmail")
    s = Sender(m)
    fill(s, 5000, 10.0, spf=False)
    reply = s.send(11.0, facts(1, spf=False))
    assert (reply.code, reply.enhanced) == (421, "4.7.27")
    assert "SPF domain = news.example.com with ip: 127.0.0.2" in reply.text
    # an unauthenticated message is still the all-senders 5.7.26, bulk or not
    reply = s.send(12.0, facts(2, spf=False, dkim=False))
    assert (reply.code, reply.enhanced) == (550, "5.7.26")


def test_gmail_bulk_status_is_permanent_and_counted_per_organizational_domain() -> None:
    m = model("gmail")
    s = Sender(m)
    # two subdomains of one organization share the count
    fill(s, 2500, 0.0, domain="a.example.com")
    fill(s, 2500, 0.0, domain="b.example.com")
    assert s.send(1.0, facts(1, domain="c.example.com", dkim=False)).enhanced == "4.7.30"
    assert m.is_bulk("example.com", 1.0)
    # a week later with no traffic the status stays (answer/14229414: "permanent")
    assert s.send(7 * DAY, facts(2, domain="a.example.com", dkim=False)).enhanced == "4.7.30"
    # another organization is not affected
    assert s.send(7 * DAY, facts(3, domain="other.example.org", dkim=False)).code == 250


def test_outlook_bulk_needs_spf_dkim_and_aligned_dmarc_then_5_7_515() -> None:
    m = model("outlook")
    s = Sender(m)
    assert fill(s, 1000, 0.0, rcpt_domain="outlook.com", dkim=False, n_rcpt=5) == [250] * 1000
    texts = {}
    for label, kw in {"no_dkim": {"dkim": False}, "no_spf": {"spf": False},
                      "no_dmarc_record": {"dmarc_record": False}}.items():
        r = s.send(1.0, facts(9, rcpt_domain="outlook.com", **kw))
        texts[label] = r.line()
    want = ("550 5.7.515 Access denied, sending domain [news.example.com] does not meet the "
            "required authentication level.")
    assert set(texts.values()) == {want}
    assert s.send(1.0, facts(10, rcpt_domain="outlook.com")).code == 250
    # From domain not aligned with SPF or DKIM: fine while small, DMARC fails once bulk
    brand = {"rcpt_domain": "outlook.com", "from_domain": "brand.example.org", "n_rcpt": 5}
    assert set(fill(s, 1000, 2.0, **brand)) == {250}
    r = s.send(2.0, facts(11, **brand))
    assert r.enhanced == "5.7.515" and "[brand.example.org]" in r.text
    # not permanent: a rolling day later the volume has gone and the domain is small again
    assert s.send(1.0 + 1.1 * DAY, facts(12, rcpt_domain="outlook.com", dkim=False)).code == 250


def test_outlook_small_sender_may_stay_unauthenticated() -> None:
    m = model("outlook")
    s = Sender(m)
    assert fill(s, 300, 0.0, rcpt_domain="outlook.com", spf=False, dkim=False) == [250] * 300


def test_bulk_threshold_comes_from_the_model_file_and_can_be_overridden() -> None:
    m = model("gmail", bulk={"threshold": 10})
    s = Sender(m)
    assert fill(s, 10, 0.0, dkim=False) == [250] * 10
    assert s.send(0.0, facts(11, dkim=False)).code == 421
    generic = model("generic")
    assert generic.params.bulk_threshold == 0
    s = Sender(generic)
    assert set(fill(s, 50, 0.0, rcpt_domain="example.net", dkim=False, spf=False)) == {250}


@pytest.mark.parametrize(("a", "b", "same"), [
    ("news.example.com", "example.com", True),
    ("mail.shop.example.co.uk", "example.co.uk", True),
    ("example.co.uk", "other.co.uk", False),
    ("A.Example.COM.", "example.com", True),
])
def test_org_domain_and_alignment(a: str, b: str, same: bool) -> None:
    assert aligned(a, b) is same
    assert org_domain("example.co.uk") == "example.co.uk"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5 * DAY), st.integers(1, 5)), max_size=60),
       st.floats(0, 6 * DAY))
def test_bucket_counter_never_undercounts_the_window(events, now) -> None:
    events.sort()
    c = BucketCounter(DAY, 24)
    for t, n in events:
        c.add("k", t, n)
    exact = sum(n for t, n in events if now - DAY < t <= now)
    approx = sum(n for t, n in events if now - DAY - DAY / 24 < t <= now)
    got = c.count("k", now) if events and now >= events[-1][0] else None
    if got is not None:
        assert exact <= got <= approx
