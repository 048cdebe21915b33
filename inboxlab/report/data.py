"""The frames every dashboard page, report and notebook shows, computed over the warehouse.

Each function takes a DuckDB connection from ``inboxlab.warehouse.connect(home)`` and returns a
polars frame; all SQL runs over the warehouse views through the query layer (``query``/``run``/
``metric``), so these read exactly what ``inboxlab query`` and ``inboxlab metrics`` read.

Owns: page-level aggregations (deferral timelines, breaker/automation states, run summaries,
dead letters with redaction, promotion trail) and the empty-state hints. Must not touch: files,
view definitions, or its own DuckDB connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import polars as pl

from inboxlab.report.redact import redact_frame
from inboxlab.warehouse import metric, query
from inboxlab.warehouse.query import run

Con = duckdb.DuckDBPyConnection

# Subject classes of enhanced status codes, RFC 3463 section 3 (www.rfc-editor.org/rfc/rfc3463).
CODE_CLASSES = {
    "1": "X.1 addressing", "2": "X.2 mailbox", "3": "X.3 mail system",
    "4": "X.4 network/routing", "5": "X.5 protocol", "6": "X.6 content",
    "7": "X.7 security/policy",
}
FILTER_COLUMNS = ("sending_domain", "provider", "pool", "lane")

# What to run to fill each page (shown by empty states, dashboards and reports alike).
FILL_IMPORT = "inboxlab import postfix fixtures/logs/postfix-maillog.log --home {home}"
FILL_SIM = ("inboxlab sim run gmail-brownout --seed 1 --out var/runs/gmail-brownout-1 && "
            "inboxlab ingest var/runs/gmail-brownout-1 --home {home}")
FILL_LIVE = "inboxlab serve ... (live events are exported from the spool with inboxlab ingest)"
FILL_PROMOTION = ("promotion events are written when a policy rollout stage changes "
                  "(inboxlab policy promote, issue 7); until then this page stays empty")


def event_count(con: Con, where: str = "") -> int:
    sql = "SELECT count(*) AS n FROM events" + (f" WHERE {where}" if where else "")
    return int(query(None, sql, con=con)["n"][0])


def overview(con: Con) -> pl.DataFrame:
    """Events per source: count, runs, first and last timestamp."""
    return query(None, """
SELECT source, count(*) AS events, count(DISTINCT run_id) AS runs,
  min(ts) AS first_ts, max(ts) AS last_ts
FROM events GROUP BY source ORDER BY source""", con=con)


def deferral_timeline(con: Con, bucket: str = "hour") -> pl.DataFrame:
    """Per time bucket x source x provider: results, deferrals and the deferral rate."""
    if bucket not in ("minute", "hour", "day"):
        raise ValueError(f"bucket must be minute, hour or day, not {bucket!r}")
    return query(None, f"""
SELECT date_trunc('{bucket}', ts) AS t, source, coalesce(provider, '?') AS provider,
  count(*) AS results, count(*) FILTER (WHERE event = 'deferred') AS deferrals,
  round(count(*) FILTER (WHERE event = 'deferred') / count(*), 6) AS deferral_rate
FROM events WHERE event IN ('delivered', 'deferred', 'bounced')
GROUP BY ALL ORDER BY t, source, provider""", con=con)


def deferrals_by_class(con: Con) -> pl.DataFrame:
    """Deferrals per provider x enhanced-code subject class (RFC 3463) x category."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in CODE_CLASSES.items())
    return query(None, f"""
SELECT coalesce(provider, '?') AS provider,
  CASE split_part(enhanced_code, '.', 2) {cases}
    ELSE coalesce(CAST(smtp_code AS VARCHAR), 'no code') END AS code_class,
  coalesce(category, 'unclassified') AS category, count(*) AS deferrals
FROM deferral_codes GROUP BY ALL ORDER BY deferrals DESC, provider, code_class""", con=con)


def control_log(con: Con, kinds: Sequence[str] = ("breaker", "automation")) -> pl.DataFrame:
    """Every breaker/automation transition, oldest first."""
    names = ", ".join(f"'{k}'" for k in kinds if k in ("breaker", "automation", "incident"))
    return query(None, f"""
SELECT ts, event AS kind, source, run_id, coalesce(pool, '') AS pool,
  coalesce(provider, '') AS provider, state, reason, detail
FROM events WHERE event IN ({names}) ORDER BY ts, seq NULLS LAST""", con=con)


