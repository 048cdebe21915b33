"""The warehouse: DuckDB over partitioned Parquet event files, and its one query layer.

Public surface (the CLI, dashboards, notebooks and reports call only these):
``connect``, ``query``, ``metric``, ``METRICS``, ``home_dir``, ``load_frame``,
``ingest_run_dir``, ``ingest_outbox``, ``read_ledger``, ``export``.
"""

from __future__ import annotations

from inboxlab.warehouse.export import export
from inboxlab.warehouse.metrics import METRICS, metric
from inboxlab.warehouse.query import connect, query
from inboxlab.warehouse.store import (
    LoadResult,
    home_dir,
    ingest_outbox,
    ingest_run_dir,
    load_frame,
    read_ledger,
)

__all__ = [
    "METRICS",
    "LoadResult",
    "connect",
    "export",
    "home_dir",
    "ingest_outbox",
    "ingest_run_dir",
    "load_frame",
    "metric",
    "query",
    "read_ledger",
]
