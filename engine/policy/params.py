"""Parameters of a sending policy, as the pure core consumes them.

These frozen dataclasses are the contract between config-as-code (``engine.config``,
pydantic, loaded from TOML and layered defaults < provider < domain < override) and the
policy core. The config layer validates and resolves; the core only reads these.
Every duration is in seconds, every rate in messages per second unless named otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.policy.types import Lane, ProviderProfile, Shaping


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrySpec:
    """Retry schedule: the delay before attempt n+1 is ``delays_s[min(n-1, len-1)]``.

    ``jitter`` spreads each delay uniformly by +/- that fraction. No retry is scheduled
    past the lane's TTL; the message then expires.
    """

    delays_s: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    jitter: float = 0.2
    max_attempts: int = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class LaneSpec:
    """One lane by intent: its share of capacity and its lifetime rules.

    ``weight`` splits capacity between busy lanes; ``reserved_share`` is held for the
    lane even when others have a backlog; ``max_wait_s`` is the lane's time-to-first-
    attempt budget the scheduler protects.
    """

    name: Lane
    weight: float
    reserved_share: float = 0.0
    ttl_s: float = 72 * 3600.0
    max_wait_s: float = 3600.0
    retry: RetrySpec = field(default_factory=RetrySpec)
    send_window: tuple[int, int] | None = None  # (start hour, end hour) recipient-local


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketSpec:
    """A token bucket: ``rate`` tokens per second, holding at most ``burst``."""

    rate: float
    burst: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSpec:
    """Breaker with slow start per pool x provider (defaults from Amazon SES thresholds).

    Rates are measured over ``window_s`` once at least ``min_volume`` messages were
    sent. Crossing a *review* threshold sends the pair to slow start; crossing a *pause*
    threshold opens the breaker for ``open_s`` seconds. Slow start begins at
    ``slow_start_fraction`` of the shaped rate and grows by ``additive_increase`` of the
    shaped rate per clean ``step_s``; every deferral burst multiplies it by
    ``multiplicative_decrease`` (AIMD).
    """

    window_s: float = 3600.0
    min_volume: int = 200
    bounce_review: float = 0.05
    bounce_pause: float = 0.10
    complaint_review: float = 0.001
    complaint_pause: float = 0.005
    deferral_review: float = 0.20
    deferral_pause: float = 0.50
    open_s: float = 1800.0
    slow_start_fraction: float = 0.1
    additive_increase: float = 0.1
    multiplicative_decrease: float = 0.5
    step_s: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AutomationSpec:
    """How response-driven automation recovers (added for the core; all optional).

    After a rule's effect has held for its ``duration_s`` the pool x provider ramps back
    by ``recovery_step`` of the shaped rate every ``recovery_step_s`` (additive increase,
    never a cliff). ``pause_pool_s`` is the suspension used for a ``pause_pool`` verdict
    whose rule names no effect. Retries deferred by a suspension are spread uniformly
    over ``resume_spread_s`` after it ends, so no standing wave forms.
    """

    recovery_step: float = 0.1
    recovery_step_s: float = 300.0
    default_duration_s: float = 3600.0
    pause_pool_s: float = 900.0
    resume_spread_s: float = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupPlan:
    """Daily caps per provider per IP for a new IP, by day of warmup (day 0 first).

    ``caps`` maps a provider name (or ``"*"`` for any other) to the cap of each day;
    after the last day the IP is warm. ``jitter`` randomises each day's cap by +/- that
    fraction. ``lane_order`` admits lanes in that order while capacity is short.
    """

    name: str
    caps: dict[str, tuple[int, ...]]
    jitter: float = 0.1
    lane_order: tuple[Lane, ...] = ("transactional", "lifecycle", "prospecting")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSpec:
    """An IP pool: its source addresses, whether dedicated, and its warmup."""

    name: str
    source_ips: tuple[str, ...]
    dedicated: bool = True
    warmup: str | None = None  # WarmupPlan name
    warmup_start: float | None = None  # epoch seconds of warmup day 0
    overflow_to: str | None = None  # a warm pool for over-cap traffic


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConstraint:
    """Where a tenant's (and optionally a lane's) mail may go."""

    tenant: str
    lane: Lane | None = None
    pools: tuple[str, ...] = ()
    dedicated_only: bool = False
    ipv4_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyParams:
    """Everything the ``Scheduler`` decides with, resolved and validated."""

    version: str
    lanes: dict[Lane, LaneSpec]
    pools: dict[str, PoolSpec]
    providers: dict[str, ProviderProfile]
    shaping: dict[tuple[str, str], Shaping] = field(default_factory=dict)  # (pool, provider)
    domain_buckets: dict[str, BucketSpec] = field(default_factory=dict)  # sending domain
    tenant_buckets: dict[str, BucketSpec] = field(default_factory=dict)  # tenant
    breaker: BreakerSpec = field(default_factory=BreakerSpec)
    warmups: dict[str, WarmupPlan] = field(default_factory=dict)
    routes: tuple[RouteConstraint, ...] = ()
    automation: AutomationSpec = field(default_factory=AutomationSpec)
