"""Where to connect for a recipient domain: config routes first, else DNS MX (dnspython).

Owns the MX lookup (configurable nameserver, TTL cache, RFC 7505 null MX, RFC 5321 5.1
implicit MX fallback to the A record). It never sends mail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import LabConfig
from engine.errors import InputError


@dataclass(frozen=True, slots=True)
class Destination:
    """An SMTP server to try: ``host`` (name used for provider matching), ``addr``, ``port``."""

    host: str
    addr: str
    port: int


class NullMX(InputError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail."""


class Resolver:
    """Route or MX resolution with a TTL cache."""

    def __init__(self, config: LabConfig | None, *, nameserver: str | None = None,
                 port: int = 53, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.nameserver = nameserver
        self.port = port
        self.clock = clock
        self._cache: dict[str, tuple[float, list[Destination]]] = {}

    def cached(self, domain: str) -> list[Destination] | None:
        """Destinations for ``domain`` known without IO (a config route or an unexpired
        cache entry), else None: the caller resolves (in a thread)."""
        route = self.config.route_for(domain) if self.config is not None else None
        if route is not None and not route.mx and route.host is not None:
            return [Destination(route.host, route.host, route.port or 25)]
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        return None

    def resolve(self, domain: str) -> list[Destination]:
        """Destinations for ``domain`` in preference order. Raises ``NullMX`` or
        ``InputError`` (no such domain / no address)."""
        route = self.config.route_for(domain) if self.config is not None else None
        if route is not None and not route.mx and route.host is not None:
            return [Destination(route.host, route.host, route.port or 25)]
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        dests, ttl = self._lookup(domain)
        self._cache[domain] = (self.clock() + ttl, dests)
        return dests

    def _lookup(self, domain: str) -> tuple[list[Destination], float]:
        import dns.exception
        import dns.resolver

        res = dns.resolver.Resolver(configure=self.nameserver is None)
        if self.nameserver is not None:
            res.nameservers = [self.nameserver]
            res.port = self.port
        res.lifetime = 5.0
        try:
            answer = res.resolve(domain, "MX")
            mxs = sorted((r.preference, str(r.exchange).rstrip(".")) for r in answer)
            ttl = float(answer.rrset.ttl) if answer.rrset is not None else 300.0
        except dns.resolver.NoAnswer:
            mxs, ttl = [(0, domain)], 300.0  # RFC 5321 5.1: implicit MX
        except dns.resolver.NXDOMAIN:
            raise InputError(f"{domain} does not exist (NXDOMAIN)") from None
        except dns.exception.DNSException as exc:
            raise InputError(f"MX lookup for {domain} failed: {exc}") from None
        if len(mxs) == 1 and mxs[0][1] in ("", "."):
            raise NullMX(f"{domain} publishes a null MX (RFC 7505): it accepts no mail")
        out: list[Destination] = []
        for _, host in mxs:
            try:
                a = res.resolve(host, "A")
            except dns.exception.DNSException:
                continue
            out.extend(Destination(host, str(r), 25) for r in a)
        if not out:
            raise InputError(f"no address for any MX of {domain}")
        return out, ttl
