"""Event rows to and from Parquet with one fixed schema derived from ``engine.events.COLUMNS``.

Owns: the polars dtypes of the event schema (``SCHEMA``), building a canonical frame from
``Event`` objects or row dicts (``events_frame``), writing it atomically (``write_events``)
and reading it back (``read_events``). Every source (engine export, simulation, sandbox,
importers) goes through here so their Parquet files line up column for column.

Must not touch: the warehouse layout, the load ledger or DuckDB (that is ``inboxlab.warehouse``);
nothing here knows about partitions or run ids beyond the columns themselves.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from engine.events import COLUMN_NAMES, COLUMNS, Event

_DTYPES: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),
    "int": pl.Int64(),
    "string": pl.Utf8(),
}

SCHEMA: dict[str, pl.DataType] = {name: _DTYPES[kind] for name, kind in COLUMNS}
"""Column name -> polars dtype, in ``COLUMNS`` order."""


def _to_dt(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=UTC)
    raise TypeError(f"cannot read {value!r} as a timestamp")


def conform(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast ``frame`` to the canonical schema: add missing columns as nulls, drop extras,
    order as ``COLUMNS``. Raises ``ValueError`` when a column cannot be cast."""
    exprs: list[pl.Expr] = []
    for name, dtype in SCHEMA.items():
        if name not in frame.columns:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
            continue
        col = pl.col(name)
        have = frame.schema[name]
        if isinstance(dtype, pl.Datetime):
            if isinstance(have, pl.Datetime):
                col = col.dt.replace_time_zone("UTC") if have.time_zone is None else col
                col = col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
            elif have.is_numeric():
                col = (col.cast(pl.Float64) * 1_000_000).round().cast(pl.Int64)
                col = col.cast(pl.Datetime("us", "UTC"))
            elif have == pl.Null:
                col = col.cast(dtype)
            else:
                raise ValueError(f"column {name!r} has type {have}, expected a timestamp")
        elif name == "detail" and have not in (pl.Utf8, pl.Null):
            raise ValueError("column 'detail' must be a JSON string")
        else:
            col = col.cast(dtype, strict=True)
        exprs.append(col.alias(name))
    return frame.select(exprs)


def events_frame(rows: Iterable[Event | Mapping[str, Any]] | pl.DataFrame) -> pl.DataFrame:
    """A polars frame with exactly the event columns and canonical dtypes.

    ``rows`` may be ``Event`` objects, row dicts (``Event.to_row`` form; timestamps as
    datetimes or epoch seconds) or an existing frame (conformed)."""
    if isinstance(rows, pl.DataFrame):
        return conform(rows)
    cols: dict[str, list[Any]] = {name: [] for name in COLUMN_NAMES}
    for item in rows:
        row = item.to_row() if isinstance(item, Event) else item
        for name in COLUMN_NAMES:
            value = row.get(name)
            if name in ("ts", "enqueued_ts"):
                value = _to_dt(value)
            cols[name].append(value)
    return pl.DataFrame(cols, schema=SCHEMA)


def write_events(
    events_or_rows: Iterable[Event | Mapping[str, Any]] | pl.DataFrame, path: str | os.PathLike[str]
) -> int:
    """Write events to one Parquet file atomically (temp file + rename); returns the row count.

    The parent folder is created. A reader never sees a half-written file."""
    frame = events_frame(events_or_rows)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=target.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp, compression="zstd", compression_level=1, statistics=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return frame.height


def read_events(path: str | os.PathLike[str]) -> pl.DataFrame:
    """Read one Parquet file (or a glob) of events, conformed to the canonical schema."""
    return conform(pl.read_parquet(os.fspath(path)))
