"""One simulated run end to end: load, run the world, write ``events.parquet`` and
``summary.json``.

Owns ``summarise`` (the run's figures: per-provider counts and complaint rates,
time-to-accept percentiles per lane, breaker/automation transitions, warmup attainment,
deferral replies by code) and ``run_scenario``. Must not touch the world's internals
beyond reading its counters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.scenario import Scenario, load_scenario

if TYPE_CHECKING:
    from sim.world import World

DAY = 86400.0


def _warmup_capacity(world: World) -> int:
    """Sum of the warmup plans' daily caps over the run for every warming IP x provider
    that had traffic (what a perfectly filled warmup would have delivered)."""
    total = 0
    days = max(1, math.ceil(world.scenario.duration_s / DAY))
    providers = [p for p, c in world.counts.items() if c.get("messages")]
    for spec in world.params.pools.values():
        if spec.warmup is None or spec.warmup_start is None:
            continue
        plan = world.params.warmups[spec.warmup]
        first = int((world.start - spec.warmup_start) // DAY)
        for prov in providers:
            caps = plan.caps.get(prov, plan.caps.get("*", ()))
            for d in range(first, first + days):
                if 0 <= d < len(caps):
                    total += caps[d] * len(spec.source_ips)
    return total


def summarise(world: World) -> dict[str, Any]:
    """The figures of a finished run, JSON-ready and deterministic."""
    per: dict[str, dict[str, Any]] = {}
    tot: dict[str, int] = {}
    for prov in sorted(world.counts):
        c: dict[str, Any] = dict(sorted(world.counts[prov].items()))
        delivered = c.get("delivered", 0)
        c["complaint_rate"] = round(c.get("complaints", 0) / delivered, 6) if delivered else 0.0
        per[prov] = c
        for k, v in c.items():
            if k != "complaint_rate":
                tot[k] = tot.get(k, 0) + v
    tta = {}
    for lane, vals in sorted(world.tta.items()):
        a = np.asarray(vals)
        p50, p95, p99 = np.percentile(a, [50, 95, 99]) if a.size else (0.0, 0.0, 0.0)
        tta[lane] = {"n": int(a.size), "p50_s": round(float(p50), 3),
                     "p95_s": round(float(p95), 3), "p99_s": round(float(p99), 3)}
    cap = _warmup_capacity(world)
    delivered = tot.get("delivered", 0)
    return {
        "scenario": world.scenario.name,
        "run_id": world.run_id,
        "seed": world.seed,
        "policy_version": world.params.version,
        "scale": world.scenario.scale,
        "messages": tot.get("messages", 0),
        "delivered": delivered,
        "deferred": tot.get("deferred", 0),
        "bounced": tot.get("bounced", 0) + tot.get("async_bounces", 0),
        "expired": tot.get("expired", 0),
        "complaints": tot.get("complaints", 0),
        "complaint_rate": round(tot.get("complaints", 0) / delivered, 6) if delivered else 0.0,
        "trap_hits": tot.get("trap_hits", 0),
        "providers": per,
        "time_to_accept": tta,
        "transitions": dict(world.transitions),
        "breaker_opened": sum(1 for s in world.events.cols["state"] if s == "open")
        if world.events.enabled else None,
        "replies": dict(sorted(world.codes.items())),
        "warmup": {"delivered_on_warming_pools": world.warm_delivered,
                   "plan_capacity": cap,
                   "attainment": round(world.warm_delivered / cap, 6) if cap else None},
        "events": world.events.n,
        "wakeups": world.wakeups,
    }


def run_scenario(scenario: Scenario | str | Path, seed: int, out: Path | None = None, *,
                 policy: Path | None = None, scale: float | None = None,
                 keep_events: bool = True,
                 progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run a scenario; with ``out`` write ``events.parquet`` and ``summary.json`` there.
    Returns the summary. Raises ``ConfigError`` for bad scenario / lab / policy files."""
    from engine.eventio import write_events
    from sim.world import World

    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, scale=scale)
    sc = sc.with_policy(policy)
    world = World(sc, seed, keep_events=keep_events, progress=progress)
    frame = world.run()
    summary = summarise(world)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if keep_events:
            write_events(frame, out / "events.parquet")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
