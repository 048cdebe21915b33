"""Importers of recorded traffic: Postfix maillog, KumoMTA JSON, PowerMTA CSV, Amazon SES.

``import_file(fmt, path, home)`` parses one file in bulk (polars), maps it to the event schema
(``source="import"``, ``run_id="<format>:<sha256 prefix>"``) and loads it into the warehouse
exactly once per file content. Malformed lines are counted, never fatal.

Owns: the format registry and the per-file report. Must not touch: engine or sim state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from engine.errors import InputError
from engine.eventio import conform
from inboxlab.importers.common import FileReport, content_hash, read_bytes
from inboxlab.warehouse.store import file_key, load_frame

FORMATS = ("postfix", "kumomta", "pmta", "ses")


def _parser(fmt: str) -> Callable[..., tuple[pl.DataFrame, int, int, int]]:
    if fmt == "postfix":
        from inboxlab.importers.postfix import parse
    elif fmt == "kumomta":
        from inboxlab.importers.kumomta import parse
    elif fmt == "pmta":
        from inboxlab.importers.pmta import parse
    elif fmt == "ses":
        from inboxlab.importers.ses import parse
    else:
        raise InputError(f"unknown log format {fmt!r}; choose from {', '.join(FORMATS)}")
    return parse


def number_attempts(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill a missing ``attempt`` on result rows by counting results per message × recipient
    in time order (logs that do not number their attempts)."""
    results = pl.col("event").is_in(["delivered", "deferred", "bounced"])
    if frame.filter(results & pl.col("attempt").is_null()).height == 0:
        return frame  # the log numbers its attempts itself (Postfix does, per queue id)
    counted = (
        pl.when(results).then(pl.int_range(1, pl.len() + 1)).over(
            ["message_id", "recipient", results]
        )
    )
    return frame.sort("ts", maintain_order=True).with_columns(
        pl.coalesce(pl.col("attempt"), pl.when(results).then(counted)).cast(pl.Int64)
        .alias("attempt")
    )


def parse_file(fmt: str, path: str | os.PathLike[str], year: int | None = None
               ) -> tuple[pl.DataFrame, FileReport]:
    """Parse one file without loading it; returns the conformed frame and its report."""
    parse = _parser(fmt)
    data = read_bytes(path)
    digest = content_hash(data)
    run_id = f"{fmt}:{digest[:12]}"
    try:
        if fmt == "postfix":
            frame, lines, malformed, skipped = parse(data, run_id, year)
        else:
            frame, lines, malformed, skipped = parse(data, run_id)
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable {fmt} log: {first}") from exc
    frame = number_attempts(conform(frame))
    report = FileReport(str(path), fmt, run_id, lines, frame.height, malformed, skipped, False)
    return frame, report


def import_file(fmt: str, path: str | os.PathLike[str], home: str | os.PathLike[str] | None,
                year: int | None = None) -> FileReport:
    """Parse ``path`` as ``fmt`` and load it once (keyed by the file's SHA-256)."""
    frame, report = parse_file(fmt, path, year)
    digest = report.run_id.split(":", 1)[1]
    full = content_hash(read_bytes(path))
    assert full.startswith(digest)
    result = load_frame(frame, file_key(full), home,
                        {"format": fmt, "file": Path(path).name, "run_id": report.run_id})
    return FileReport(report.file, fmt, report.run_id, report.lines, report.events,
                      report.malformed, report.skipped, result.loaded)
