"""Replay: re-send a recorded arrival stream through the simulation under another policy.

Owns ``arrivals_from_events`` (the arrival stream of recorded traffic: the ``enqueued`` rows,
or for imported logs without them the first attempt of each message, with tenant, lane,
provider, sending domain, campaign and recipient) and ``replay`` (run ``sim.world.World``
with the policy FILE and the provider models of ``fixtures/models`` on exactly those
arrivals; write ``events.parquet`` + ``summary.json`` like ``sim run``).

How: the world is built on a scenario made from the recording (one zero-rate stream per
tenant x sending domain x lane x campaign, an audience of one entry per recorded message),
then its traffic generator is swapped for ``RecordedTraffic`` and its audience for one
that answers the recorded recipient addresses (``AudienceTable.addresses``, so the models decide
bounces and complaints as they did). Arrivals enter at the start of their ``step_s`` slice,
as in every simulated run. Without an explicit lab, a recording of one simulated scenario
(its rows name it) replays on that scenario's lab, so pools and routes are the recorded ones;
anything else on ``fixtures/lab.toml``. The policy FILE is the only policy: the scheduler's
params and the ``policy_version`` of every row come from it. Must not touch the world's code, the models or the warehouse
(callers hand in frames).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.policy.types import LANES
from sim.audience import AudienceTable
from sim.calib_data import RESULT_EVENTS, to_epoch
from sim.scenario import SCENARIOS_DIR, Audience, Scenario, Stream
from sim.traffic import Batch

DEFAULT_LAB = SCENARIOS_DIR.parent / "lab.toml"
KEY = ["source", "run_id", "message_id"]


def arrivals_from_events(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per recorded message: ts, tenant, lane, provider, sending_domain, campaign,
    recipient (sorted by ts, then source / run / message id). ``InputError`` if none."""
    f = to_epoch(frame).filter(pl.col("message_id").is_not_null()).with_columns(
        pl.col("source").fill_null(""), pl.col("run_id").fill_null(""))
    is_first = pl.col("event").is_in(RESULT_EVENTS) | (pl.col("event") == "attempt")
    out = (
        f.sort("ts", maintain_order=True)
        .group_by(KEY, maintain_order=True)
        .agg(
            pl.col("ts").filter(pl.col("event") == "enqueued").first().alias("enq"),
            pl.col("ts").filter(is_first).first().alias("first"),
            pl.col("enqueued_ts").drop_nulls().first().alias("enq_col"),
            *[pl.col(c).drop_nulls().first().alias(c) for c in
              ("tenant", "lane", "provider", "sending_domain", "campaign", "recipient")],
        )
        .with_columns(pl.coalesce("enq", "enq_col", "first").alias("ts"))
        .filter(pl.col("ts").is_not_null())
        .sort(["ts", *KEY])
    )
    if out.is_empty():
        raise InputError("no recorded arrivals: the source has no enqueued events or attempts")
    return out.select("ts", *KEY, "tenant", "lane", "provider", "sending_domain", "campaign",
                      "recipient")


def recorded_lab(frame: pl.DataFrame) -> Path | None:
    """The lab of the one simulated scenario ``frame`` was recorded from, if it names one
    that still resolves (``fixtures/scenarios``); else None."""
    from engine.errors import ConfigError
    from sim.scenario import load_scenario

    if "scenario" not in frame.columns:
        return None
    names = frame["scenario"].drop_nulls().unique().to_list()
    if len(names) != 1 or not names[0] or "/" in names[0] or names[0] == "replay":
        return None
    try:
        return load_scenario(names[0]).lab
    except ConfigError:
        return None


@dataclass(slots=True)
class RecordedTraffic:
    """Stands in for ``sim.traffic.Traffic``: the recorded arrivals, slice by slice."""

    rel: np.ndarray  # arrival time of each message, seconds since the run's start
    stream: np.ndarray  # stream index of each message

    def slice(self, t0: float, t1: float) -> list[Batch]:
        lo, hi = np.searchsorted(self.rel, [t0, t1], side="left")
        if hi <= lo:
            return []
        idx = np.arange(lo, hi, dtype=np.int64)
        streams = self.stream[lo:hi]
        return [Batch(int(s), t0, idx[streams == s]) for s in np.unique(streams).tolist()]


