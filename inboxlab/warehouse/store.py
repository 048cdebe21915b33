"""The warehouse home folder: partitioned Parquet event files and the exactly-once load ledger.

Layout under the home folder (default ``./var``, or ``INBOXLAB_HOME``)::

    events/source=<src>/run=<run_id>/day=<YYYY-MM-DD>/part-<load-key-hash>.parquet
    ledger.json      one entry per load key; each outbox stream's last loaded sequence number
    .ledger.lock     taken (fcntl) by writers only; readers never take it

Exactly-once: every load has a key (``run:<source>:<run_id>``, ``file:<sha256>``, or the
outbox's ``seq``). Part files are named after the key, so a load interrupted between the
rename and the ledger update rewrites the same files on retry instead of duplicating them.

Owns: paths, partitioning, the ledger. Must not touch: DuckDB (see ``query``), the shape of
an event (see ``engine.eventio``), or any engine/sim state.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import InputError
from engine.eventio import SCHEMA, conform, write_events
from engine.events import SOURCES

DEFAULT_HOME = "./var"
_SAFE = re.compile(r"[^A-Za-z0-9._:@+-]")


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """The warehouse home: ``home`` if given, else ``$INBOXLAB_HOME``, else ``./var``."""
    return Path(home or os.environ.get("INBOXLAB_HOME") or DEFAULT_HOME)


def events_dir(home: str | os.PathLike[str] | None = None) -> Path:
    return home_dir(home) / "events"


def _part_value(value: str) -> str:
    return _SAFE.sub("_", value) or "_"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load did: ``loaded`` is False when the key was already in the ledger."""

    key: str
    rows: int
    files: int
    loaded: bool


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[dict[str, Any]]:
    """Hold the writer lock and yield the ledger; it is saved atomically on clean exit."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".ledger.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ledger = read_ledger(home)
            yield ledger
            fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=home)
            with os.fdopen(fd, "w") as out:
                json.dump(ledger, out, indent=1, sort_keys=True)
            os.replace(tmp, home / "ledger.json")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_ledger(home: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The ledger as a dict: ``{"loads": {key: {...}}, "outbox_seq": int, "outbox":
    {stream: int}}`` (``outbox_seq`` is the unnamed stream's position)."""
    path = home_dir(home) / "ledger.json"
    if not path.exists():
        return {"loads": {}, "outbox_seq": 0, "outbox": {}}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable load ledger: {exc}") from exc
    data.setdefault("loads", {})
    data.setdefault("outbox_seq", 0)
    data.setdefault("outbox", {})
    return data


def _single_run(frame: pl.DataFrame) -> bool:
    """True when every row has the first row's source and run id (a null run id counts as a
    value). An equality scan: several times cheaper than hashing for ``n_unique``."""
    if frame.height == 0:
        return True
    first = frame.row(0, named=True)
    conds = [
        pl.col(c).is_null().all() if first[c] is None
        else (pl.col(c) == first[c]).fill_null(False).all()
        for c in ("source", "run_id")
    ]
    return bool(all(frame.select(conds).row(0)))


def _read_event_file(file: Path) -> pl.DataFrame:
    """Read an event Parquet file conformed to the schema. Columns that the file's row-group
    statistics show to be null in every row are not decoded but filled with typed nulls
    (a sim run leaves about half the schema empty; decoding those columns is pure cost)."""
    columns: list[str] | None = None
    try:
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(file).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        empty = set()
        for i, name in enumerate(names):
            stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
            if meta.num_row_groups and all(
                st is not None and st.has_null_count
                and st.null_count == meta.row_group(g).num_rows
                for g, st in enumerate(stats)
            ):
                empty.add(name)
        if empty and len(set(names)) == len(names):
            columns = [n for n in names if n not in empty]
    except Exception:  # unreadable metadata: let the full read below report the problem
        columns = None
    frame = pl.read_parquet(file, columns=columns)
    return conform(frame)


def _partitions(frame: pl.DataFrame) -> list[tuple[tuple[str, str, str], pl.DataFrame]]:
    """Split ``frame`` by (source, run id, day). A frame of one source and run in time order
    (what a sim run or an export holds) is cut into zero-copy slices; anything else goes
    through a hash partition."""
    day = pl.col("ts").dt.date()
    days = frame.select(day.alias("d"))["d"]
    if _single_run(frame) and days.null_count() == 0 and frame["ts"].is_sorted():
        source, run_id = str(frame["source"][0]), str(frame["run_id"][0] or "")
        runs = days.rle()
        out, offset = [], 0
        for length, value in runs.struct.unnest().iter_rows():
            out.append(((source, run_id, value.isoformat()), frame.slice(offset, length)))
            offset += length
        return out
    keyed = frame.with_columns(day.alias("_day"))
    return [
        ((str(src), str(run or ""), d.isoformat() if d is not None else "unknown"),
         part.drop("_day"))
        for (src, run, d), part in keyed.partition_by(
            ["source", "run_id", "_day"], maintain_order=True, as_dict=True
        ).items()
    ]


