"""SPF evaluation, RFC 7208 ``check_host()``, over an injected DNS lookup function.

Owns ``check_host`` and ``SpfOutcome``. The caller gives ``lookup(name, rtype)`` returning
the record values (TXT: each record's strings joined; A/AAAA: addresses; MX: exchange names
in preference order), ``None`` for NXDOMAIN, ``[]`` for no records of that type, and raising
``TempError`` for any other DNS failure. No sockets here: ``sim.dns.auth`` supplies a
lookup backed by a real resolver; tests may pass a dict.

What is implemented (section numbers are RFC 7208's)
    - §4.3 a malformed or single-label domain, or NXDOMAIN for it: "none"
    - §4.5 exactly one ``v=spf1`` TXT record, else "none" (zero) / "permerror" (several)
    - §4.6 any syntax error in the record: "permerror" before anything is evaluated;
      ``redirect`` and ``exp`` at most once; unknown modifiers are ignored
    - §4.6.4 at most 10 terms that query DNS (include, a, mx, ptr, exists, redirect) per
      evaluation, at most 10 exchanges looked up per ``mx``, at most 2 void lookups
      (NXDOMAIN or an empty answer): beyond that, "permerror"
    - §5 mechanisms all, include (§5.2 result table), a, mx, ip4, ip6, exists, with
      dual CIDR lengths; ``ptr`` (§5.5: "SHOULD NOT be used") counts as a lookup and never
      matches, as §5.5 prescribes when the PTR lookup fails; IPv4-mapped IPv6 client
      addresses are treated as IPv4 (§5)
    - §6.1 ``redirect=``; a target without a record is "permerror"; ``exp=`` is not fetched
    - §7 macros s l o d i p h v with digit/``r`` transformers, delimiters and URL escaping
      of upper-case letters; ``%{p}`` expands to "unknown" (§7.3 allows it); c r t outside
      ``exp`` are "permerror"; names longer than 253 bytes lose left labels (§7.3)
    - qualifiers ``+ - ~ ?`` give pass / fail / softfail / neutral; nothing matching:
      "neutral"
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
Lookup = Callable[[str, str], "list[str] | None"]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 10  # §4.6.4
MAX_MX_NAMES = 10  # §4.6.4
MAX_VOID = 2  # §4.6.4
QUALIFIERS: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_MECH = re.compile(r"^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?=$|[:/])(.*)$",
                   re.IGNORECASE)
_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$")
_CIDR = r"(?:0|[1-9][0-9]{0,2})"
_DUAL = re.compile(rf"^(?:/({_CIDR}))?(?://({_CIDR}))?$")
_MACRO = re.compile(r"%(?:\{([a-zA-Z])([0-9]*)(r?)([.\-+,/_=]*)\}|(.))|([^%]+)")
_DELIMS = ".-+,/_="


class TempError(Exception):
    """A DNS failure other than NXDOMAIN (timeout, SERVFAIL, REFUSED): §2.6.6 temperror."""


class PermError(Exception):
    """The published records cannot be evaluated (§2.6.7); the message says why."""


@dataclass(frozen=True, slots=True)
class SpfOutcome:
    """The result, the domain checked, why, and the DNS-querying terms used."""

    result: SpfResult
    domain: str
    reason: str
    lookups: int = 0
    void_lookups: int = 0


@dataclass(frozen=True, slots=True)
class _Term:
    qualifier: str
    name: str  # a mechanism, or "redirect" / "exp"
    arg: str | None  # domain-spec or address, None when absent
    cidr4: int | None = None
    cidr6: int | None = None


def valid_domain(domain: str) -> bool:
    """§4.3: a multi-label name, every label 1..63 bytes, at most 253 bytes overall."""
    d = domain[:-1] if domain.endswith(".") else domain
    labels = d.split(".")
    return (len(labels) >= 2 and len(d) <= 253
            and all(0 < len(x) <= 63 for x in labels) and " " not in d)


def parse_record(record: str) -> list[_Term]:
    """The terms of a ``v=spf1`` record. Raises ``PermError`` on any syntax error (§4.6)."""
    terms: list[_Term] = []
    seen_mod: set[str] = set()
    for raw in record.split(" ")[1:]:
        if not raw:
            continue
        m = _MECH.match(raw)
        if m is not None:
            terms.append(_mechanism(m.group(1) or "+", m.group(2).lower(), m.group(3), raw))
            continue
        mod = _MODIFIER.match(raw)
        if mod is None:
            raise PermError(f"unknown mechanism or bad term {raw!r}")
        name = mod.group(1).lower()
        _check_macros(mod.group(2), raw)
        if name in ("redirect", "exp"):
            if name in seen_mod:
                raise PermError(f"{name}= appears twice (§6)")
            seen_mod.add(name)
            if not mod.group(2):
                raise PermError(f"{raw!r}: empty domain-spec")
            terms.append(_Term("+", name, mod.group(2)))
        # other modifiers are ignored (§6)
    return terms


def _mechanism(qual: str, name: str, rest: str, raw: str) -> _Term:
    if name == "all":
        if rest:
            raise PermError(f"{raw!r}: 'all' takes no argument")
        return _Term(qual, name, None)
    if name in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise PermError(f"{raw!r}: {name} needs an address")
        addr, _, length = rest[1:].partition("/")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise PermError(f"{raw!r}: bad address") from None
        if (name == "ip4") != isinstance(ip, ipaddress.IPv4Address):
            raise PermError(f"{raw!r}: wrong address family for {name}")
        limit = 32 if name == "ip4" else 128
        bits = limit
        if length:
            if not re.fullmatch(_CIDR, length) or int(length) > limit:
                raise PermError(f"{raw!r}: bad prefix length")
            bits = int(length)
        return _Term(qual, name, addr, bits if name == "ip4" else None,
                     bits if name == "ip6" else None)
    spec: str | None = None
    cidr = ""
    if rest.startswith(":"):
        body = rest[1:]
        if name in ("a", "mx"):
            i = body.find("/")
            spec, cidr = (body, "") if i < 0 else (body[:i], body[i:])
        else:
            spec = body
        if not spec:
            raise PermError(f"{raw!r}: empty domain-spec")
        _check_macros(spec, raw)
    else:
        cidr = rest
    if name in ("include", "exists") and spec is None:
        raise PermError(f"{raw!r}: {name} needs a domain-spec")
    if cidr and name not in ("a", "mx"):
        raise PermError(f"{raw!r}: {name} takes no prefix length")
    c4 = c6 = None
    if cidr:
        m = _DUAL.match(cidr)
        if m is None or (m.group(1) and int(m.group(1)) > 32) or (
                m.group(2) and int(m.group(2)) > 128):
            raise PermError(f"{raw!r}: bad prefix length")
        c4 = int(m.group(1)) if m.group(1) else None
        c6 = int(m.group(2)) if m.group(2) else None
    return _Term(qual, name, spec, c4, c6)


def _check_macros(text: str, raw: str) -> None:
    pos = 0
    for m in _MACRO.finditer(text):
        if m.start() != pos:
            break
        pos = m.end()
        if m.group(5) is not None and m.group(5) not in "%_-":
            raise PermError(f"{raw!r}: bad macro escape %{m.group(5)}")
        if m.group(1) is not None and m.group(1).lower() not in "slodiphcrtv":
            raise PermError(f"{raw!r}: unknown macro letter {m.group(1)!r}")
    if pos != len(text):
        raise PermError(f"{raw!r}: bad macro syntax near {text[pos:pos + 8]!r}")


class _Eval:
    def __init__(self, lookup: Lookup, ip: IP, sender: str, helo: str) -> None:
        self.lookup = lookup
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.lookups = 0
        self.void = 0

    # --- DNS with the §4.6.4 limits -----------------------------------------------------

    def count(self, what: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS-querying terms (at {what}) (§4.6.4)")

    def query(self, name: str, rtype: str) -> list[str]:
        found = self.lookup(name, rtype)
        if not found:
            self.void += 1
            if self.void > MAX_VOID:
                raise PermError(f"more than {MAX_VOID} void lookups (at {name} {rtype}) (§4.6.4)")
            return []
        return found

    def record(self, domain: str) -> str | None:
        """The one SPF record of ``domain``; None when there is none (§4.5)."""
        found = self.lookup(domain, "TXT")
        spf = [t for t in (found or []) if re.match(r"^v=spf1(?: |$)", t, re.IGNORECASE)]
        if len(spf) > 1:
            raise PermError(f"{domain} publishes {len(spf)} SPF records (§4.5)")
        return spf[0] if spf else None

    # --- check_host ---------------------------------------------------------------------

    def check_host(self, domain: str) -> tuple[SpfResult, str]:
        domain = domain.rstrip(".").lower()
        if not valid_domain(domain):
            return "none", f"{domain!r} is not a valid domain (§4.3)"
        record = self.record(domain)
        if record is None:
            return "none", f"{domain} has no SPF record"
        terms = parse_record(record)
        redirect: str | None = None
        for term in terms:
            if term.name == "redirect":
                redirect = term.arg
                continue
            if term.name == "exp":
                continue
            if self.matches(term, domain):
                return QUALIFIERS[term.qualifier], f"matched {term.qualifier}{term.name}" + (
                    f":{term.arg}" if term.arg else "") + f" in {domain}"
        if redirect is not None:
            self.count("redirect")
            target = self.expand(redirect, domain)
            result, why = self.check_host(target)
            if result == "none":  # §6.1
                raise PermError(f"redirect={target}: {why}")
            return result, why
        return "neutral", f"no mechanism of {domain} matched (default neutral)"

    def matches(self, term: _Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert term.arg is not None
            net = ipaddress.ip_network(
                f"{term.arg}/{term.cidr4 if name == 'ip4' else term.cidr6}", strict=False)
            return self.ip.version == net.version and self.ip in net
        self.count(name)
        target = self.expand(term.arg, domain) if term.arg is not None else domain
        if name == "include":
            result, why = self.check_host(target)
            if result in ("temperror", "permerror"):
                raise (TempError if result == "temperror" else PermError)(why)
            if result == "none":  # §5.2: an include target without a record
                raise PermError(f"include:{target}: {why}")
            return result == "pass"
        if name == "exists":  # §5.7: always an A lookup, whatever the client's family
            return bool(self.query(target, "A"))
        if name == "ptr":
            return False  # §5.5: SHOULD NOT be used; not evaluated here (see the docstring)
        if name == "a":
            return self.any_address(target, term)
        # mx (§5.4)
        exchanges = [x for x in self.query(target, "MX") if x.rstrip(".")]
        if len(exchanges) > MAX_MX_NAMES:
            raise PermError(f"mx:{target}: more than {MAX_MX_NAMES} MX names (§4.6.4)")
        return any(self.any_address(x.rstrip("."), term) for x in exchanges)

    def any_address(self, host: str, term: _Term) -> bool:
        v4 = self.ip.version == 4
        bits = (term.cidr4 if term.cidr4 is not None else 32) if v4 else (
            term.cidr6 if term.cidr6 is not None else 128)
        for addr in self.query(host, "A" if v4 else "AAAA"):
            try:
                net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
            except ValueError:
                continue
            if self.ip in net:
                return True
        return False

    # --- macros (§7) --------------------------------------------------------------------

    def expand(self, spec: str, domain: str) -> str:
        out = []
        for m in _MACRO.finditer(spec):
            if m.group(6) is not None:
                out.append(m.group(6))
            elif m.group(5) is not None:
                out.append({"%": "%", "_": " ", "-": "%20"}[m.group(5)])
            else:
                out.append(self.macro(m.group(1), m.group(2), m.group(3), m.group(4), domain))
        name = "".join(out).rstrip(".")
        while len(name) > 253 and "." in name:  # §7.3: drop left labels
            name = name.split(".", 1)[1]
        return name

    def macro(self, letter: str, digits: str, reverse: str, delims: str, domain: str) -> str:
        local, _, sender_domain = self.sender.rpartition("@")
        ip = self.ip
        values = {
            "s": self.sender, "l": local, "o": sender_domain, "d": domain, "h": self.helo,
            "i": ip.exploded if ip.version == 4 else ".".join(ip.exploded.replace(":", "")),
            "v": "in-addr" if ip.version == 4 else "ip6", "p": "unknown",
        }
        key = letter.lower()
        if key not in values:
            raise PermError(f"macro %{{{letter}}} is only allowed in exp= (§7.2)")
        parts = re.split("[" + re.escape(delims or ".") + "]", values[key])
        if reverse:
            parts.reverse()
        if digits:
            n = int(digits)
            if n == 0:
                raise PermError("a macro transformer of 0 labels (§7.1)")
            parts = parts[-n:]
        value = ".".join(parts)
        if letter.isupper():
            value = urllib.parse.quote(value, safe="-._~")
        return value


def parse_ip(source_ip: str) -> IP:
    """The client address, IPv4-mapped IPv6 as IPv4 (§5). Raises ``ValueError``."""
    ip = ipaddress.ip_address(source_ip.strip())
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_host(lookup: Lookup, source_ip: str, mail_from: str, helo: str = "") -> SpfOutcome:
    """SPF for the MAIL FROM identity (or ``postmaster@helo`` for a null sender, §2.4).
    Raises ``ValueError`` when ``source_ip`` is not an address."""
    ip = parse_ip(source_ip)
    sender = mail_from.strip().strip("<>")
    if not sender:
        sender = f"postmaster@{helo}"
    elif "@" not in sender:
        sender = f"postmaster@{sender}"
    elif sender.startswith("@"):
        sender = "postmaster" + sender  # §4.3: an empty local-part is "postmaster"
    domain = sender.rpartition("@")[2].lower().rstrip(".")
    ev = _Eval(lookup, ip, sender, helo)
    try:
        result, reason = ev.check_host(domain)
    except PermError as exc:
        result, reason = "permerror", str(exc)
    except TempError as exc:
        result, reason = "temperror", str(exc) or "DNS error"
    return SpfOutcome(result, domain, reason, ev.lookups, ev.void)
