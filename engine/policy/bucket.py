"""Token buckets and connection plans: how fast, and over how many connections, we may send.

Owns the token bucket arithmetic (refill by elapsed ``now``, take whole tokens, scale the
rate when a breaker or an automation rule throttles a path) and the ``ConnectionPlan`` a
driver needs to open connections to a provider from one source IP. It must not know about
queues, lanes or messages, and never reads a clock: ``now`` is always an argument.

Guarantee (tested as a property): over any window ``[t1, t2]`` a bucket hands out at most
``burst + rate * (t2 - t1)`` tokens, also across rate changes (a rate change first settles
the refill earned at the old rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.policy.params import BucketSpec
from engine.policy.types import Shaping

_EPS = 1e-9


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full at ``now``."""

    __slots__ = ("base_rate", "burst", "factor", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"bucket rate must be finite and >= 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"bucket burst must be >= 1, got {burst!r}")
        self.base_rate = float(rate)
        self.rate = float(rate)
        self.factor = 1.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    @classmethod
    def from_spec(cls, spec: BucketSpec, now: float = 0.0) -> TokenBucket:
        """A bucket built from a ``BucketSpec``."""
        return cls(spec.rate, spec.burst, now)

    def refill(self, now: float) -> None:
        """Credit the tokens earned since the last refill (time never runs backwards)."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def available(self, now: float) -> int:
        """Whole tokens that may be taken at ``now``."""
        self.refill(now)
        return int(self.tokens + _EPS)

    def take(self, n: int, now: float) -> int:
        """Take up to ``n`` whole tokens; returns how many were taken."""
        self.refill(now)
        got = min(n, int(self.tokens + _EPS))
        if got > 0:
            self.tokens -= got
        return got

    def time_until(self, n: int, now: float) -> float:
        """Seconds from ``now`` until ``n`` tokens are available (``inf`` if never)."""
        self.refill(now)
        missing = n - self.tokens
        if missing <= _EPS:
            return 0.0
        if self.rate <= 0 or n > self.burst:
            return math.inf
        return missing / self.rate

    def scale(self, factor: float, now: float) -> None:
        """Run at ``factor`` (0..1) of the base rate from ``now`` on; burst scales too."""
        factor = min(1.0, max(0.0, factor))
        self.refill(now)
        self.factor = factor
        self.rate = self.base_rate * factor
        # A throttled path must not keep a full burst of the healthy rate.
        cap = max(1.0, self.burst * factor) if factor > 0 else 0.0
        self.tokens = min(self.tokens, cap)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionPlan:
    """What a driver may do towards one provider from one source IP right now.

    ``max_connections`` concurrent connections, each carrying at most
    ``messages_per_connection`` messages, opened at no more than
    ``connect_rate_per_minute``; ``tls_required`` forbids a plaintext fallback.
    """

    max_connections: int
    messages_per_connection: int
    connect_rate_per_minute: float
    tls_required: bool


def connection_plan(shaping: Shaping, factor: float = 1.0) -> ConnectionPlan:
    """The connection plan of a path shaped by ``shaping`` running at ``factor`` of its rate.

    A throttled path (``0 < factor < 1``) also opens fewer connections (at least one);
    a suspended one (``factor == 0``) opens none.
    """
    conns = 0 if factor <= 0 else max(1, math.floor(shaping.max_connections * min(1.0, factor)))
    return ConnectionPlan(
        max_connections=conns,
        messages_per_connection=shaping.max_messages_per_connection,
        connect_rate_per_minute=shaping.connect_rate_per_minute * min(1.0, max(factor, 0.0)),
        tls_required=shaping.tls == "required",
    )


def path_bucket(shaping: Shaping, now: float = 0.0) -> TokenBucket:
    """The per source IP x provider bucket a ``Shaping`` describes."""
    return TokenBucket(shaping.messages_per_second, max(1, shaping.burst), now)