def control_states(con: Con) -> pl.DataFrame:
    """The latest breaker/automation state per source x run x kind x pool x provider."""
    return query(None, """
SELECT event AS kind, source, run_id, coalesce(pool, '') AS pool,
  coalesce(provider, '') AS provider, arg_max(state, ts) AS state,
  arg_max(reason, ts) AS reason, max(ts) AS since, count(*) AS transitions
FROM events WHERE event IN ('breaker', 'automation')
GROUP BY ALL ORDER BY kind, source, run_id, pool, provider""", con=con)


def warmup(con: Con) -> pl.DataFrame:
    """The ``warmup`` metric: state, Wilson CI and projected safe daily volume per pool x
    provider."""
    return metric(None, "warmup", by=("pool", "provider"), con=con)


def warmup_daily(con: Con) -> pl.DataFrame:
    return query(None, """
SELECT day, pool, provider, attempts, deferrals, delivered,
  round(deferrals / nullif(attempts, 0), 6) AS deferral_rate
FROM warmup_daily ORDER BY day, pool, provider""", con=con)


def filter_options(con: Con) -> dict[str, list[str]]:
    """Distinct values of each latency filter column."""
    out: dict[str, list[str]] = {}
    for col in FILTER_COLUMNS:
        frame = query(None, f"SELECT DISTINCT {col} AS v FROM latency_samples "
                            f"WHERE {col} IS NOT NULL ORDER BY v", con=con)
        out[col] = [str(v) for v in frame["v"]]
    return out


