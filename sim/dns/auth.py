"""DNS-backed message authentication: DKIM key lookups, SPF and DMARC through one server.

Owns ``DnsAuth``: a dnspython ``Resolver`` aimed at one nameserver (``host:port``, e.g. the
loopback ``sim.dns.server``) with a TTL cache (positive answers for their TTL, negative
ones for the SOA's negative TTL, RFC 2308 §5), and on top of it

- ``dkim_dnsfunc(name, timeout=5) -> bytes | None``: what dkimpy's ``dnsfunc`` wants (the
  strings of the TXT record joined, RFC 6376 §3.6.2.2), None when there is none or DNS fails
- ``spf(mail_from, helo, source_ip)``: RFC 7208 (``sim.dns.spf``); DNS errors: "temperror"
- ``dmarc(from_domain)``: the parsed ``_dmarc`` record of the From domain, else of its
  organizational domain (RFC 7489 §6.6.3), or None
- ``aligned(from_domain, other, mode)``: RFC 7489 §3.1 identifier alignment

SPF evaluation itself lives in ``sim.dns.spf``; the server in ``sim.dns.server``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from engine.errors import InputError
from sim.dns.spf import SpfOutcome, SpfResult, TempError, check_host
from sim.providers.domains import org_domain

NEGATIVE_TTL_DEFAULT = 60.0  # when a negative answer carries no SOA
DMARC_POLICIES = ("none", "quarantine", "reject")


class DnsUnavailable(InputError):
    """The nameserver did not answer usefully (timeout, SERVFAIL, REFUSED)."""


def parse_server(server: str) -> tuple[str, int]:
    """``host:port`` (or ``host``, port 53) into parts. Raises ``InputError``."""
    import ipaddress

    host, sep, port_text = server.strip().rpartition(":")
    if not sep:
        host, port_text = server.strip(), "53"
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise InputError(f"--server {server!r}: expected IP:PORT, e.g. 127.0.0.1:5353") from None
    if not 0 < port <= 65535:
        raise InputError(f"--server {server!r}: port out of range")
    return host, port


def aligned(from_domain: str, other_domain: str | None, mode: str = "r") -> bool:
    """RFC 7489 §3.1: strict ("s") = the same name; relaxed ("r") = the same
    organizational domain. False when either domain is missing."""
    if mode not in ("r", "s"):
        raise InputError(f"alignment mode must be 'r' or 's', got {mode!r}")
    a = (from_domain or "").strip().rstrip(".").lower()
    b = (other_domain or "").strip().rstrip(".").lower()
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


def parse_dmarc(text: str) -> dict[str, str] | None:
    """The tags of a DMARC record with RFC 7489 §6.3 defaults (adkim, aspf, pct, fo, rf,
    ri), or None when it is not one: ``v=DMARC1`` must come first (§6.4), and an invalid or
    missing ``p=`` is taken as ``p=none`` only when ``rua`` is given (§6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            if part.strip():
                return None
            continue
        tags.setdefault(key.strip().lower(), value.strip())
    first = text.split(";", 1)[0].replace(" ", "")
    if first != "v=DMARC1":
        return None
    if tags.get("p", "").lower() not in DMARC_POLICIES:
        if "rua" not in tags:
            return None
        tags["p"] = "none"
    tags["p"] = tags["p"].lower()
    defaults = {"adkim": "r", "aspf": "r", "pct": "100", "fo": "0", "rf": "afrf", "ri": "86400"}
    for key, value in defaults.items():
        tags.setdefault(key, value)
    for key in ("adkim", "aspf"):
        if tags[key].lower() not in ("r", "s"):
            tags[key] = "r"  # §6.3: an unknown value is the default
        tags[key] = tags[key].lower()
    tags.setdefault("sp", tags["p"])
    return tags


class DnsAuth:
    """Auth checks against the nameserver at ``server`` ("host:port")."""

    def __init__(self, server: str, *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import dns.resolver

        self.host, self.port = parse_server(server)
        self.timeout = timeout
        self.clock = clock
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [self.host]
        res.port = self.port
        res.lifetime = timeout
        res.timeout = timeout
        res.retry_servfail = False
        res.cache = None
        self.resolver = res
        # (name, type) -> (expiry, values or None for NXDOMAIN)
        self._cache: dict[tuple[str, str], tuple[float, list[str] | None]] = {}
        self.queries = 0

    # --- one lookup ---------------------------------------------------------------------

    def lookup(self, name: str, rtype: str) -> list[str] | None:
        """Values of ``name``'s ``rtype`` records (TXT strings joined; MX exchanges by
        preference); [] for NODATA, None for NXDOMAIN. Raises ``spf.TempError``."""
        import dns.exception
        import dns.resolver

        key = (name.lower().rstrip("."), rtype.upper())
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        self.queries += 1
        values: list[str] | None
        try:
            answer = self.resolver.resolve(key[0] + ".", key[1], search=False,
                                           raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            self._cache[key] = (now + self._negative_ttl(exc), None)
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise TempError(f"{key[0]} {key[1]}: {type(exc).__name__}") from None
        except dns.exception.DNSException as exc:
            raise TempError(f"{key[0]} {key[1]}: {exc}") from None
        if answer.rrset is None:
            values = []
            ttl = self._negative_ttl_of(answer.response)
        else:
            values = _values(answer.rrset, key[1])
            ttl = float(answer.rrset.ttl)
        self._cache[key] = (now + ttl, values)
        return values

    def _negative_ttl(self, exc: Exception) -> float:
        responses = getattr(exc, "kwargs", {}).get("responses", {}) or {}
        for response in responses.values():
            return self._negative_ttl_of(response)
        return NEGATIVE_TTL_DEFAULT

    @staticmethod
    def _negative_ttl_of(response: object) -> float:
        import dns.rdatatype

        for rrset in getattr(response, "authority", []):
            if rrset.rdtype == dns.rdatatype.SOA:
                return float(min(rrset.ttl, rrset[0].minimum))  # RFC 2308 §5
        return NEGATIVE_TTL_DEFAULT

    # --- DKIM ---------------------------------------------------------------------------

    def dkim_dnsfunc(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        """The DKIM key record at ``name`` for dkimpy (``dkim.verify(..., dnsfunc=...)``)."""
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            found = self.lookup(text, "TXT")
        except TempError:
            return None
        if not found:
            return None
        # Several TXT records: prefer the one that looks like a key record (RFC 6376 §3.6.2.2
        # says verifiers may pick); strings are joined without spaces.
        keys = [t for t in found if "p=" in t]
        return (keys or found)[0].encode("latin-1", "replace")

    def dkim_record(self, name: str) -> str | None:
        """The DKIM key record at ``name`` as text (None when there is none or the lookup
        failed): ``dkim_dnsfunc``'s answer, for callers that cache by record."""
        found = self.dkim_dnsfunc(name)
        return found.decode("latin-1") if found is not None else None

    # --- SPF ----------------------------------------------------------------------------

    def spf_check(self, mail_from: str, helo: str, source_ip: str) -> SpfOutcome:
        """The full SPF outcome (result, domain, reason, lookups). Raises ``InputError``
        for a ``source_ip`` that is not an IP address."""
        try:
            return check_host(self.lookup, source_ip, mail_from, helo)
        except ValueError:
            raise InputError(f"{source_ip!r} is not an IP address") from None

    def spf(self, mail_from: str, helo: str, source_ip: str) -> SpfResult:
        return self.spf_check(mail_from, helo, source_ip).result

    # --- DMARC --------------------------------------------------------------------------

    def dmarc(self, from_domain: str) -> dict[str, str] | None:
        """The DMARC record that applies to ``from_domain`` (RFC 7489 §6.6.3): its own
        ``_dmarc`` record, else its organizational domain's; None when neither exists or a
        name holds several. The dict has the tags plus ``domain`` (where it was found).
        Raises ``DnsUnavailable`` when the server fails."""
        d = from_domain.strip().rstrip(".").lower()
        if not d:
            return None
        for candidate in dict.fromkeys([d, org_domain(d)]):
            try:
                found = self.lookup(f"_dmarc.{candidate}", "TXT")
            except TempError as exc:
                raise DnsUnavailable(f"DMARC lookup failed: {exc}") from None
            records = [t for t in (found or []) if t.replace(" ", "").startswith("v=DMARC1")]
            if len(records) == 1:
                parsed = parse_dmarc(records[0])
                if parsed is not None:
                    return {**parsed, "domain": candidate}
            if len(records) > 1:
                return None  # §6.6.3: several records: DMARC does not apply
        return None

    aligned = staticmethod(aligned)


def _values(rrset: object, rtype: str) -> list[str]:
    import dns.rdtypes.ANY.MX
    import dns.rdtypes.ANY.TXT

    out: list[tuple[int, str]] = []
    for rd in rrset:  # type: ignore[attr-defined]
        if isinstance(rd, dns.rdtypes.ANY.TXT.TXT):
            out.append((0, b"".join(rd.strings).decode("latin-1")))
        elif isinstance(rd, dns.rdtypes.ANY.MX.MX):
            out.append((rd.preference, rd.exchange.to_text(omit_final_dot=True)))
        else:
            out.append((0, rd.to_text()))
    return [v for _, v in sorted(out, key=lambda pv: pv[0])]


def dmarc_alignment(from_domain: str, record: dict[str, str] | None, *,
                    spf_domain: str | None, spf_pass: bool,
                    dkim_domain: str | None) -> dict[str, bool]:
    """Whether SPF and DKIM pass aligned under ``record``'s aspf/adkim, and the DMARC pass."""
    mode_spf: Literal["r", "s"] = "s" if record and record.get("aspf") == "s" else "r"
    mode_dkim: Literal["r", "s"] = "s" if record and record.get("adkim") == "s" else "r"
    spf_ok = spf_pass and aligned(from_domain, spf_domain, mode_spf)
    dkim_ok = dkim_domain is not None and aligned(from_domain, dkim_domain, mode_dkim)
    return {"spf_aligned": spf_ok, "dkim_aligned": dkim_ok, "pass": spf_ok or dkim_ok}
