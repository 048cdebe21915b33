"""The authoritative DNS server through real loopback sockets (dnspython as the client).

Covers answers with AA, NXDOMAIN and NODATA with the SOA in authority (RFC 2308 TTL),
empty non-terminals, REFUSED outside our zones, FORMERR for garbage, TC over UDP then a TCP
retry by dnspython's resolver, EDNS payload sizes, CNAME chasing inside and across zones,
several zones (most specific wins), the engine's MX resolver against it, bind checks, and a
property test of the answer logic over arbitrary names and bytes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.delivery.mx import Destination, NullMX
from engine.delivery.mx import Resolver as MxResolver
from engine.errors import ConfigError, InputError
from sim.dns.authority import Authority, load_zone, zone_from_text
from sim.dns.server import DnsServer

ZONE_FILE = Path(__file__).parents[2] / "fixtures" / "dns" / "lab.example.zone"
SUB_ZONE = """$ORIGIN sub.lab.example.
$TTL 120
@ IN SOA ns1.lab.example. hostmaster.lab.example. ( 7 3600 600 86400 30 )
@ IN NS ns1.lab.example.
host IN A 127.0.0.21
back IN CNAME plain.lab.example.
"""


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    srv = DnsServer([load_zone(ZONE_FILE), zone_from_text(SUB_ZONE)])
    with srv.running():
        yield srv


def ask(srv: DnsServer, name: str, rtype: str, *, tcp: bool = False,
        payload: int | None = None) -> dns.message.Message:
    q = (dns.message.make_query(name, rtype) if payload is None
         else dns.message.make_query(name, rtype, use_edns=0, payload=payload))
    q.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(q, srv.host, port=srv.port, timeout=3)
    return dns.query.udp(q, srv.host, port=srv.port, timeout=3)


def resolver(srv: DnsServer) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [srv.host]
    res.port = srv.port
    res.lifetime = 3
    return res


def test_answer_is_authoritative_with_records(server: DnsServer) -> None:
    r = ask(server, "multi.lab.example", "MX")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA and r.flags & dns.flags.QR
    assert sorted(str(rd) for rd in r.answer[0]) == ["10 mx1.multi.lab.example.",
                                                      "20 mx2.multi.lab.example."]
    answer = resolver(server).resolve("mx1.multi.lab.example", "A")
    assert [str(x) for x in answer] == ["127.0.0.11"] and answer.rrset.ttl == 300


def test_nxdomain_carries_soa_with_negative_ttl(server: DnsServer) -> None:
    r = ask(server, "nowhere.lab.example", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert not r.answer
    soa = r.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == "lab.example."
    assert soa.ttl == 60  # min(SOA TTL 300, MINIMUM 60), RFC 2308 §3
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver(server).resolve("nowhere.lab.example", "A")


def test_nodata_for_existing_name_and_empty_non_terminal(server: DnsServer) -> None:
    for name in ("plain.lab.example", "deep.lab.example"):  # the second has only a child
        r = ask(server, name, "MX")
        assert r.rcode() == dns.rcode.NOERROR, name
        assert not r.answer and r.authority[0].rdtype == dns.rdatatype.SOA
    with pytest.raises(dns.resolver.NoAnswer):
        resolver(server).resolve("deep.lab.example", "A")
    assert ask(server, "x.a.deep.lab.example", "A").rcode() == dns.rcode.NXDOMAIN


def test_refused_outside_every_zone(server: DnsServer) -> None:
    for name in ("gmail.com", "example", "lab.example.com"):
        r = ask(server, name, "A")
        assert r.rcode() == dns.rcode.REFUSED, name
        assert not r.flags & dns.flags.AA
    with pytest.raises(dns.resolver.NoNameservers):
        resolver(server).resolve("gmail.com", "MX")


def test_formerr_for_garbage_and_silence_for_less_than_a_header(server: DnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        garbage = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
        s.sendto(garbage, (server.host, server.port))
        reply, _ = s.recvfrom(512)
        qid, flags = struct.unpack("!HH", reply[:4])
        assert qid == 0xBEEF and flags & 0x8000 and flags & 0xF == dns.rcode.FORMERR
        s.sendto(b"\x01\x02\x03", (server.host, server.port))
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recvfrom(512)
    # the server still answers afterwards
    assert ask(server, "plain.lab.example", "A").rcode() == dns.rcode.NOERROR


def test_big_txt_truncates_over_udp_and_resolver_retries_over_tcp(server: DnsServer) -> None:
    name = "big._domainkey.shop.lab.example"
    r = ask(server, name, "TXT")  # no EDNS: 512 bytes at most
    assert r.flags & dns.flags.TC and not r.answer and r.rcode() == dns.rcode.NOERROR
    assert len(r.to_wire()) <= 512
    tcp_before = server.tcp_queries
    answer = resolver(server).resolve(name, "TXT")
    strings = answer.rrset[0].strings
    assert len(strings) == 3 and all(len(s) <= 255 for s in strings)
    assert b"".join(strings) == b"v=DKIM1; k=rsa; p=" + b"A" * 700
    assert server.tcp_queries == tcp_before + 1
    # with an EDNS payload of 1232 the same answer fits in one UDP datagram
    big = ask(server, name, "TXT", payload=1232)
    assert not big.flags & dns.flags.TC and len(big.answer[0][0].strings) == 3
    # and over TCP it is never truncated
    assert not ask(server, name, "TXT", tcp=True).flags & dns.flags.TC


def test_cname_chased_inside_our_zones_not_outside(server: DnsServer) -> None:
    r = ask(server, "www.lab.example", "A")
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert str(r.answer[1][0]) == "127.0.0.13"
    across = ask(server, "back.sub.lab.example", "A")  # sub zone -> parent zone
    assert [str(rr.name) for rr in across.answer] == ["back.sub.lab.example.",
                                                       "plain.lab.example."]
    away = ask(server, "away.lab.example", "A")
    assert len(away.answer) == 1 and away.answer[0].rdtype == dns.rdatatype.CNAME
    assert away.rcode() == dns.rcode.NOERROR
    direct = ask(server, "www.lab.example", "CNAME")
    assert len(direct.answer) == 1


def test_most_specific_zone_wins(server: DnsServer) -> None:
    r = ask(server, "nothing.sub.lab.example", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.authority[0].name.to_text() == "sub.lab.example." and r.authority[0].ttl == 30
    assert str(ask(server, "host.sub.lab.example", "A").answer[0][0]) == "127.0.0.21"


def test_engine_mx_resolver_against_the_server(server: DnsServer) -> None:
    mx = MxResolver(None, nameserver=server.host, port=server.port)
    assert mx.resolve("multi.lab.example") == [
        Destination("mx1.multi.lab.example", "127.0.0.11", 25),
        Destination("mx2.multi.lab.example", "127.0.0.12", 25)]
    assert mx.resolve("plain.lab.example") == [Destination("plain.lab.example", "127.0.0.13", 25)]
    with pytest.raises(NullMX):
        mx.resolve("null.lab.example")


def test_query_counts_and_several_queries_on_one_tcp_connection(server: DnsServer) -> None:
    before = server.queries.get(("plain.lab.example.", "A"), 0)
    with socket.create_connection((server.host, server.port), timeout=3) as s:
        for _ in range(3):
            q = dns.message.make_query("plain.lab.example", "A")
            dns.query.send_tcp(s, q)
            r, _ = dns.query.receive_tcp(s)
            assert str(r.answer[0][0]) == "127.0.0.13"
    assert server.queries[("plain.lab.example.", "A")] == before + 3


def test_binds_loopback_only_and_port_zero_picks_a_free_port() -> None:
    zone = load_zone(ZONE_FILE)
    with pytest.raises(InputError, match=r"127\.0\.0\.0/8"):
        DnsServer([zone], host="0.0.0.0")
    with pytest.raises(InputError):
        DnsServer([zone], host="localhost")
    a, b = DnsServer([zone], host="127.0.0.5"), DnsServer([zone], host="127.0.0.5")
    with a.running(), b.running():
        assert a.port and b.port and a.port != b.port
        assert ask(b, "plain.lab.example", "A").rcode() == dns.rcode.NOERROR
    with pytest.raises(dns.exception.Timeout):  # stopped: nobody answers
        dns.query.udp(dns.message.make_query("plain.lab.example", "A"), a.host,
                      port=a.port, timeout=0.3)


def test_bad_zones_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zone"
    bad.write_text("$ORIGIN bad.test.\n@ IN A 1.2.3.4\n")  # no SOA
    with pytest.raises(ConfigError, match=r"bad\.zone"):
        load_zone(bad)
    garbage = tmp_path / "g.zone"
    garbage.write_text("$ORIGIN g.test.\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nx IN A nope\n")
    with pytest.raises(ConfigError, match="bad zone"):
        load_zone(garbage)
    with pytest.raises(ConfigError, match="loaded twice"):
        Authority([load_zone(ZONE_FILE), load_zone(ZONE_FILE)])
    named = tmp_path / "named.test.zone"  # no $ORIGIN: taken from the file name
    named.write_text("@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
    assert load_zone(named).origin.to_text() == "named.test."


AUTH = Authority([load_zone(ZONE_FILE), zone_from_text(SUB_ZONE)])
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(LABEL, min_size=0, max_size=4),
       suffix=st.sampled_from(["lab.example", "sub.lab.example", "other.test"]),
       rtype=st.sampled_from(["A", "AAAA", "MX", "TXT", "CNAME", "SOA", "NS", "ANY"]))
def test_every_name_gets_a_consistent_answer(labels: list[str], suffix: str, rtype: str) -> None:
    name = ".".join([*labels, suffix])
    q = dns.message.make_query(name, rtype)
    wire = AUTH.respond(q.to_wire(), tcp=False)
    assert wire is not None and len(wire) <= 512
    r = dns.message.from_wire(wire)
    assert r.id == q.id and r.flags & dns.flags.QR
    if suffix == "other.test":
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA
        return
    assert r.flags & dns.flags.AA
    assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    if r.flags & dns.flags.TC:
        return
    if r.rcode() == dns.rcode.NXDOMAIN or not r.answer:
        assert [a.rdtype for a in r.authority] == [dns.rdatatype.SOA]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_arbitrary_bytes_never_crash_the_answerer(data: bytes) -> None:
    wire = AUTH.respond(data, tcp=False)
    if len(data) < 12:
        assert wire is None
    elif wire is not None:
        assert wire[:2] == data[:2] and wire[2] & 0x80