def _audience(arr: pl.DataFrame, providers: tuple[str, ...], domains: dict[str, str]
              ) -> AudienceTable:
    """The recorded recipients, one per message, answered verbatim."""
    index = {p: k for k, p in enumerate(providers)}
    prov = np.array([index[p] for p in arr["provider"]], dtype=np.int16)
    addrs = tuple(r if r else f"u{i}@{domains[p]}"
                  for i, (r, p) in enumerate(zip(arr["recipient"], arr["provider"], strict=True)))
    return AudienceTable(providers=providers, domains=tuple(domains[p] for p in providers),
                         provider=prov, kind=np.zeros(arr.height, dtype=np.int8),
                         dies_at=np.full(arr.height, np.inf), addresses=addrs)


def replay(frame: pl.DataFrame, policy: Path, out: Path | None = None, *, seed: int = 1,
           lab: Path | None = None, step_s: float = 60.0, tail_s: float = 6 * 3600.0,
           source: str = "recorded traffic", ip_age_days: dict[str, float] | None = None
           ) -> dict[str, Any]:
    """Re-send the recorded arrivals of ``frame`` under ``policy``; returns the summary and,
    with ``out``, writes ``events.parquet`` and ``summary.json`` there.

    Raises ``InputError`` for unusable recordings and ``ConfigError`` for bad lab / policy."""
    from engine.eventio import write_events
    from engine.profiles import load_profiles
    from sim.providers import load_params
    from sim.run import summarise
    from sim.world import World

    if step_s <= 0:
        raise InputError(f"--step must be > 0, got {step_s}")
    if not policy.is_file():
        raise InputError(f"--policy: file not found: {policy}")
    arr = arrivals_from_events(frame)
    known = set(load_profiles())
    arr = arr.with_columns(
        pl.when(pl.col("provider").is_in(sorted(known))).then(pl.col("provider"))
        .otherwise(pl.lit("generic")).alias("provider"),
        pl.col("lane").fill_null("lifecycle"), pl.col("campaign").fill_null("replay"))
    bad_lanes = sorted(set(arr["lane"]) - set(LANES))
    if bad_lanes:
        raise InputError(f"recorded lanes not known to the policy core: {', '.join(bad_lanes)}")
    for col in ("tenant", "sending_domain"):
        if arr[col].null_count():
            raise InputError(f"{arr[col].null_count()} recorded messages have no {col}")
    t_first = float(arr["ts"].min())  # type: ignore[arg-type]
    start = math.floor(t_first / step_s) * step_s
    rel = arr["ts"].to_numpy() - start
    duration = float(rel.max()) + step_s + tail_s
    groups = arr.select("tenant", "sending_domain", "lane", "campaign").unique(
        maintain_order=True)
    gid = {tuple(r): k for k, r in enumerate(groups.iter_rows())}
    stream = np.array([gid[tuple(r)] for r in arr.select(
        "tenant", "sending_domain", "lane", "campaign").iter_rows()], dtype=np.int64)
    streams = tuple(Stream(kind="transactional", tenant=t, sending_domain=d, lane=ln,
                           rate_per_hour=0.0, campaign=c) for t, d, ln, c in groups.iter_rows())
    providers = tuple(sorted(set(arr["provider"])))
    scenario = Scenario(
        name="replay", file=str(policy), description=f"replay of {source}",
        lab=lab or recorded_lab(frame) or DEFAULT_LAB, policy=policy, start=start, duration_s=duration, step_s=step_s,
        audience=Audience(size=arr.height, mix=dict.fromkeys(providers, 1.0)),
        streams=streams, ip_age_days=ip_age_days or {})
    world = World(scenario, seed, run_id=f"replay-{seed}")
    domains = {p: world.models[p].params.domains[0] if world.models[p].params.domains
               else f"{p}.example" for p in providers}
    for p in providers:
        load_params(p)  # a bad model file fails here with its ConfigError
    world.audience = _audience(arr, providers, domains)
    world.traffic = RecordedTraffic(rel=rel, stream=stream)
    events = world.run()
    summary = summarise(world)
    summary["replay"] = {"source": source, "policy": str(policy), "arrivals": arr.height,
                         "start": start, "step_s": step_s, "tail_s": tail_s}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_events(events, out / "events.parquet")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary
