"""The loaded lab: validated tables plus resolution into the policy core's parameters.

Owns ``LabConfig`` (what ``load_config`` returns) and how it resolves into
``engine.policy.params.PolicyParams`` and per pool x provider ``Shaping``. It holds
already-validated models: reading files and reporting problems is ``engine.config.loader``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.config.models import (
    DomainModel,
    PolicyModel,
    PoolModel,
    ServeModel,
    ShapingModel,
    ShapingPatch,
    TenantModel,
)
from engine.config.shaping import Layer, ResolvedShaping, builtin_layer, layer_shaping
from engine.errors import InputError
from engine.policy.params import (
    AutomationSpec,
    BreakerSpec,
    BucketSpec,
    LaneSpec,
    PolicyParams,
    PoolSpec,
    RetrySpec,
    RouteConstraint,
    WarmupPlan,
)
from engine.policy.types import LANES, ProviderProfile, Shaping


@dataclass(frozen=True, slots=True)
class Route:
    """Where mail for ``domain`` goes: ``host:port`` or DNS MX lookup (``mx``)."""

    domain: str
    host: str | None = None
    port: int | None = None
    mx: bool = False
    pools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy file as loaded: where it came from and its validated model."""

    file: str
    model: PolicyModel


@dataclass(frozen=True)
class LabConfig:
    """A validated lab config. Build it with ``engine.config.load_config``."""

    file: str
    name: str
    tenants: Mapping[str, TenantModel]
    domains: Mapping[str, DomainModel]
    pools: Mapping[str, PoolModel]
    routes: Mapping[str, Route]
    shaping: ShapingModel
    policies: Mapping[str, LoadedPolicy]  # by file as displayed
    pool_policy: Mapping[str, str]  # pool -> policy file
    default_policy: str | None
    profiles: Mapping[str, ProviderProfile] = field(default_factory=dict)
    serve: ServeModel = field(default_factory=ServeModel)  # ``[serve]``: listeners

    # --- lookups ------------------------------------------------------------------------

    def policy_for(self, pool: str | None = None) -> LoadedPolicy:
        """The policy ``pool`` runs (the lab default for ``None``). Raises ``InputError``."""
        if pool is None:
            if self.default_policy is None:
                raise InputError(f"{self.file}: no default policy: name a pool")
            return self.policies[self.default_policy]
        if pool not in self.pools:
            raise InputError(f"unknown pool {pool!r} (known: {', '.join(sorted(self.pools))})")
        return self.policies[self.pool_policy[pool]]

    def route_for(self, domain: str) -> Route | None:
        """The route of a recipient domain: exact, then longest ``*.suffix``, then ``*``."""
        domain = domain.lower().rstrip(".")
        if domain in self.routes:
            return self.routes[domain]
        labels = domain.split(".")
        for i in range(1, len(labels)):
            wildcard = "*." + ".".join(labels[i:])
            if wildcard in self.routes:
                return self.routes[wildcard]
        return self.routes.get("*")

    def summary(self) -> str:
        """One line: how many of each thing the lab holds."""
        lanes = {lane for p in self.policies.values() for lane in p.model.lanes}
        versions = ", ".join(sorted(p.model.version for p in self.policies.values()))
        return (
            f"{self.file}: ok: {len(self.tenants)} tenants, {len(self.domains)} domains, "
            f"{len(self.pools)} pools, {len(lanes)} lanes, {len(self.policies)} policies "
            f"({versions}), {len(self.routes)} routes"
        )

    # --- shaping ------------------------------------------------------------------------

    def shaping_layers(
        self,
        pool: str,
        provider: str,
        domain: str | None = None,
        profiles: Mapping[str, ProviderProfile] | None = None,
    ) -> ResolvedShaping:
        """Shaping for ``pool`` sending to ``provider`` (and recipient ``domain``), by layer.

        Order, lowest first: builtin < policy:default < lab:default < provider <
        policy:domain < lab:domain < overrides ``pool.*`` < ``*.provider`` <
        ``pool.provider`` (policy then lab at each step). Raises ``InputError`` for an
        unknown pool.
        """
        policy = self.policy_for(pool).model
        profiles = self.profiles if profiles is None else profiles
        layers: list[Layer] = [builtin_layer()]
        sources = (("policy", policy.shaping), ("lab", self.shaping))

        def add(name: str, patch: ShapingPatch | None) -> None:
            if patch is not None and patch.fields_set():
                layers.append(Layer(name, patch.fields_set()))

        for origin, model in sources:
            add(f"{origin}:default", model.default)
        profile = profiles.get(provider)
        if profile is not None:
            layers.append(Layer(f"provider:{provider}", provider_fields(profile.shaping)))
        if domain is not None:
            domain = domain.lower().rstrip(".")
            for origin, model in sources:
                add(f"{origin}:domain:{domain}", model.domain.get(domain))
        for key in (f"{pool}.*", f"*.{provider}", f"{pool}.{provider}"):
            for origin, model in sources:
                add(f"{origin}:override:{key}", model.override.get(key))
        return layer_shaping(layers)

    def resolved_shaping(self, pool: str, provider: str, domain: str | None = None) -> Shaping:
        """The effective ``Shaping`` of ``pool`` x ``provider`` (x recipient ``domain``)."""
        return self.shaping_layers(pool, provider, domain).shaping

    # --- the core's parameters ----------------------------------------------------------

    def policy_params(
        self,
        pool: str | None = None,
        profiles: Mapping[str, ProviderProfile] | None = None,
    ) -> PolicyParams:
        """Resolve the policy ``pool`` runs (the lab default for ``None``) into ``PolicyParams``.

        ``pools`` holds every pool running that policy plus their overflow pools;
        ``shaping`` every such pool x provider of ``profiles`` (default: those given at
        load). Raises ``InputError`` for an unknown pool.
        """
        loaded = self.policy_for(pool)
        policy = loaded.model
        profiles = dict(self.profiles if profiles is None else profiles)
        names = [p for p in self.pools if self.policies[self.pool_policy[p]] is loaded]
        if pool is not None and pool not in names:  # pragma: no cover - policy_for agrees
            names.append(pool)
        queue = list(names)
        while queue:
            target = self.pools[queue.pop()].overflow
            if target is not None and target not in names:
                names.append(target)
                queue.append(target)
        pools = {name: self._pool_spec(name) for name in names}
        shaping = {
            (p, provider): self.resolved_shaping_with(p, provider, profiles)
            for p in names
            for provider in sorted(profiles)
        }
        return PolicyParams(
            version=policy.version,
            lanes={
                lane: LaneSpec(
                    name=lane,
                    weight=spec.weight,
                    reserved_share=spec.reserved_share,
                    ttl_s=spec.ttl,
                    max_wait_s=spec.max_wait,
                    retry=RetrySpec(
                        delays_s=tuple(spec.retry.delays),
                        jitter=spec.retry.jitter,
                        max_attempts=spec.retry.max_attempts,
                    ),
                    send_window=(
                        (spec.send_window[0], spec.send_window[1]) if spec.send_window else None
                    ),
                )
                for lane in LANES
                if (spec := policy.lanes.get(lane)) is not None
            },
            pools=pools,
            providers=profiles,
            shaping=shaping,
            domain_buckets={
                d: BucketSpec(rate=m.limit.rate, burst=m.limit.burst)
                for d, m in self.domains.items()
                if m.limit is not None
            },
            tenant_buckets={
                t: BucketSpec(rate=m.limit.rate, burst=m.limit.burst)
                for t, m in self.tenants.items()
                if m.limit is not None
            },
            breaker=BreakerSpec(
                window_s=policy.breaker.window,
                min_volume=policy.breaker.min_volume,
                bounce_review=policy.breaker.bounce_review,
                bounce_pause=policy.breaker.bounce_pause,
                complaint_review=policy.breaker.complaint_review,
                complaint_pause=policy.breaker.complaint_pause,
                deferral_review=policy.breaker.deferral_review,
                deferral_pause=policy.breaker.deferral_pause,
                open_s=policy.breaker.open,
                slow_start_fraction=policy.breaker.slow_start_fraction,
                additive_increase=policy.breaker.additive_increase,
                multiplicative_decrease=policy.breaker.multiplicative_decrease,
                step_s=policy.breaker.step,
            ),
            automation=AutomationSpec(
                recovery_step=policy.automation.recovery_step,
                recovery_step_s=policy.automation.recovery_step_interval,
                default_duration_s=policy.automation.default_duration,
                pause_pool_s=policy.automation.pause_pool,
                resume_spread_s=policy.automation.resume_spread,
            ),
            warmups={
                name: WarmupPlan(
                    name=name,
                    caps={k: tuple(v) for k, v in plan.caps.items()},
                    jitter=plan.jitter,
                    lane_order=tuple(plan.lane_order),
                )
                for name, plan in policy.warmup.items()
            },
            routes=self._route_constraints(),
        )

    def resolved_shaping_with(
        self, pool: str, provider: str, profiles: Mapping[str, ProviderProfile]
    ) -> Shaping:
        """``resolved_shaping`` with an explicit set of provider profiles."""
        return self.shaping_layers(pool, provider, None, profiles).shaping

    def _pool_spec(self, name: str) -> PoolSpec:
        pool = self.pools[name]
        plan = pool.warmup
        if plan is None and pool.warmup_start is not None:
            plan = self.policies[self.pool_policy[name]].model.warmup_default
        start = None
        if pool.warmup_start is not None:
            midnight = dt.datetime.combine(pool.warmup_start, dt.time(), tzinfo=dt.UTC)
            start = midnight.timestamp()
        return PoolSpec(
            name=name,
            source_ips=tuple(pool.source_ips),
            dedicated=pool.dedicated,
            warmup=plan if start is not None else None,
            warmup_start=start,
            overflow_to=pool.overflow,
        )

    def _route_constraints(self) -> tuple[RouteConstraint, ...]:
        out: list[RouteConstraint] = []
        for tenant, model in self.tenants.items():
            out.append(
                RouteConstraint(
                    tenant=tenant,
                    pools=tuple(model.route.pools),
                    dedicated_only=model.route.dedicated_only,
                    ipv4_only=model.route.ipv4_only,
                )
            )
            for lane, rc in model.lane_routes.items():
                out.append(
                    RouteConstraint(
                        tenant=tenant,
                        lane=lane,
                        pools=tuple(rc.pools),
                        dedicated_only=rc.dedicated_only,
                        ipv4_only=rc.ipv4_only,
                    )
                )
        return tuple(out)


def provider_fields(shaping: Shaping) -> dict[str, object]:
    """The fields a provider profile sets: those differing from the ``Shaping`` defaults.

    A profile is a complete ``Shaping``, so a value equal to the built-in default cannot
    be told from an unset one; such fields are left to the ``default`` layers below.
    """
    base = Shaping()
    return {
        name: getattr(shaping, name)
        for name in Shaping.__dataclass_fields__
        if getattr(shaping, name) != getattr(base, name)
    }
