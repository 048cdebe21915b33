"""Send windows in the recipient's time zone, and routing constraints (which pools a
tenant's mail may use).

Owns two pure questions: "may this lane send to a recipient at UTC offset X at ``now``, and
if not, when does its window open?" and "which pools and source IPs may carry this tenant's
(lane's) mail?". It does not know about queues or buckets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from engine.policy.params import PoolSpec, RouteConstraint
from engine.policy.types import Lane

_DAY = 86400.0


def local_hour(now: float, utc_offset_min: int) -> float:
    """Hour of day (0..24, fractional) at ``now`` for a recipient at that UTC offset."""
    return ((now + utc_offset_min * 60.0) % _DAY) / 3600.0


def in_window(now: float, utc_offset_min: int | None, window: tuple[int, int] | None) -> bool:
    """True when ``window`` (start hour, end hour; end exclusive; may wrap midnight) is open.

    No window, or no known offset, means always open (unknown zones are not held back).
    """
    if window is None or utc_offset_min is None:
        return True
    start, end = window
    if start == end:
        return True
    hour = local_hour(now, utc_offset_min)
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def next_open(now: float, utc_offset_min: int | None, window: tuple[int, int] | None) -> float:
    """The earliest time >= ``now`` at which the window is open."""
    if in_window(now, utc_offset_min, window):
        return now
    assert window is not None and utc_offset_min is not None
    hour = local_hour(now, utc_offset_min)
    wait_h = (window[0] - hour) % 24.0
    return now + wait_h * 3600.0


def is_ipv4(address: str) -> bool:
    """True for an IPv4 literal."""
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def allowed_routes(
    pools: Mapping[str, PoolSpec],
    routes: Sequence[RouteConstraint],
    tenant: str,
    lane: Lane,
) -> dict[str, tuple[str, ...]]:
    """Pool -> source IPs this tenant's ``lane`` mail may use, in pool order.

    The most specific constraint wins (tenant + lane over tenant alone); with none, every
    pool and IP is allowed. ``dedicated_only`` drops shared pools, ``ipv4_only`` drops IPv6
    source addresses (and pools left without any).
    """
    chosen: RouteConstraint | None = None
    for route in routes:
        if route.tenant != tenant:
            continue
        if route.lane == lane:
            chosen = route
            break
        if route.lane is None and chosen is None:
            chosen = route
    out: dict[str, tuple[str, ...]] = {}
    for name, pool in pools.items():
        if chosen is not None:
            if chosen.pools and name not in chosen.pools:
                continue
            if chosen.dedicated_only and not pool.dedicated:
                continue
        ips = pool.source_ips
        if chosen is not None and chosen.ipv4_only:
            ips = tuple(ip for ip in ips if is_ipv4(ip))
        if ips:
            out[name] = ips
    return out
