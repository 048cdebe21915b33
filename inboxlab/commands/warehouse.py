"""Warehouse commands: ``query``, ``import``, ``ingest``, ``metrics``, ``export``, ``detect``.

Every command takes ``--home DIR`` (default ``./var``, or ``INBOXLAB_HOME``). Bad input, bad
SQL or an unknown view raise ``InputError`` / ``QueryError``; the CLI edge prints one line.
Heavy libraries (duckdb, polars) are imported inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

HomeOpt = Annotated[
    str | None,
    typer.Option("--home", help="warehouse home folder (default ./var or $INBOXLAB_HOME)"),
]


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _records(frame: Any) -> list[dict[str, Any]]:
    import math

    rows = frame.to_dicts()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
    return rows


def render(frame: Any, fmt: str, out: str | None) -> None:
    """Write ``frame`` as table, csv or json (an array of objects) to ``out`` or stdout."""
    from engine.errors import InputError

    if fmt == "json":
        text = json.dumps(_records(frame), default=_json_default, indent=None) + "\n"
    elif fmt == "csv":
        text = frame.write_csv()
    elif fmt == "table":
        import polars as pl

        with pl.Config(tbl_rows=200, tbl_cols=50, tbl_width_chars=200, fmt_str_lengths=60,
                       tbl_hide_dataframe_shape=True):
            text = str(frame) + "\n"
    else:
        raise InputError(f"--format {fmt!r}: choose table, csv or json")
    if out:
        try:
            Path(out).write_text(text)
        except OSError as exc:
            raise InputError(f"--out {out}: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)


def register(app: typer.Typer) -> None:
    @app.command("query")
    def query_cmd(
        sql: Annotated[str, typer.Argument(help="one SQL statement over the warehouse views")],
        fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
        out: Annotated[str | None, typer.Option("--out", help="write to FILE")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Run SQL over every view (events, messages, latency_samples, deferral_codes, ...)."""
        from engine.errors import InputError
        from inboxlab.warehouse import query

        if fmt not in ("table", "csv", "json"):
            raise InputError(f"--format {fmt!r}: choose table, csv or json")
        render(query(home, sql), fmt, out)

    @app.command("import")
    def import_cmd(
        fmt: Annotated[str, typer.Argument(help="postfix, kumomta, pmta or ses")],
        files: Annotated[list[str], typer.Argument(help="log files")],
        year: Annotated[int | None, typer.Option(
            "--year", help="year of classic syslog timestamps (default: this year)")] = None,
        home: HomeOpt = None,
    ) -> None:
        """Import recorded MTA logs; prints per-file totals (lines, events, malformed)."""
        from engine.errors import InputError
        from inboxlab.importers import FORMATS, import_file

        if fmt not in FORMATS:
            raise InputError(f"unknown log format {fmt!r}; choose from {', '.join(FORMATS)}")
        for file in files:
            if not Path(file).is_file():
                raise InputError(f"{file}: no such file")
        for file in files:
            r = import_file(fmt, file, home, year)
            note = "" if r.loaded else " (already loaded: nothing added)"
            typer.echo(f"{r.file}: {r.lines} lines, {r.events} events, {r.malformed} malformed, "
                       f"{r.skipped} skipped, run {r.run_id}{note}")

    @app.command("ingest")
    def ingest_cmd(
        dirs: Annotated[
            list[str] | None, typer.Argument(help="sim or sandbox run folders")
        ] = None,
        spool: Annotated[
            list[str] | None,
            typer.Option("--spool", help="an engine spool (spool.db or the engine's home): "
                         "load its events outbox incrementally; repeatable"),
        ] = None,
        home: HomeOpt = None,
    ) -> None:
        """Ingest run folders holding events.parquet (exactly once per run id) and engine
        spools' event outboxes (each row once, only what is new since the last ingest)."""
        from engine.errors import InputError
        from engine.spool.pg import redact
        from inboxlab.warehouse import ingest_run_dir
        from inboxlab.warehouse.outbox import ingest_spool

        if not dirs and not spool:
            raise InputError("ingest needs run folders or --spool PATH")
        for folder in dirs or []:
            for r in ingest_run_dir(folder, home):
                state = f"{r.rows} events" if r.loaded else "already loaded: nothing added"
                typer.echo(f"{folder}: {r.key}: {state}")
        for path in spool or []:
            r = ingest_spool(path, home)
            state = f"{r.rows} new events" if r.loaded else "nothing new"
            typer.echo(f"{redact(path)}: {r.key}: {state}")

    @app.command("metrics")
    def metrics_cmd(
        name: Annotated[str | None, typer.Argument(help="metric name; omit to list")] = None,
        by: Annotated[str | None, typer.Option("--by", help="comma list, e.g. provider,pool")
                      ] = None,
        since: Annotated[str | None, typer.Option(
            "--since", help="ISO date/time or a duration back from the newest event (24h, 7d)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON array of objects")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Compute a named metric; with no NAME, list the metrics."""
        from inboxlab.warehouse import METRICS, metric

        if name is None:
            for spec in METRICS.values():
                by_text = ",".join(spec.default_by) or "-"
                typer.echo(f"{spec.name:<24} {spec.help} (default --by {by_text})")
            return
        render(metric(home, name, by=by, since=since), "json" if as_json else "table", None)

    @app.command("export")
    def export_cmd(
        out: Annotated[str, typer.Option("--out", help="target folder")],
        home: HomeOpt = None,
    ) -> None:
        """Export all events as hive-partitioned Parquet (source/day) for data teams."""
        from inboxlab.warehouse import export

        n = export(home, out)
        typer.echo(f"exported {n} events to {out}")

    @app.command("detect")
    def detect_cmd(
        since: Annotated[str | None, typer.Option("--since", help="as for metrics")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON array of objects")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Run spike detection (deferrals, bounces, complaints per provider × pool)."""
        import polars as pl

        from inboxlab.warehouse.detect import detect_warehouse

        events = detect_warehouse(home, since=since)
        frame = pl.DataFrame(
            [{"ts": e.ts, "state": e.state, "provider": e.provider, "pool": e.pool,
              "reason": e.reason} for e in events],
            schema={"ts": pl.Float64, "state": pl.Utf8, "provider": pl.Utf8, "pool": pl.Utf8,
                    "reason": pl.Utf8},
        ).with_columns((pl.col("ts") * 1e6).cast(pl.Int64).cast(pl.Datetime("us", "UTC")))
        render(frame, "json" if as_json else "table", None)
