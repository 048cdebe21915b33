"""Authoritative answers from a set of zones: one query's wire bytes in, the reply's out.

Owns ``Authority`` (zones by origin, most specific first) and ``load_zone`` (RFC 1035
master files through dnspython). No sockets, no event loop: ``sim.dns.server`` does the IO.

Rules (RFC 1034 §4.3.2, RFC 2308, RFC 8020)
    - the zone is the one whose origin is the longest suffix of the question name; none:
      REFUSED, without the AA flag (we are not a resolver)
    - a name with records of the asked type: NOERROR, the records, AA
    - a CNAME at the name (and the type is not CNAME): the CNAME in the answer, then the
      target is chased while it stays inside our zones (at most ``MAX_CHASE`` links)
    - a name that exists (it holds records, or names exist below it: an empty non-terminal)
      but not with that type: NODATA (NOERROR, empty answer, the SOA in authority)
    - a name that does not exist: NXDOMAIN, the SOA in authority; the SOA's TTL is the
      lesser of its TTL and its MINIMUM field (RFC 2308 §3)
    - bytes that do not parse: FORMERR (when at least the 12-byte header is there to echo
      the id); an opcode other than QUERY: NOTIMP; a class other than IN: REFUSED
    - over UDP the reply fits 512 bytes, or the client's EDNS payload size (RFC 6891 §6.2.5);
      a bigger one goes back with TC set and no records, so the client retries over TCP
      (RFC 1035 §4.2.1, RFC 7766)
Not supported: wildcards (RFC 4592), delegations below an apex, DNSSEC, zone transfers.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from engine.errors import ConfigError

MAX_CHASE = 8  # CNAME links followed inside our zones
UDP_DEFAULT = 512  # RFC 1035 §4.2.1: without EDNS a UDP message is at most 512 bytes
OUR_PAYLOAD = 4096  # the EDNS payload size we advertise
TCP_MAX = 65535


def load_zone(path: str | Path, origin: str | None = None) -> dns.zone.Zone:
    """Read an RFC 1035 master file. The origin is ``origin``, else the file's ``$ORIGIN``,
    else the file name without a ``.zone`` / ``.db`` suffix. Raises ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read zone file: {exc}") from None
    if origin is None and not any(line.lstrip().upper().startswith("$ORIGIN")
                                  for line in text.splitlines()):
        stem = path.name
        for suffix in (".zone", ".db"):
            stem = stem.removesuffix(suffix)
        origin = stem
    return zone_from_text(text, origin=origin, file=str(path))


def zone_from_text(text: str, *, origin: str | None = None, file: str = "<zone>") -> dns.zone.Zone:
    """Parse master-file text (absolute names kept). Raises ``ConfigError`` with the reason."""
    try:
        return dns.zone.from_text(text, origin=origin, relativize=False, filename=file)
    except dns.exception.SyntaxError as exc:
        raise ConfigError(file, "", f"bad zone: {exc}") from None
    except (dns.zone.NoSOA, dns.zone.NoNS) as exc:
        raise ConfigError(file, "", f"bad zone: {exc.__doc__ or type(exc).__name__}") from None
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(file, "", f"bad zone: {exc}") from None


class Authority:
    """Answers queries from ``zones`` (each origin once). ``queries`` counts (name, type)."""

    def __init__(self, zones: Iterable[dns.zone.Zone]) -> None:
        by_origin: dict[dns.name.Name, dns.zone.Zone] = {}
        for zone in zones:
            origin = zone.origin
            if origin is None:
                raise ConfigError("<zone>", "", "a zone without an origin")
            if origin in by_origin:
                raise ConfigError("<zone>", "", f"zone {origin} is loaded twice")
            by_origin[origin] = zone
        # Most specific first, so the longest matching origin wins.
        self.zones = sorted(by_origin.values(), key=lambda z: -len(z.origin or dns.name.root))
        self._exists: dict[dns.name.Name, set[dns.name.Name]] = {}
        for zone in self.zones:
            assert zone.origin is not None
            names: set[dns.name.Name] = set()
            for name in zone.nodes:
                absolute = name.derelativize(zone.origin)
                while absolute.is_subdomain(zone.origin) and absolute not in names:
                    names.add(absolute)  # the name and every ancestor up to the apex
                    absolute = absolute.parent()
            self._exists[zone.origin] = names
        self.queries: Counter[tuple[str, str]] = Counter()
        self.rcodes: Counter[str] = Counter()
        self.truncated = 0

    def origins(self) -> list[str]:
        return [z.origin.to_text() for z in self.zones if z.origin is not None]

    def zone_for(self, name: dns.name.Name) -> dns.zone.Zone | None:
        for zone in self.zones:
            if zone.origin is not None and name.is_subdomain(zone.origin):
                return zone
        return None

    # --- the wire -----------------------------------------------------------------------

    def respond(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query message, or None when there is nothing to answer (fewer
        than 12 bytes, or the message is itself a response)."""
        if len(wire) < 12:
            return None
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # any parse failure of client bytes is a FORMERR, never a crash
            return self._formerr(wire)
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            self._answer(query.question[0], response)
        self.rcodes[dns.rcode.to_text(response.rcode())] += 1
        limit = TCP_MAX if tcp else max(UDP_DEFAULT, query.payload if query.edns >= 0 else 0)
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            self.truncated += 1
            short = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
            short.flags = (response.flags | dns.flags.TC) & ~dns.flags.RA
            short.set_rcode(response.rcode())
            return short.to_wire(max_size=limit)

    def _formerr(self, wire: bytes) -> bytes:
        (qid, flags) = struct.unpack("!HH", wire[:4])
        opcode = flags & 0x7800
        self.rcodes["FORMERR"] += 1
        # id echoed, QR set, same opcode, RCODE 1 (FORMERR), no sections.
        return struct.pack("!HHHHHH", qid, 0x8000 | opcode | dns.rcode.FORMERR, 0, 0, 0, 0)

    def _answer(self, question: dns.rrset.RRset, response: dns.message.Message) -> None:
        qname, qtype = question.name, question.rdtype
        self.queries[(qname.to_text().lower(), dns.rdatatype.to_text(qtype))] += 1
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        zone = self.zone_for(qname)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        name = qname
        for _ in range(MAX_CHASE + 1):
            assert zone.origin is not None
            node = zone.get_node(name)
            if node is None:
                if name not in self._exists[zone.origin]:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                self._negative(zone, response)
                return
            if qtype == dns.rdatatype.ANY:
                for rds in node.rdatasets:
                    response.answer.append(_rrset(name, rds))
                return
            found = node.get_rdataset(dns.rdataclass.IN, qtype)
            if found is not None:
                response.answer.append(_rrset(name, found))
                return
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                self._negative(zone, response)  # NODATA
                return
            response.answer.append(_rrset(name, cname))
            target = cname[0].target
            next_zone = self.zone_for(target)
            if next_zone is None or any(rr.name == target for rr in response.answer):
                return  # outside our zones (the client chases it) or a loop
            zone, name = next_zone, target
        return

    @staticmethod
    def _negative(zone: dns.zone.Zone, response: dns.message.Message) -> None:
        assert zone.origin is not None
        soa = zone.get_rdataset(zone.origin, dns.rdatatype.SOA)
        if soa is None:
            return
        rrset = _rrset(zone.origin, soa)
        rrset.ttl = min(soa.ttl, soa[0].minimum)  # RFC 2308 §3
        response.authority.append(rrset)


def _rrset(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rds.rdclass, rds.rdtype)
    rrset.update(rds)  # type: ignore[no-untyped-call]
    return rrset
