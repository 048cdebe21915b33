"""Named metrics over the warehouse views: one function, ``metric(home, name, by, since)``.

Each metric is SQL over a view of ``views`` plus, where statistics need it, a little scipy:
latency percentiles, deferral code distributions with hints, reputation against the trailing
14-day baseline, warmup state with Wilson intervals and a projected safe daily volume, SLOs.

Owns: the metric registry, ``--by``/``--since`` validation (only whitelisted column names
ever reach SQL) and the warmup statistics. Must not touch: files or view definitions.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from engine.errors import InputError
from inboxlab.warehouse.query import connect, run
from inboxlab.warehouse.views import BY_COLUMNS, reputation_sql

# The seed's SLOs. Transactional p95 time-to-accept < 30 s is from the seed; the 99.9%
# enqueue availability objective is ours (the seed names the SLO, not its target).
SLO_ENQUEUE_AVAILABILITY = 0.999
SLO_TXN_P95_ACCEPT_S = 30.0
# Deferral rate a warming pool should stay under before its daily volume grows.
WARMUP_TARGET_DEFERRAL = 0.05
_Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    help: str
    default_by: tuple[str, ...]
    allowed_by: tuple[str, ...]
    run: Callable[[duckdb.DuckDBPyConnection, tuple[str, ...], str], pl.DataFrame]


def parse_since(since: str | None, con: duckdb.DuckDBPyConnection) -> str:
    """A SQL condition on ``ts`` for ``since``: an ISO date/time, or a duration (``30m``,
    ``24h``, ``7d``, ``2w``) counted back from the newest event in the warehouse."""
    if not since:
        return ""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", since)
    if m:
        amount, unit = int(m.group(1)), m.group(2)
        delta = {"m": timedelta(minutes=amount), "h": timedelta(hours=amount),
                 "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
        newest = run(con, "SELECT max(ts) AS t FROM events")["t"][0]
        if newest is None:
            return "false"
        start = newest - delta
    else:
        try:
            start = datetime.fromisoformat(since.strip())
        except ValueError as exc:
            raise InputError(
                f"--since {since!r}: expected an ISO date/time or a duration like 24h, 7d"
            ) from exc
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    return f"ts >= TIMESTAMPTZ '{start.astimezone(UTC).isoformat()}'"


def _and(*conds: str) -> str:
    parts = [c for c in conds if c]
    return ("WHERE " + " AND ".join(parts)) if parts else ""


def _group(by: tuple[str, ...]) -> tuple[str, str, str]:
    if not by:
        return "", "", ""
    cols = ", ".join(by)
    return cols + ", ", f"GROUP BY {cols}", f"ORDER BY {cols}"


def _latency(kind: str) -> Callable[[duckdb.DuckDBPyConnection, tuple[str, ...], str],
                                    pl.DataFrame]:
    def go(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str) -> pl.DataFrame:
        sel, group, order = _group(by)
        return run(con, f"""
SELECT {sel}n, q[1] AS p50_s, q[2] AS p95_s, q[3] AS p99_s, mean_s FROM (
  SELECT {sel}quantile_cont(seconds, [0.5, 0.95, 0.99]) AS q, avg(seconds) AS mean_s,
    count(*) AS n
  FROM latency_samples {_and(f"kind = '{kind}'", since)} {group}
) {order}""")
    return go


def _deferrals(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str) -> pl.DataFrame:
    sel, _, _ = _group(by)
    cols = ", ".join(by)
    part = f"PARTITION BY {cols}" if by else ""
    keys = (cols + ", " if by else "") + "enhanced_code, smtp_code, category"
    return run(con, f"""
SELECT {sel}enhanced_code, smtp_code, category, n,
  round(n / sum(n) OVER ({part}), 6) AS share, hint
