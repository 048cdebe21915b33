"""Paired comparison of two simulated runs of the same scenario (common random numbers).

Owns ``compare``: both runs' events are cut into the same hourly buckets; per metric
(deliveries, deferrals, bounces, complaints per hour; transactional time-to-accept p95)
the paired differences B - A get a mean and a 95 % Student-t confidence interval (scipy).
Must not write anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import InputError

METRICS = ("delivered", "deferred", "bounced", "complaint")


def _hourly(folder: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    path = folder / "events.parquet"
    if not path.is_file():
        raise InputError(f"{folder}: no events.parquet (not a sim run folder)")
    from engine.eventio import read_events

    ev = read_events(path)
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    hour = pl.col("ts").dt.truncate("1h").alias("hour")
    counts = (ev.filter(pl.col("event").is_in(METRICS))
              .group_by(hour, "event").len()
              .pivot(on="event", index="hour", values="len"))
    tta = (ev.filter((pl.col("event") == "delivered") & (pl.col("lane") == "transactional"))
           .with_columns(((pl.col("ts") - pl.col("enqueued_ts")).dt.total_microseconds()
                          / 1e6).alias("tta"))
           .group_by(hour).agg(pl.col("tta").quantile(0.95).alias("tx_p95_s")))
    frame = counts.join(tta, on="hour", how="full", coalesce=True)
    return frame, summary


def compare(dir_a: Path, dir_b: Path) -> dict[str, Any]:
    """Paired hourly differences B - A with 95 % CIs; raises ``InputError``."""
    from scipy import stats

    a, sa = _hourly(dir_a)
    b, sb = _hourly(dir_b)
    if sa.get("scenario") and sb.get("scenario") and sa["scenario"] != sb["scenario"]:
        raise InputError(f"runs of different scenarios: {sa['scenario']} vs {sb['scenario']}")
    joined = a.join(b, on="hour", how="full", coalesce=True, suffix="_b").sort("hour")
    out: dict[str, Any] = {"a": str(dir_a), "b": str(dir_b), "hours": joined.height,
                           "metrics": {}}
    for m in (*METRICS, "tx_p95_s"):
        if m not in joined.columns and f"{m}_b" not in joined.columns:
            continue
        fill = 0 if m != "tx_p95_s" else None
        xa = joined[m] if m in joined.columns else pl.Series([fill] * joined.height)
        xb = joined[f"{m}_b"] if f"{m}_b" in joined.columns else pl.Series([fill] * joined.height)
        pairs = pl.DataFrame({"a": xa, "b": xb})
        pairs = pairs.fill_null(0) if fill == 0 else pairs.drop_nulls()
        d = (pairs["b"].cast(pl.Float64) - pairs["a"].cast(pl.Float64)).to_numpy()
        n = d.size
        mean = float(d.mean()) if n else 0.0
        if n > 1 and d.std(ddof=1) > 0:
            lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=d.std(ddof=1) / n ** 0.5)
        else:
            lo = hi = mean
        out["metrics"][m] = {"n": int(n), "total_a": float(pairs["a"].sum()),
                             "total_b": float(pairs["b"].sum()), "mean_diff": mean,
                             "ci95": [float(lo), float(hi)]}
    return out


def render(result: dict[str, Any]) -> str:
    """A small text table of ``compare``'s result."""
    lines = [f"A = {result['a']}", f"B = {result['b']}",
             f"{'metric':<12}{'total A':>12}{'total B':>12}{'mean B-A/h':>14}  95% CI"]
    for m, r in result["metrics"].items():
        lines.append(f"{m:<12}{r['total_a']:>12.1f}{r['total_b']:>12.1f}{r['mean_diff']:>14.2f}"
                     f"  [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]")
    return "\n".join(lines)
