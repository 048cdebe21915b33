"""The demo's closing numbers, read from the warehouse (the one query layer).

Owns the SQL of the summary table (per source x provider: sent, delivered, deferred,
bounced, complaints, p95 time to accept) and of the live run's accounting (every recipient
the intake accepted reached a final state or is still queued). Writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUMMARY_SQL = """
WITH e AS (SELECT * FROM events WHERE run_id IN ({runs}))
SELECT e.source, coalesce(e.provider, '-') AS provider,
  count(DISTINCT e.message_id || '|' || coalesce(e.recipient, ''))
    FILTER (WHERE e.event IN ('attempt', 'delivered', 'deferred', 'bounced')) AS sent,
  count(*) FILTER (WHERE e.event = 'delivered') AS delivered,
  count(*) FILTER (WHERE e.event = 'deferred') AS deferred,
  count(*) FILTER (WHERE e.event = 'bounced') AS bounced,
  count(*) FILTER (WHERE e.event = 'complaint') AS complaints,
  (SELECT quantile_cont(l.seconds, 0.95) FROM latency_samples l
    WHERE l.kind = 'accept' AND l.source = e.source AND l.run_id IN ({runs})
      AND coalesce(l.provider, '-') = coalesce(e.provider, '-')) AS p95_accept_s
FROM e
GROUP BY ALL
HAVING sent > 0 OR complaints > 0
ORDER BY e.source, provider
"""

ACCOUNT_SQL = """
SELECT coalesce(outcome, 'queued') AS state, count(*) AS n
FROM messages WHERE source = 'live' AND run_id = '{run}'
GROUP BY ALL ORDER BY n DESC
"""


def _runs_list(run_ids: list[str]) -> str:
    return ", ".join("'" + r.replace("'", "''") + "'" for r in run_ids) or "''"


def summary_rows(home: Path, run_ids: list[str]) -> list[dict[str, Any]]:
    """One row per source x provider of the given runs."""
    from inboxlab.warehouse.query import query

    return query(home, SUMMARY_SQL.format(runs=_runs_list(run_ids))).to_dicts()


def live_accounting(home: Path, run_id: str) -> dict[str, int]:
    """Final outcome (or 'queued') -> recipients, for the live engine run ``run_id``."""
    from inboxlab.warehouse.query import query

    frame = query(home, ACCOUNT_SQL.format(run=run_id.replace("'", "''")))
    return {str(r["state"]): int(r["n"]) for r in frame.to_dicts()}


def render(rows: list[dict[str, Any]], title: str) -> Any:
    """A rich table of ``summary_rows``."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("source", "provider", "sent", "delivered", "deferred", "bounced",
                "complaints", "p95 accept s"):
        table.add_column(col, justify="left" if col in ("source", "provider") else "right")
    for r in rows:
        p95 = r["p95_accept_s"]
        table.add_row(str(r["source"]), str(r["provider"]), str(r["sent"]),
                      str(r["delivered"]), str(r["deferred"]), str(r["bounced"]),
                      str(r["complaints"]), "-" if p95 is None else f"{p95:.1f}")
    return table
