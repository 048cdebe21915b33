"""Warmup plans: daily caps per provider per source IP while an IP is new.

Owns the day arithmetic (day 0 starts at the pool's ``warmup_start``), the randomised cap
of each (IP, provider, day) -- deterministic per seed and independent of call order, since
each cap is drawn from a hash of (salt, IP, provider, day) with a salt taken once from the
injected rng, and cached per (IP, provider) for the current day inside ``WarmupCounter``
-- the count sent per day, the projected safe throughput per day, and the
outlook of a backlog (fits, overflows to a warm pool, or waits and expires at its TTL).
It does not pick messages or lanes; the scheduler orders lanes by ``lane_order``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from engine.policy.params import WarmupPlan

DAY_S = 86400.0


def warmup_day(now: float, start: float) -> int:
    """Day of warmup at ``now`` (day 0 begins at ``start``; before it, day 0)."""
    return max(0, math.floor((now - start) / DAY_S))


def base_caps(plan: WarmupPlan, provider: str) -> tuple[int, ...]:
    """The plan's caps for ``provider`` (or its ``"*"`` row; empty if neither)."""
    return plan.caps.get(provider, plan.caps.get("*", ()))


def _unit(salt: int, ip: str, provider: str, day: int) -> float:
    digest = hashlib.blake2b(f"{salt}|{ip}|{provider}|{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def day_cap(plan: WarmupPlan, provider: str, day: int, *, salt: int, ip: str) -> int | None:
    """Cap of (``ip``, ``provider``) on ``day``, jittered by +/- ``plan.jitter``; None = warm."""
    caps = base_caps(plan, provider)
    if day >= len(caps):
        return None
    u = _unit(salt, ip, provider, day)
    return max(0, round(caps[day] * (1.0 + plan.jitter * (2.0 * u - 1.0))))


class WarmupCounter:
    """Messages sent per (IP, provider) today under one plan."""

    __slots__ = ("caps", "day", "plan", "salt", "sent", "share", "start")

    def __init__(self, plan: WarmupPlan, start: float, salt: int) -> None:
        self.plan = plan
        self.start = start
        self.salt = salt
        self.day = -1
        self.sent: dict[tuple[str, str], int] = {}
        # today's cap per (IP, provider), computed once a day: ``day_cap`` hashes, so the
        # scheduler's many per-dispatch lookups would otherwise dominate a long simulation
        self.caps: dict[tuple[str, str], int | None] = {}
        # the part of each cap this counter may use (a canary's arm uses its traffic share)
        self.share = 1.0

    def _roll(self, now: float) -> int:
        day = warmup_day(now, self.start)
        if day != self.day:
            self.day = day
            self.sent.clear()
            self.caps.clear()
        return day

    def cap(self, ip: str, provider: str, now: float) -> int | None:
        """Today's cap of (``ip``, ``provider``) (None = warm); same as ``day_cap``."""
        day = self._roll(now)
        key = (ip, provider)
        try:
            return self.caps[key]
        except KeyError:
            cap = self.caps[key] = day_cap(self.plan, provider, day, salt=self.salt, ip=ip)
            return cap

    def remaining(self, ip: str, provider: str, now: float) -> int | None:
        """How many more may go today (None = the IP is warm for this provider)."""
        # ``cap`` inlined (the scheduler asks this for every path at every wake-up)
        day = max(0, math.floor((now - self.start) / DAY_S))
        key = (ip, provider)
        if day != self.day:
            self.day = day
            self.sent.clear()
            self.caps.clear()
        caps = self.caps
        if key in caps:
            cap = caps[key]
        else:
            cap = caps[key] = day_cap(self.plan, provider, day, salt=self.salt, ip=ip)
        if cap is None:
            return None
        if self.share != 1.0:
            cap = math.floor(cap * self.share)
        left = cap - self.sent.get((ip, provider), 0)
        return left if left > 0 else 0

    def count(self, ip: str, provider: str, n: int) -> None:
        """Record ``n`` messages sent today."""
        key = (ip, provider)
        self.sent[key] = self.sent.get(key, 0) + n

    def next_day(self, now: float) -> float:
        """When the next warmup day (and a fresh cap) begins."""
        return self.start + (warmup_day(now, self.start) + 1) * DAY_S


def projected_throughput(
    plan: WarmupPlan, providers: Sequence[str], ips: Sequence[str], *, salt: int, days: int
) -> list[dict[str, int | None]]:
    """Projected safe messages per day per provider (summed over ``ips``); None = warm."""
    out: list[dict[str, int | None]] = []
    for day in range(days):
        row: dict[str, int | None] = {}
        for provider in providers:
            caps = [day_cap(plan, provider, day, salt=salt, ip=ip) for ip in ips]
            row[provider] = None if any(c is None for c in caps) else sum(c or 0 for c in caps)
        out.append(row)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Outlook:
    """What happens to a backlog under a warmup plan: ``fits`` by ``day``, ``overflows``
    to ``pool``, or ``waits`` with ``expiring`` messages lost to the TTL."""

    verdict: Literal["fits", "overflows", "waits"]
    day: int | None
    pool: str | None
    expiring: int
    reasons: tuple[str, ...]


def outlook(
    plan: WarmupPlan,
    provider: str,
    ips: Sequence[str],
    *,
    backlog: int,
    day: int,
    ttl_days: float,
    salt: int,
    overflow_to: str | None,
) -> Outlook:
    """Whether ``backlog`` messages to ``provider`` fit in the caps before their TTL."""
    left = backlog
    last_day = day + max(0, math.ceil(ttl_days) - 1)
    d = day
    while d <= last_day:
        caps = [day_cap(plan, provider, d, salt=salt, ip=ip) for ip in ips]
        if any(c is None for c in caps):
            return Outlook(verdict="fits", day=d, pool=None, expiring=0,
                           reasons=(f"IPs are warm for {provider} on day {d}",))
        left -= sum(c or 0 for c in caps)
        if left <= 0:
            return Outlook(verdict="fits", day=d, pool=None, expiring=0,
                           reasons=(f"backlog fits the caps by day {d}",))
        d += 1
    if overflow_to:
        return Outlook(verdict="overflows", day=None, pool=overflow_to, expiring=0,
                       reasons=(f"{left} messages exceed the caps before their TTL;"
                                f" they overflow to warm pool {overflow_to}",))
    return Outlook(verdict="waits", day=None, pool=None, expiring=left,
                   reasons=(f"{left} messages exceed the caps before their TTL and no"
                            " overflow pool is set; they wait and expire at their TTL",))
