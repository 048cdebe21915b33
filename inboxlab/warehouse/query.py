"""The one query layer: a DuckDB connection over the warehouse's Parquet files.

``connect(home)`` opens an in-memory DuckDB connection with the views of ``views`` over the
Parquet files under the home folder. It reads files only, takes no lock and never writes, so a
loader can write while dashboards and notebooks read (new files appear on the next connect).
``query(home, sql)`` runs one statement and returns a polars frame. The CLI, dashboards,
notebooks and reports all call these functions.

Owns: the connection and error translation (any DuckDB error becomes ``QueryError`` with one
line). Must not touch: the files themselves (``store``) or metric post-processing (``metrics``).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import polars as pl

from engine.errors import QueryError
from inboxlab.warehouse.store import events_dir
from inboxlab.warehouse.views import view_statements

PART_GLOB = "source=*/run=*/day=*/part-*.parquet"


def events_source(home: str | os.PathLike[str] | None) -> str | None:
    """The FROM expression reading every event file, or None when there are none yet."""
    root = events_dir(home)
    if not root.is_dir() or next(root.glob(PART_GLOB), None) is None:
        return None
    pattern = str(Path(root).resolve() / PART_GLOB).replace("'", "''")
    return f"read_parquet('{pattern}', hive_partitioning = false)"


def connect(home: str | os.PathLike[str] | None = None, threads: int | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every warehouse view defined (UTC session)."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for statement in view_statements(events_source(home)):
        con.execute(statement)
    return con


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run(con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
        ) -> pl.DataFrame:
    """Run ``sql`` on ``con``; a DuckDB error becomes ``QueryError`` (one line)."""
    try:
        rel = con.sql(sql, params=params) if params else con.sql(sql)
        if rel is None:
            return pl.DataFrame()
        return rel.pl()
    except duckdb.Error as exc:
        raise QueryError(one_line(exc)) from exc


def query(home: str | os.PathLike[str] | None, sql: str,
          con: duckdb.DuckDBPyConnection | None = None) -> pl.DataFrame:
    """Run one SQL statement against the warehouse views and return a polars frame.

    Raises ``QueryError`` for bad SQL or an unknown view/column."""
    if not sql.strip():
        raise QueryError("empty query")
    return run(con if con is not None else connect(home), sql)
