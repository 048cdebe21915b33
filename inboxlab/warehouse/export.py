"""``export``: copy the warehouse's events to one Parquet dataset for data teams.

Writes ``<out>/events/source=<src>/day=<YYYY-MM-DD>/*.parquet`` (hive-partitioned, DuckDB's
own writer) plus ``<out>/README.txt`` naming the columns. Reads only; never edits the home.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import InputError
from engine.events import COLUMNS
from inboxlab.warehouse.query import connect, run


def export(home: str | os.PathLike[str] | None, out: str | os.PathLike[str]) -> int:
    """Export every event to ``out``; returns the number of rows written."""
    target = Path(out)
    if target.exists() and any((target / "events").glob("*")):
        raise InputError(f"{target}/events already exists; choose an empty --out folder")
    target.mkdir(parents=True, exist_ok=True)
    con = connect(home)
    n = int(run(con, "SELECT count(*) AS n FROM events")["n"][0])
    if n:
        path = str((target / "events").resolve()).replace("'", "''")
        run(con, f"""COPY (SELECT *, strftime(ts, '%Y-%m-%d') AS day FROM events)
TO '{path}' (FORMAT parquet, PARTITION_BY (source, day), COMPRESSION zstd)""")
    cols = "\n".join(f"  {name}: {kind}" for name, kind in COLUMNS)
    (target / "README.txt").write_text(
        f"inboxlab events export: {n} rows, partitioned by source and day (UTC).\n"
        f"Columns:\n{cols}\n"
    )
    return n