def _where(filters: Mapping[str, Sequence[str]] | None) -> tuple[str, list[object]]:
    conds: list[str] = []
    params: list[object] = []
    for col, values in (filters or {}).items():
        if col not in FILTER_COLUMNS:
            raise ValueError(f"cannot filter on {col!r}")
        if values:
            conds.append(f"{col} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
    return (" AND ".join(conds), params)


def latency(con: Con, filters: Mapping[str, Sequence[str]] | None = None,
            by: str | None = None) -> pl.DataFrame:
    """p50/p95/p99 seconds per latency kind (first_attempt, accept, final), optionally per
    ``by`` (``source`` or a filter column), over the samples matching ``filters``."""
    if by is not None and by not in (*FILTER_COLUMNS, "source"):
        raise ValueError(f"cannot group latency by {by!r}")
    cond, params = _where(filters)
    key = f"coalesce({by}, '?') AS {by}, " if by else ""
    return run(con, f"""
SELECT kind, {key}n, q[1] AS p50_s, q[2] AS p95_s, q[3] AS p99_s
FROM (SELECT kind, {key}count(*) AS n, quantile_cont(seconds, [0.5, 0.95, 0.99]) AS q
      FROM latency_samples {"WHERE " + cond if cond else ""} GROUP BY ALL)
ORDER BY kind{", " + by if by else ""}""", params or None)


def latency_samples(con: Con, filters: Mapping[str, Sequence[str]] | None = None,
                    limit: int = 50_000) -> pl.DataFrame:
    cond, params = _where(filters)
    return run(con, f"""
SELECT kind, source, provider, pool, lane, sending_domain, seconds FROM latency_samples
{"WHERE " + cond if cond else ""} ORDER BY kind, ts LIMIT {int(limit)}""", params or None)


def deferral_codes(con: Con) -> pl.DataFrame:
    """The ``deferral_codes`` metric per provider (codes, shares and hints)."""
    return metric(None, "deferral_codes", by=("provider",), con=con)


def reputation(con: Con) -> pl.DataFrame:
    """The ``reputation`` metric per sending domain x pool against the 14-day baseline."""
    return metric(None, "reputation", by=("sending_domain", "pool"), con=con)


def dead_letters(con: Con, limit: int = 500) -> pl.DataFrame:
    """Dead-lettered and expired messages, newest first, recipients and replies masked.
    Bodies are never stored in events, so none can leak here."""
    frame = query(None, f"""
SELECT ts, event, source, run_id, recipient, provider, pool, lane, attempt, smtp_code,
  enhanced_code, category, reason, response
FROM events WHERE event IN ('dead_lettered', 'expired')
ORDER BY ts DESC LIMIT {int(limit)}""", con=con)
    return redact_frame(frame)


def sim_runs(con: Con) -> pl.DataFrame:
    """One row per simulation run: run id, scenario, policy version, seed and outcomes."""
    return query(None, """
SELECT run_id, coalesce(min(scenario), '') AS scenario,
  coalesce(min(policy_version), '') AS policy_version, min(seed) AS seed,
  count(*) FILTER (WHERE event = 'enqueued') AS enqueued,
  count(*) FILTER (WHERE event = 'delivered') AS delivered,
  count(*) FILTER (WHERE event = 'deferred') AS deferred,
  count(*) FILTER (WHERE event = 'bounced') AS bounced,
  count(*) FILTER (WHERE event = 'complaint') AS complaints,
  count(*) FILTER (WHERE event = 'breaker') AS breaker_moves,
  round(count(*) FILTER (WHERE event = 'deferred')
    / nullif(count(*) FILTER (WHERE event IN ('delivered', 'deferred', 'bounced')), 0), 6)
    AS deferral_rate,
  round(count(*) FILTER (WHERE event = 'complaint')
    / nullif(count(*) FILTER (WHERE event = 'delivered'), 0), 6) AS complaint_rate
FROM events WHERE source = 'sim' GROUP BY run_id ORDER BY run_id""", con=con)


def by_source(con: Con) -> pl.DataFrame:
    """The ``outcomes`` metric side by side per source (sim, live, sandbox, import)."""
    return metric(None, "outcomes", by=("source",), con=con)


def policy_runs(con: Con, run_ids: Sequence[str] = ()) -> pl.DataFrame:
    """Outcomes per policy version (and run), optionally limited to ``run_ids``."""
    params: list[object] = list(run_ids)
    cond = f"AND run_id IN ({', '.join('?' for _ in run_ids)})" if run_ids else ""
    return run(con, f"""
SELECT coalesce(policy_version, '(none)') AS policy_version, source, run_id,
  count(*) FILTER (WHERE event = 'delivered') AS delivered,
  count(*) FILTER (WHERE event = 'deferred') AS deferred,
  count(*) FILTER (WHERE event = 'bounced') AS bounced,
  count(*) FILTER (WHERE event = 'complaint') AS complaints,
  round(count(*) FILTER (WHERE event = 'deferred')
    / nullif(count(*) FILTER (WHERE event IN ('delivered', 'deferred', 'bounced')), 0), 6)
    AS deferral_rate,
  round(count(*) FILTER (WHERE event = 'bounced')
    / nullif(count(*) FILTER (WHERE event IN ('delivered', 'bounced')), 0), 6) AS bounce_rate,
  round(count(*) FILTER (WHERE event = 'complaint')
    / nullif(count(*) FILTER (WHERE event = 'delivered'), 0), 6) AS complaint_rate
FROM events WHERE event IN ('delivered', 'deferred', 'bounced', 'complaint') {cond}
GROUP BY ALL ORDER BY policy_version, source, run_id""", params or None)


def promotions(con: Con) -> pl.DataFrame:
    """The promotion audit trail (``promotion`` events), oldest first, and the current stage
    per policy version x pool is its last row."""
    return query(None, """
SELECT ts, source, coalesce(policy_version, '') AS policy_version, coalesce(pool, '') AS pool,
  state, reason, detail
FROM events WHERE event = 'promotion' ORDER BY ts, seq NULLS LAST""", con=con)


def promotion_status(con: Con) -> pl.DataFrame:
    return query(None, """
SELECT coalesce(policy_version, '') AS policy_version, coalesce(pool, '') AS pool,
  arg_max(state, ts) AS stage, max(ts) AS since, count(*) AS transitions
FROM events WHERE event = 'promotion' GROUP BY ALL ORDER BY policy_version, pool""", con=con)


def run_ids(con: Con) -> list[str]:
    """Every run id in the warehouse."""
    frame = query(None, "SELECT DISTINCT run_id FROM events WHERE run_id IS NOT NULL "
                        "ORDER BY run_id", con=con)
    return [str(r) for r in frame["run_id"]]
