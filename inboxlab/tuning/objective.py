"""What a tuning run maximises and which limits a candidate must keep.

Owns the per-run metrics read from a simulation's ``summary.json`` and ``events.parquet``
(``run_metrics``), the objective names, the constraint mini-language
(``complaint_rate<0.0008,tx_p95_accept_s<30,automation_suspensions<=baseline``; a bound is a
number, ``baseline`` or ``baseline*k``/``baseline+k``, where the baseline is the base policy's
own value) and the paired statistics (``paired_ci``, ``hourly_pairs``). Must not run
simulations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from engine.errors import InputError

METRICS = ("throughput", "delivered", "deferred", "bounced", "complaints", "complaint_rate",
           "deferral_rate", "bounce_rate", "tx_p95_accept_s", "automation_suspensions",
           "breaker_opened", "warmup_attainment", "expired")
"""Every metric a run reports; ``throughput`` is messages delivered over the run."""
MINIMISE = frozenset({"deferred", "bounced", "complaints", "complaint_rate", "deferral_rate",
                      "bounce_rate", "tx_p95_accept_s", "automation_suspensions",
                      "breaker_opened", "expired"})
HOURLY = {"throughput": "delivered", "delivered": "delivered", "deferred": "deferred",
          "bounced": "bounced", "complaints": "complaint"}
"""Objectives that also have a per-hour paired comparison (metric -> event name)."""

_CON = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|<|>)\s*(baseline(?:\s*[*+]\s*[-0-9.e]+)?|"
                  r"[-+0-9.e]+)\s*$")


@dataclass(frozen=True, slots=True)
class Constraint:
    """``metric op bound``; ``bound`` relative to the baseline when ``relative``."""

    text: str
    metric: str
    op: str
    value: float
    relative: str = ""  # "", "*" or "+"

    def bound(self, baseline: float | None) -> float:
        if not self.relative:
            return self.value
        if baseline is None:
            raise InputError(f"constraint {self.text!r} needs the baseline's value")
        return baseline * self.value if self.relative == "*" else baseline + self.value

    def holds(self, value: float, baseline: float | None) -> bool:
        b = self.bound(baseline)
        return {"<": value < b, "<=": value <= b, ">": value > b, ">=": value >= b}[self.op]


def parse_constraints(text: str) -> list[Constraint]:
    """Parse a comma-separated list; raises ``InputError`` naming the bad item."""
    out = []
    for item in (t for t in text.split(",") if t.strip()):
        m = _CON.match(item)
        if not m:
            raise InputError(f"--constraints {item.strip()!r}: expected METRIC<|<=|>|>=VALUE "
                             "(VALUE a number, baseline, baseline*k or baseline+k)")
        metric, op, bound = m.groups()
        if metric not in METRICS:
            raise InputError(f"--constraints {item.strip()!r}: unknown metric {metric!r} "
                             f"(known: {', '.join(METRICS)})")
        rel, value = "", 1.0
        if bound.startswith("baseline"):
            rest = bound[len("baseline"):].strip()
            if rest:
                rel = rest[0]
                value = _number(rest[1:].strip(), item)
            else:
                rel, value = "*", 1.0
        else:
            value = _number(bound, item)
        out.append(Constraint(item.strip(), metric, op, value, rel))
    return out


def _number(text: str, item: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--constraints {item.strip()!r}: {text!r} is not a number") from None


def check_objective(name: str) -> str:
    if name not in METRICS:
        raise InputError(f"--objective {name!r}: unknown (known: {', '.join(METRICS)})")
    return name


def run_metrics(summary: dict[str, Any], events: Path | None) -> dict[str, float]:
    """The metrics of one run from its summary (and its events for automation suspensions)."""
    delivered = float(summary["delivered"])
    deferred = float(summary["deferred"])
    bounced = float(summary["bounced"])
    outcomes = delivered + deferred + bounced
    tx = summary.get("time_to_accept", {}).get("transactional", {})
    suspensions = float(summary["transitions"].get("automation", 0))
    if events is not None and events.is_file():
        ev = pl.read_parquet(events, columns=["event", "state"])
        suspensions = float(ev.filter((pl.col("event") == "automation")
                                      & (pl.col("state") == "suspended")).height)
    attain = summary.get("warmup", {}).get("attainment")
    return {
        "throughput": delivered, "delivered": delivered, "deferred": deferred,
        "bounced": bounced, "complaints": float(summary["complaints"]),
        "complaint_rate": float(summary["complaint_rate"]),
        "deferral_rate": round(deferred / outcomes, 6) if outcomes else 0.0,
        "bounce_rate": round(bounced / (delivered + bounced), 6) if delivered + bounced else 0.0,
        "tx_p95_accept_s": float(tx.get("p95_s", 0.0)),
        "automation_suspensions": suspensions,
        "breaker_opened": float(summary.get("breaker_opened") or 0),
        "warmup_attainment": float(attain) if attain is not None else 0.0,
        "expired": float(summary["expired"]),
    }


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """The mean of every metric over replicate runs."""
    return {m: round(float(np.mean([r[m] for r in runs])), 6) for m in runs[0]}


def paired_ci(diffs: list[float] | np.ndarray) -> dict[str, Any]:
    """Mean of paired differences and its 95 % Student-t interval (None when n < 2)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = int(d.size)
    mean = float(d.mean()) if n else 0.0
    if n < 2:
        return {"n": n, "mean_diff": mean, "ci95": None}
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return {"n": n, "mean_diff": mean, "ci95": [mean, mean]}
    lo, hi = stats.t.interval(0.95, n - 1, loc=mean, scale=sd / n ** 0.5)
    return {"n": n, "mean_diff": mean, "ci95": [float(lo), float(hi)]}


def hourly_pairs(base_events: Path, cand_events: Path, event: str) -> np.ndarray:
    """Per-hour counts of ``event`` in two runs on common random numbers: candidate - base,
    one difference per hour either run saw (an hour with none counts 0)."""
    def counts(p: Path) -> pl.DataFrame:
        ev = pl.read_parquet(p, columns=["ts", "event"])
        return (ev.filter(pl.col("event") == event)
                .group_by(pl.col("ts").dt.truncate("1h").alias("hour")).len())

    joined = counts(base_events).join(counts(cand_events), on="hour", how="full",
                                      coalesce=True, suffix="_c").fill_null(0)
    return (joined["len_c"].cast(pl.Float64) - joined["len"].cast(pl.Float64)).to_numpy()