FROM (
  SELECT {keys}, count(*) AS n, min(hint) AS hint
  FROM deferral_codes {_and(since)} GROUP BY {keys}
) ORDER BY {sel}n DESC, enhanced_code NULLS LAST, smtp_code NULLS LAST, category NULLS LAST""")


def _reputation(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str
                ) -> pl.DataFrame:
    # The baseline needs the 14 days before ``since`` too: filter after the window.
    frame = run(con, reputation_sql(by))
    if since:
        keep = run(con, f"SELECT min(ts) AS t FROM events {_and(since)}")["t"][0]
        if keep is None:
            return frame.clear()
        frame = frame.filter(pl.col("day") >= keep.date())
    return frame


def wilson(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (``(nan, nan)`` if n=0)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def project_safe_volume(volumes: list[float], rates: list[float],
                        target: float = WARMUP_TARGET_DEFERRAL) -> tuple[float, float, float]:
    """Fit deferral rate ~ daily volume (least squares) and return the volume at which the
    fit reaches ``target`` with the slope at its point estimate and at the ends of its 95%
    interval: ``(safe, safe_low, safe_high)``. Capped at twice the largest observed volume
    (never extrapolate a warmup further than one doubling); nan with fewer than 3 days."""
    from scipy import stats

    if len(volumes) < 3 or len(set(volumes)) < 2:
        return (math.nan, math.nan, math.nan)
    fit = stats.linregress(volumes, rates)
    cap = 2 * max(volumes)
    t = stats.t.ppf(0.975, len(volumes) - 2)

    def at(slope: float) -> float:
        if slope <= 0:
            return cap
        return float(min(cap, max(0.0, (target - fit.intercept) / slope)))

    return (at(fit.slope), at(fit.slope + t * fit.stderr), at(fit.slope - t * fit.stderr))


def _warmup(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str) -> pl.DataFrame:
    sel, _, _ = _group(by)
    daily = run(con, f"""
SELECT day, {sel}CAST(sum(attempts) AS BIGINT) AS attempts,
  CAST(sum(deferrals) AS BIGINT) AS deferrals, CAST(sum(delivered) AS BIGINT) AS delivered
FROM warmup_daily {_and(since.replace("ts >=", "day >=") if since else "")}
GROUP BY ALL ORDER BY {sel}day""")
    out: list[dict[str, object]] = []
    groups = daily.group_by(list(by), maintain_order=True) if by else [((), daily)]
    for key, part in groups:
        vols = [float(v) for v in part["attempts"]]
        rates = [d / a if a else 0.0 for d, a in zip(part["deferrals"], part["attempts"],
                                                     strict=True)]
        last = part.row(part.height - 1, named=True)
        lo, hi = wilson(int(last["deferrals"]), int(last["attempts"]))
        ok_volumes = [
            v for v, d in zip(vols, part["deferrals"], strict=True)
            if wilson(int(d), int(v))[1] <= WARMUP_TARGET_DEFERRAL
        ]
        safe, safe_lo, safe_hi = project_safe_volume(vols, rates)
        state = ("ramp" if hi <= WARMUP_TARGET_DEFERRAL
                 else "back_off" if lo > WARMUP_TARGET_DEFERRAL else "hold")
        row: dict[str, object] = dict(zip(by, key if isinstance(key, tuple) else (key,),
                                           strict=True))
        row.update(
            days=part.height, last_day=last["day"], last_attempts=int(last["attempts"]),
            last_deferral_rate=round(rates[-1], 6), ci_low=round(lo, 6), ci_high=round(hi, 6),
            state=state, max_ok_volume=max(ok_volumes) if ok_volumes else 0.0,
            projected_safe_daily=round(safe, 1), projected_low=round(safe_lo, 1),
            projected_high=round(safe_hi, 1),
        )
        out.append(row)
    if not out:
        return pl.DataFrame(schema={**{b: pl.Utf8 for b in by}, "days": pl.Int64})
    return pl.DataFrame(out)


def _slo(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str) -> pl.DataFrame:
    sel, group, order = _group(by)
    return run(con, f"""
SELECT {sel}'enqueue_availability' AS slo, CAST({SLO_ENQUEUE_AVAILABILITY} AS DOUBLE) AS objective,
  count(*) FILTER (WHERE coalesce(state, '') <> 'rejected') / nullif(count(*), 0) AS measured,
  count(*) AS samples,
  coalesce(measured >= objective, true) AS met
