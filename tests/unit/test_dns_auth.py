"""SPF, DMARC and DKIM checks through the loopback DNS server (dnspython resolver, dkimpy).

SPF: a table of RFC 7208 cases served from a real zone (include chains, redirect, the
10-lookup and 2-void-lookup limits, softfail, macros, mx/a with CIDR, IPv4-mapped clients,
temperror from a silent server), the §7.4 macro examples, and property tests of the
evaluator. DMARC: org-domain fallback (RFC 7489 §6.6.3) and alignment. DKIM: messages
signed by the engine's signer with the fixture RSA-2048 and Ed25519 keys verify with dkimpy
against the zone generated from fixtures/lab.toml, and fail once the record changes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.dkim.sign import DkimSigner, load_signer
from engine.errors import InputError
from sim.dns.auth import DnsAuth, DnsUnavailable, aligned, dmarc_alignment, parse_dmarc
from sim.dns.authority import zone_from_text
from sim.dns.server import DnsServer
from sim.dns.spf import _Eval, check_host, parse_ip
from sim.dns.zone import lab_zone

ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"

_chain = "\n".join(f'c{i} TXT "v=spf1 include:c{i + 1}.spf.test -all"' for i in range(11))
SPF_ZONE = f"""$ORIGIN spf.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 127.0.0.1
plain TXT "v=spf1 ip4:127.0.0.2/31 -all"
soft TXT "v=spf1 ip4:10.0.0.1 ~all"
query TXT "v=spf1 ?all"
default TXT "v=spf1 ip4:10.0.0.1"
inc TXT "v=spf1 include:mid.spf.test -all"
mid TXT "v=spf1 include:leaf.spf.test ~all"
leaf TXT "v=spf1 ip4:127.0.0.9 ip6:2001:db8::/32 -all"
redir TXT "v=spf1 redirect=plain.spf.test"
redir-none TXT "v=spf1 redirect=nothing.spf.test"
inc-none TXT "v=spf1 include:nothing.spf.test -all"
c TXT "v=spf1 include:c0.spf.test -all"
{_chain}
c11 TXT "v=spf1 +all"
near TXT "v=spf1 include:c2.spf.test -all"
void3 TXT "v=spf1 a:nx1.spf.test a:nx2.spf.test a:nx3.spf.test ip4:127.0.0.2 -all"
void2 TXT "v=spf1 a:nx1.spf.test a:nx2.spf.test ip4:127.0.0.2 -all"
amech TXT "v=spf1 a/24 -all"
amech A 127.0.1.1
mxmech TXT "v=spf1 mx -all"
mxmech MX 10 mail.mxmech
mail.mxmech A 127.0.2.7
macro TXT "v=spf1 exists:%{{i}}._ip.%{{d}} -all"
127.0.0.2._ip.macro A 127.0.0.2
users TXT "v=spf1 exists:%{{l}}.u.%{{d}} ?all"
alice.u.users A 127.0.0.2
two TXT "v=spf1 ip4:127.0.0.2 -all"
two TXT "v=spf1 -all"
typo TXT "v=spf1 ip4:127.0.0.2 foo:bar -all"
badmacro TXT "v=spf1 exists:%{{x}}.spf.test -all"
ptr TXT "v=spf1 ptr -all"
out TXT "v=spf1 include:gmail.com -all"
notspf TXT "hello world"
"""

DMARC_ZONE = """$ORIGIN shop.test.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 127.0.0.1
_dmarc TXT "v=DMARC1; p=quarantine; rua=mailto:agg@shop.test"
_dmarc.strict TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
_dmarc.dup TXT "v=DMARC1; p=reject"
_dmarc.dup TXT "v=DMARC1; p=none"
_dmarc.nop TXT "v=DMARC1; p=bogus"
news A 127.0.0.1
"""


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    zones = [zone_from_text(SPF_ZONE), zone_from_text(DMARC_ZONE),
             zone_from_text(lab_zone(load_config(LAB)))]
    srv = DnsServer(zones)
    with srv.running():
        yield srv


@pytest.fixture
def auth(server: DnsServer) -> DnsAuth:
    return DnsAuth(server.address, timeout=2)


SPF_CASES = [
    ("a@plain.spf.test", "127.0.0.2", "pass"),
    ("a@plain.spf.test", "127.0.0.3", "pass"),  # /31
    ("a@plain.spf.test", "127.0.0.4", "fail"),
    ("a@soft.spf.test", "127.0.0.4", "softfail"),
    ("a@query.spf.test", "127.0.0.4", "neutral"),
    ("a@default.spf.test", "127.0.0.4", "neutral"),  # nothing matched, no all
    ("a@inc.spf.test", "127.0.0.9", "pass"),  # include -> include -> ip4
    ("a@inc.spf.test", "2001:db8::7", "pass"),  # ... -> ip6
    ("a@inc.spf.test", "127.0.0.8", "fail"),  # leaf fails: no match; then inc's -all
    ("a@redir.spf.test", "127.0.0.2", "pass"),
    ("a@redir.spf.test", "127.0.0.9", "fail"),
    ("a@redir-none.spf.test", "127.0.0.2", "permerror"),  # §6.1
    ("a@inc-none.spf.test", "127.0.0.2", "permerror"),  # §5.2
    ("a@c.spf.test", "127.0.0.2", "permerror"),  # 12 includes > 10 (§4.6.4)
    ("a@near.spf.test", "127.0.0.2", "pass"),  # 10 includes: within the limit
    ("a@void3.spf.test", "127.0.0.2", "permerror"),  # 3 void lookups > 2
    ("a@void2.spf.test", "127.0.0.2", "pass"),
    ("a@amech.spf.test", "127.0.1.200", "pass"),  # a/24
    ("a@amech.spf.test", "127.0.2.1", "fail"),
    ("a@mxmech.spf.test", "127.0.2.7", "pass"),
    ("a@mxmech.spf.test", "127.0.2.8", "fail"),
    ("a@macro.spf.test", "127.0.0.2", "pass"),  # exists:%{i}._ip.%{d}
    ("a@macro.spf.test", "127.0.0.3", "fail"),
    ("alice@users.spf.test", "127.0.0.9", "pass"),  # exists:%{l}.u.%{d}
    ("bob@users.spf.test", "127.0.0.9", "neutral"),
    ("a@two.spf.test", "127.0.0.2", "permerror"),  # two records (§4.5)
    ("a@typo.spf.test", "127.0.0.2", "permerror"),  # syntax error anywhere (§4.6)
    ("a@badmacro.spf.test", "127.0.0.2", "permerror"),
    ("a@ptr.spf.test", "127.0.0.2", "fail"),  # ptr never matches here
    ("a@notspf.spf.test", "127.0.0.2", "none"),
    ("a@nothing.spf.test", "127.0.0.2", "none"),  # NXDOMAIN
    ("a@spf.test", "127.0.0.2", "none"),  # exists, no TXT
    ("a@plain.spf.test", "::ffff:127.0.0.2", "pass"),  # IPv4-mapped: treated as IPv4
    ("a@out.spf.test", "127.0.0.2", "temperror"),  # include outside: server REFUSED
    ("b@bounce.mail.acme.example", "127.0.0.8", "pass"),  # the lab zone
    ("b@bounce.mail.acme.example", "127.0.0.9", "fail"),
    ("b@mail.acme.example", "127.0.0.4", "pass"),
]


@pytest.mark.parametrize(("mail_from", "ip", "expected"), SPF_CASES)
def test_spf_table(auth: DnsAuth, mail_from: str, ip: str, expected: str) -> None:
    out = auth.spf_check(mail_from, "helo.spf.test", ip)
    assert out.result == expected, out.reason


def test_spf_reasons_and_counts(auth: DnsAuth) -> None:
    limit = auth.spf_check("a@c.spf.test", "", "127.0.0.2")
    assert "more than 10" in limit.reason and limit.lookups == 11
    void = auth.spf_check("a@void3.spf.test", "", "127.0.0.2")
    assert "void" in void.reason and void.void_lookups == 3
    assert auth.spf_check("a@badmacro.spf.test", "", "1.2.3.4").reason.count("macro") >= 1


def test_spf_null_sender_uses_helo(auth: DnsAuth) -> None:
    assert auth.spf("", "plain.spf.test", "127.0.0.2") == "pass"
    assert auth.spf("<>", "plain.spf.test", "127.0.0.7") == "fail"


def test_spf_bad_ip_is_input_error(auth: DnsAuth) -> None:
    with pytest.raises(InputError, match="not an IP"):
        auth.spf("a@plain.spf.test", "", "300.1.1.1")


def test_ttl_cache_avoids_repeat_queries(server: DnsServer) -> None:
    now = [0.0]
    a = DnsAuth(server.address, clock=lambda: now[0])
    a.spf("a@plain.spf.test", "", "127.0.0.2")
    first = a.queries
    a.spf("a@plain.spf.test", "", "127.0.0.2")
    assert a.queries == first
    assert a.lookup("nothing.spf.test", "TXT") is None  # negative: SOA TTL 60
    n = a.queries
    now[0] = 59.0
    assert a.lookup("nothing.spf.test", "TXT") is None and a.queries == n
    now[0] = 301.0  # past the TXT's TTL of 300 and the negative 60
    a.spf("a@plain.spf.test", "", "127.0.0.2")
    a.lookup("nothing.spf.test", "TXT")
    assert a.queries == n + 2


def test_silent_server_gives_temperror_and_dnsunavailable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # bound, never answers
        sink.bind(("127.0.0.1", 0))
        a = DnsAuth(f"127.0.0.1:{sink.getsockname()[1]}", timeout=0.3)
        assert a.spf("a@plain.spf.test", "", "127.0.0.2") == "temperror"
        assert a.dkim_dnsfunc(b"s._domainkey.plain.spf.test.") is None
        with pytest.raises(DnsUnavailable):
            a.dmarc("shop.test")


# --- macros: the RFC 7208 §7.4 examples ------------------------------------------------

MACRO_EXAMPLES = [
    ("%{s}", "strong-bad@email.example.com"), ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"), ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"), ("%{d2}", "example.com"), ("%{d1}", "com"),
    ("%{dr}", "com.example.email"), ("%{d2r}", "example.email"), ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"), ("%{lr}", "strong-bad"), ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
]


@pytest.mark.parametrize(("spec", "expected"), MACRO_EXAMPLES)
def test_rfc7208_macro_examples(spec: str, expected: str) -> None:
    ev = _Eval(lambda n, t: [], parse_ip("192.0.2.3"), "strong-bad@email.example.com",
               "mx.example.org")
    assert ev.expand(spec, "email.example.com") == expected


def test_rfc7208_ipv6_macro_example() -> None:
    ev = _Eval(lambda n, t: [], parse_ip("2001:db8::cb01"), "strong-bad@email.example.com", "")
    assert ev.expand("%{ir}.%{v}._spf.%{d2}", "email.example.com") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    assert ev.expand("%{h}-%%-%_-%-", "x.test") == "-%- -%20"


# --- the evaluator's properties (no sockets) -------------------------------------------

@settings(max_examples=200, deadline=None)
@given(net=st.ip_addresses(v=4), prefix=st.integers(0, 32), ip=st.ip_addresses(v=4),
       qual=st.sampled_from(["", "+", "-", "~", "?"]), tail=st.sampled_from(["-all", "~all"]))
def test_ip4_mechanism_matches_exactly_the_network(net: ipaddress.IPv4Address, prefix: int,
                                                   ip: ipaddress.IPv4Address, qual: str,
                                                   tail: str) -> None:
    record = f"v=spf1 {qual}ip4:{net}/{prefix} {tail}"
    out = check_host(lambda n, t: [record] if t == "TXT" else [], str(ip), "x@d.test")
    inside = ip in ipaddress.ip_network(f"{net}/{prefix}", strict=False)
    expected = {"": "pass", "+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qual] \
        if inside else ("fail" if tail == "-all" else "softfail")
    assert out.result == expected


TERMS = st.sampled_from(["all", "-all", "~all", "?all", "a", "mx", "ptr", "include:x.test",
                         "exists:%{i}.x.test", "ip4:1.2.3.4", "ip6:::1", "redirect=x.test",
                         "a:%{l}.x.test/24", "mx//64", "exp=e.test", "foo=bar", "bad", "ip4:",
                         "%{", "include:%{z}.t", "a:/33", "v=spf1"])


@settings(max_examples=300, deadline=None)
@given(terms=st.lists(TERMS, max_size=8), ip=st.ip_addresses())
def test_any_record_gives_a_result_and_respects_the_lookup_limit(terms: list[str],
                                                                 ip: object) -> None:
    record = " ".join(["v=spf1", *terms])
    calls: list[tuple[str, str]] = []

    def lookup(name: str, rtype: str) -> list[str] | None:
        calls.append((name, rtype))
        if rtype == "TXT":
            return [record]  # every domain (x.test too) publishes the same record
        return ["1.2.3.4"] if rtype == "A" else ["::1"] if rtype == "AAAA" else ["m.test"]

    out = check_host(lookup, str(ip), "l@d.test", "h.test")
    assert out.result in ("pass", "fail", "softfail", "neutral", "none", "permerror",
                          "temperror")
    assert out.lookups <= 11  # the 11th term is the one that stops evaluation
    assert out.result != "temperror"  # this lookup never fails


# --- DMARC -----------------------------------------------------------------------------

def test_dmarc_own_record_and_org_domain_fallback(auth: DnsAuth) -> None:
    own = auth.dmarc("strict.shop.test")
    assert own is not None and own["p"] == "reject" and own["adkim"] == "s"
    assert own["domain"] == "strict.shop.test"
    fallback = auth.dmarc("news.shop.test")  # no _dmarc.news: the org domain's record
    assert fallback is not None and fallback["domain"] == "shop.test"
    assert fallback["p"] == "quarantine" and fallback["aspf"] == "r" and fallback["pct"] == "100"
    assert auth.dmarc("dup.shop.test") is None  # two records: DMARC does not apply
    lab = auth.dmarc("mail.acme.example")
    assert lab is not None and lab["p"] == "reject"
    assert lab["rua"] == "mailto:dmarc@bounce.mail.acme.example"
    assert auth.dmarc("plain.spf.test") is None


def test_dmarc_invalid_policy() -> None:
    assert parse_dmarc("v=DMARC1; p=bogus") is None
    assert parse_dmarc("v=DMARC1; p=bogus; rua=mailto:a@b.test")["p"] == "none"  # type: ignore[index]
    assert parse_dmarc("p=reject; v=DMARC1") is None  # v= must come first
    assert parse_dmarc("v=DMARC1;p=REJECT;adkim=x")["adkim"] == "r"  # type: ignore[index]


@pytest.mark.parametrize(("a", "b", "mode", "expected"), [
    ("mail.acme.example", "bounce.mail.acme.example", "r", True),
    ("mail.acme.example", "bounce.mail.acme.example", "s", False),
    ("mail.acme.example", "MAIL.acme.example.", "s", True),
    ("mail.acme.example", "globex.example", "r", False),
    ("news.shop.co.uk", "shop.co.uk", "r", True),  # PSL: co.uk is a public suffix
    ("a.co.uk", "b.co.uk", "r", False),
    ("mail.acme.example", None, "r", False),
])
def test_alignment(a: str, b: str | None, mode: str, expected: bool) -> None:
    assert aligned(a, b, mode) is expected


def test_alignment_uses_record_modes(auth: DnsAuth) -> None:
    strict = auth.dmarc("strict.shop.test")
    relaxed = auth.dmarc("news.shop.test")
    kw = {"spf_domain": "bounce.strict.shop.test", "spf_pass": True, "dkim_domain": None}
    assert dmarc_alignment("strict.shop.test", strict, **kw)["pass"] is False  # type: ignore[arg-type]
    assert dmarc_alignment("news.shop.test", relaxed, **kw)["pass"] is True  # type: ignore[arg-type]
    with pytest.raises(InputError):
        aligned("a.test", "a.test", "x")


# --- DKIM with dkimpy through the generated lab zone -----------------------------------

MESSAGE = (b"From: Acme <hello@mail.acme.example>\r\nTo: <u@gmail.com>\r\n"
           b"Subject: Your code\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
           b"Message-ID: <1@mail.acme.example>\r\n\r\nYour code is 123456.\r\n")


def _signers() -> list[DkimSigner]:
    cfg = load_config(LAB)
    dom = cfg.domains["mail.acme.example"]
    return [load_signer("mail.acme.example", dk.selector, LAB.parent / dk.key_file,
                        dk.algorithm) for dk in dom.dkim]


def test_lab_zone_has_both_key_kinds() -> None:
    text = lab_zone(load_config(LAB))
    assert "lab2026r._domainkey.mail.acme.example. 3600 IN TXT ( \"v=DKIM1; k=rsa; p=" in text
    assert "lab2026e._domainkey.mail.acme.example. 3600 IN TXT \"v=DKIM1; k=ed25519; p=" in text
    assert text == lab_zone(load_config(LAB))  # deterministic


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_dkim_verifies_through_dns_and_fails_after_the_record_changes(
        auth: DnsAuth, algorithm: str) -> None:
    signer = next(s for s in _signers() if s.algorithm == algorithm)
    signed = signer.header(MESSAGE) + MESSAGE
    assert dkim.verify(signed, dnsfunc=auth.dkim_dnsfunc)
    name = f"{signer.selector}._domainkey.mail.acme.example."
    assert auth.dkim_dnsfunc(name.encode()).startswith(b"v=DKIM1; k=")  # type: ignore[union-attr]
    # Same zone, but the selector now publishes a different key: verification must fail.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048) \
        if algorithm == "rsa-sha256" else ed25519.Ed25519PrivateKey.generate()
    from engine.dkim.sign import public_key_record
    from sim.dns.zone import txt_rdata

    new_record = public_key_record(DkimSigner("mail.acme.example", signer.selector,
                                              signer.algorithm, other))
    lines = [f"{name} 3600 IN TXT {txt_rdata(new_record)}" if line.startswith(name) else line
             for line in lab_zone(load_config(LAB)).splitlines()]
    changed = DnsServer([zone_from_text("\n".join(lines) + "\n")])
    with changed.running():
        fresh = DnsAuth(changed.address)
        assert fresh.dkim_dnsfunc(name.encode()) == new_record.encode()
        assert not dkim.verify(signed, dnsfunc=fresh.dkim_dnsfunc)
    # a tampered body fails against the original record too
    assert not dkim.verify(signed.replace(b"123456", b"654321"), dnsfunc=auth.dkim_dnsfunc)