def _write_partitions(home: Path, frame: pl.DataFrame, key: str) -> int:
    """Write ``frame`` split by source/run/day, one part file per partition named by ``key``.

    Partitions are written concurrently (the Parquet writer releases the GIL); each file is
    written atomically, and a retry of the same key rewrites the same names."""
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    jobs = []
    for (source, run_id, dday), part in _partitions(frame):
        folder = (
            home / "events" / f"source={_part_value(source)}"
            / f"run={_part_value(run_id)}" / f"day={dday}"
        )
        jobs.append((part, folder / f"part-{tag}.parquet"))
    if len(jobs) == 1:
        write_events(*jobs[0])
        return 1
    workers = max(1, min(len(jobs), os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda job: write_events(*job), jobs):
            pass
    return len(jobs)


def _check(frame: pl.DataFrame) -> pl.DataFrame:
    if frame.schema != pl.Schema(SCHEMA):
        frame = conform(frame)
    bad = int(frame.select(
        (~pl.col("source").is_in(list(SOURCES)).fill_null(False) | pl.col("ts").is_null()).sum()
    ).item())
    if bad:
        raise InputError(
            f"{bad} event rows have a null ts or a source outside {sorted(SOURCES)}"
        )
    return frame


def load_frame(
    frame: pl.DataFrame,
    key: str,
    home: str | os.PathLike[str] | None = None,
    note: dict[str, Any] | None = None,
) -> LoadResult:
    """Load ``frame`` once under ``key``; a key already in the ledger loads nothing."""
    return _load_checked(_check(frame), key, home, note)


def _load_checked(frame: pl.DataFrame, key: str, home: str | os.PathLike[str] | None,
                  note: dict[str, Any] | None) -> LoadResult:
    root = home_dir(home)
    with _locked(root) as ledger:
        if key in ledger["loads"]:
            return LoadResult(key, 0, 0, False)
        files = _write_partitions(root, frame, key) if frame.height else 0
        ledger["loads"][key] = {"rows": frame.height, "files": files, **(note or {})}
    return LoadResult(key, frame.height, files, True)


def run_key(source: str, run_id: str) -> str:
    return f"run:{source}:{run_id}"


def file_key(content_hash: str) -> str:
    return f"file:{content_hash}"


def ingest_run_dir(run_dir: str | os.PathLike[str], home: str | os.PathLike[str] | None = None
                   ) -> list[LoadResult]:
    """Ingest a sim or sandbox run folder holding ``events.parquet``; exactly once per run id.

    The run id(s) and source(s) are read from the rows. Raises ``InputError`` when the folder
    has no readable ``events.parquet``."""
    path = Path(run_dir)
    file = path / "events.parquet" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{run_dir}: no events.parquet in this folder")
    try:
        frame = _read_event_file(file)
    except Exception as exc:  # polars raises several types for a bad file
        raise InputError(f"{file}: not a readable event Parquet file: {exc}") from exc
    if frame.select((pl.col("run_id").is_null() | (pl.col("run_id") == "")).any()).item():
        raise InputError(f"{file}: some rows have no run_id")
    frame = _check(frame)  # the whole file before any of its runs: all or nothing
    if _single_run(frame):
        groups = [((frame["source"][0], frame["run_id"][0]), frame)] if frame.height else []
    else:
        groups = list(frame.group_by(["source", "run_id"], maintain_order=True))
    results = []
    for (source, run_id), part in groups:
        results.append(
            _load_checked(part, run_key(str(source), str(run_id)), home, {"from": str(file)})
        )
    return results


def ingest_outbox(
    rows_with_seq: pl.DataFrame | list[dict[str, Any]],
    home: str | os.PathLike[str] | None = None,
    *,
    stream: str = "",
) -> LoadResult:
    """Append the engine outbox rows whose ``seq`` is above the last loaded sequence number
    of ``stream`` (one position per outbox: each engine spool is its own stream; "" is the
    unnamed one).

    Rows need a non-null ``seq`` (the outbox's monotonic number). Calling again with
    overlapping rows appends only the new tail, so the engine may export at-least-once and the
    warehouse still holds each row once."""
    from engine.eventio import events_frame

    frame = events_frame(rows_with_seq)
    if frame.filter(pl.col("seq").is_null()).height:
        raise InputError("outbox rows need a seq")
    root = home_dir(home)
    frame = _check(frame)
    prefix = f"outbox:{stream}:" if stream else "outbox:"
    with _locked(root) as ledger:
        last = int(ledger["outbox"].get(stream, 0) if stream else ledger["outbox_seq"])
        new = frame.filter(pl.col("seq") > last).unique("seq", keep="first").sort("seq")
        if new.height == 0:
            return LoadResult(f"{prefix}{last}", 0, 0, False)
        top = int(new["seq"].max())  # type: ignore[arg-type]
        key = f"{prefix}{last + 1}-{top}"
        files = _write_partitions(root, new, key)
        if stream:
            ledger["outbox"][stream] = top
        else:
            ledger["outbox_seq"] = top
        ledger["loads"][key] = {"rows": new.height, "files": files}
    return LoadResult(key, new.height, files, True)