FROM events {_and("event = 'enqueued'", since)} {group}
UNION ALL BY NAME
SELECT {sel}'transactional_p95_accept_s' AS slo, CAST({SLO_TXN_P95_ACCEPT_S} AS DOUBLE) AS objective,
  quantile_cont(seconds, 0.95) AS measured, count(*) AS samples,
  coalesce(measured < objective, true) AS met
FROM latency_samples {_and("kind = 'accept'", "lane = 'transactional'", since)} {group}
{order + ", slo" if order else "ORDER BY slo"}""")


def _outcomes(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], since: str) -> pl.DataFrame:
    sel, group, order = _group(by)
    return run(con, f"""
SELECT {sel}
  count(*) FILTER (WHERE event = 'delivered') AS delivered,
  count(*) FILTER (WHERE event = 'deferred') AS deferred,
  count(*) FILTER (WHERE event = 'bounced') AS bounced,
  count(*) FILTER (WHERE event = 'expired') AS expired,
  count(*) FILTER (WHERE event = 'complaint') AS complaints,
  round(count(*) FILTER (WHERE event = 'deferred')
        / nullif(count(*) FILTER (WHERE event IN ('delivered', 'deferred', 'bounced')), 0), 6)
    AS deferral_rate
FROM events {_and("event IN ('delivered','deferred','bounced','expired','complaint')", since)}
{group} {order}""")


_DIMS = tuple(c for c in BY_COLUMNS if c != "day")
METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("time_to_first_attempt", "p50/p95/p99 seconds from enqueue to first attempt",
                   (), BY_COLUMNS, _latency("first_attempt")),
        MetricSpec("time_to_accept", "p50/p95/p99 seconds from enqueue to acceptance (250)",
                   (), BY_COLUMNS, _latency("accept")),
        MetricSpec("time_to_final", "p50/p95/p99 seconds from enqueue to final disposition",
                   (), BY_COLUMNS, _latency("final")),
        MetricSpec("deferral_codes", "deferral code distribution with hints",
                   ("provider",), BY_COLUMNS, _deferrals),
        MetricSpec("reputation", "daily bounce/complaint/trap rates vs trailing 14-day baseline",
                   ("sending_domain", "pool"), _DIMS, _reputation),
        MetricSpec("warmup", "warmup state, Wilson CI and projected safe daily volume",
                   ("pool", "provider"), ("pool", "provider", "sending_domain", "source",
                                          "run_id"), _warmup),
        MetricSpec("slo", "enqueue availability and transactional p95 time-to-accept < 30 s",
                   (), BY_COLUMNS, _slo),
        MetricSpec("outcomes", "counts of delivered/deferred/bounced/expired/complaints",
                   (), BY_COLUMNS, _outcomes),
    )
}


def parse_by(by: str | tuple[str, ...] | list[str] | None, spec: MetricSpec) -> tuple[str, ...]:
    """Validate ``--by`` against the metric's allowed columns (the only names reaching SQL)."""
    if by is None:
        return spec.default_by
    items = [b.strip() for b in by.split(",")] if isinstance(by, str) else [*by]
    items = [b for b in items if b]
    for item in items:
        if item not in spec.allowed_by:
            raise InputError(
                f"metric {spec.name}: cannot group by {item!r}; "
                f"choose from {', '.join(spec.allowed_by)}"
            )
    return tuple(dict.fromkeys(items))


def metric(home: str | os.PathLike[str] | None, name: str,
           by: str | tuple[str, ...] | list[str] | None = None, since: str | None = None,
           con: duckdb.DuckDBPyConnection | None = None) -> pl.DataFrame:
    """Compute metric ``name`` grouped by ``by`` over events since ``since``.

    Raises ``InputError`` for an unknown metric, a bad ``by`` or ``since``; ``QueryError``
    when the SQL fails."""
    spec = METRICS.get(name)
    if spec is None:
        raise InputError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    con = con if con is not None else connect(home)
    cols = parse_by(by, spec)
    return spec.run(con, cols, parse_since(since, con))
