"""Export an engine spool's events outbox into the warehouse, incrementally and exactly once.

The engine writes every state change and its event in one transaction (the outbox); this
module reads that outbox from the spool file - while the engine runs, WAL readers never block
it - and appends the rows above the stream's last loaded ``seq`` (``store.ingest_outbox``).
Each spool is its own stream, named after the spool's first outbox event (the first
message's id and timestamp), so a spool that is moved or copied keeps its position and two
engines feeding one warehouse never hide each other's events.

A shared PostgreSQL spool (``postgresql://...?schema=NAME``) is read through
``PgSpool.events_after`` (which gives finished transactions' rows their gap-free ``seq``
first: the one write a reader makes there) as one stream named by ``PgSpool.stream_name``
(cluster, database and schema), whichever node wrote each event.

Owns: reading the outbox and naming the stream. Must not write a SQLite spool (only
SELECTs run) nor know the warehouse's file layout (``store`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from engine.errors import InputError
from inboxlab.warehouse.store import LoadResult, ingest_outbox

__all__ = ["ingest_spool", "spool_stream"]

_BATCH = 50_000


def _open(path: Path) -> sqlite3.Connection:
    """A read-only connection to the spool at ``path`` (a clear error when it is not one)."""
    if not path.is_file():
        raise InputError(f"{path}: no such spool file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        db.execute("SELECT seq, event FROM outbox LIMIT 0")
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not an engine spool ({exc})") from None
    return db


def _spool_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / "spool.db" if p.is_dir() else p


def _open_pg(url: str) -> Any:
    """A reader's handle on a PostgreSQL spool (no recovery, no takeover)."""
    from engine.errors import ConfigError
    from engine.spool.pg import PgSpool, redact

    try:
        return PgSpool(url, recover=False, run_id="warehouse-ingest")
    except ConfigError as exc:
        raise InputError(f"{redact(url)}: {exc.reason}") from None


def spool_stream(path: str | os.PathLike[str]) -> str | None:
    """The stream name of the spool at ``path`` (a file, an engine home holding
    ``spool.db``, or a ``postgresql://`` URL); None while its outbox is empty."""
    from engine.spool import is_pg_target

    if isinstance(path, str) and is_pg_target(path):
        pg = _open_pg(str(path))
        try:
            return str(pg.stream_name()) if pg.events_after(0, limit=1) else None
        finally:
            pg.close()
    db = _open(_spool_path(path))
    try:
        row = db.execute("SELECT seq, event FROM outbox ORDER BY seq LIMIT 1").fetchone()
    finally:
        db.close()
    if row is None:
        return None
    digest = hashlib.sha256(f"{row[0]}\0{row[1]}".encode()).hexdigest()[:16]
    return f"spool-{digest}"


def ingest_spool(
    path: str | os.PathLike[str],
    home: str | os.PathLike[str] | None = None,
    *,
    batch: int = _BATCH,
) -> LoadResult:
    """Load the outbox rows of the spool at ``path`` that the warehouse does not hold yet.

    Reads in batches of ``batch`` rows after the stream's position; returns one result
    summing the batches (``loaded`` False when nothing was new). ``path`` may be a
    ``postgresql://`` URL."""
    from engine.eventio import events_frame
    from engine.events import Event
    from engine.spool import is_pg_target
    from inboxlab.warehouse.store import read_ledger

    if isinstance(path, str) and is_pg_target(path):
        return _ingest_pg(str(path), home, batch)
    spool = _spool_path(path)
    stream = spool_stream(spool)
    if stream is None:
        return LoadResult("outbox:empty", 0, 0, False)
    after = int(read_ledger(home)["outbox"].get(stream, 0))
    rows = files = 0
    key = f"outbox:{stream}:{after}"
    db = _open(spool)
    try:
        while True:
            got = db.execute(
                "SELECT seq, event FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, batch)
            ).fetchall()
            if not got:
                break
            events = [Event(seq=seq, **json.loads(data)) for seq, data in got]
            res = ingest_outbox(events_frame(events), home, stream=stream)
            rows += res.rows
            files += res.files
            key = res.key if res.loaded else key
            after = int(got[-1][0])
    finally:
        db.close()
    return LoadResult(key, rows, files, rows > 0)


def _ingest_pg(url: str, home: str | os.PathLike[str] | None, batch: int) -> LoadResult:
    from engine.eventio import events_frame
    from inboxlab.warehouse.store import read_ledger

    pg = _open_pg(url)
    try:
        stream = pg.stream_name()
        after = int(read_ledger(home)["outbox"].get(stream, 0))
        rows = files = 0
        key = f"outbox:{stream}:{after}"
        while True:
            events = pg.events_after(after, limit=batch)
            if not events:
                break
            res = ingest_outbox(events_frame(events), home, stream=stream)
            rows += res.rows
            files += res.files
            key = res.key if res.loaded else key
            after = int(events[-1].seq or after)
    finally:
        pg.close()
    if rows == 0 and after == 0:
        return LoadResult("outbox:empty", 0, 0, False)
    return LoadResult(key, rows, files, rows > 0)
