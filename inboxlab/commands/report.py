"""``inboxlab report warmup|weekly|sim-vs-live|policy [RUN...] --out FILE.html``.

Writes one self-contained HTML report (plotly.js inline, no external URLs). RUN arguments are
run ids in the warehouse, or sim output folders (holding ``events.parquet``) which are ingested
first, exactly once, like ``inboxlab ingest``.

Owns: argument handling. Must not touch: report content (``inboxlab.report.html``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        kind: Annotated[str, typer.Argument(help="warmup, weekly, sim-vs-live or policy")],
        runs: Annotated[list[str] | None, typer.Argument(
            help="run ids, or sim output folders to ingest first")] = None,
        out: Annotated[str | None, typer.Option(
            "--out", help="HTML file (default reports/<kind>.html)")] = None,
        home: Annotated[str | None, typer.Option(
            "--home", help="warehouse home folder (default ./var or $INBOXLAB_HOME)")] = None,
    ) -> None:
        """Write a self-contained HTML report with charts."""
        from engine.errors import InputError
        from inboxlab.report.html import KINDS, write
        from inboxlab.warehouse import connect, home_dir, ingest_run_dir

        if kind not in KINDS:
            raise InputError(f"unknown report {kind!r}; choose from {', '.join(KINDS)}")
        target = out or f"reports/{kind}.html"
        if not target.endswith((".html", ".htm")):
            raise InputError(f"--out {target}: expected a .html file")
        run_ids: list[str] = []
        for item in runs or []:
            folder = Path(item)
            if folder.is_dir():
                if not any(folder.rglob("events.parquet")):
                    raise InputError(f"{item}: folder holds no events.parquet")
                for r in ingest_run_dir(folder, home):
                    run_ids.append(r.key.split(":", 2)[-1])
            else:
                run_ids.append(item)
        con = connect(home)
        try:
            path = write(kind, con, target, run_ids, str(home_dir(home)))
        finally:
            con.close()
        typer.echo(f"wrote {path} ({path.stat().st_size:,} bytes)")
