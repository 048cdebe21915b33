"""``inboxlab serve``: run the whole engine (HTTP intake, delivery runner, inbound feedback
receiver, SMTP submission, webhook dispatcher) in one process until SIGTERM, on uvloop when
installed. ``--spool`` (or ``[serve] spool``) puts the queue in a SQLite file or on a
shared PostgreSQL server (``postgresql://...?schema=NAME``), where several serve processes
are the nodes of one queue (``[serve] nodes``).

Owns only the command-line surface; the work is ``engine.intake.serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _check_port(name: str, value: int | None, low: int) -> None:
    from engine.errors import InputError

    if value is not None and not low <= value < 65536:
        raise InputError(f"{name} must be {low}..65535, got {value}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the app."""

    @app.command()
    def serve(
        config: Annotated[Path, typer.Option("--config", help="lab config file (TOML)")],
        home: Annotated[Path, typer.Option("--home", help="spool and secret dir")] = Path(
            ".inboxlab"),
        port: Annotated[int | None, typer.Option(
            "--port", help="HTTP intake port (default: [serve].http_port, 8025)")] = None,
        inbound_port: Annotated[int | None, typer.Option(
            "--inbound-port", help="inbound feedback SMTP port (0: any free port)")] = None,
        submission_port: Annotated[int | None, typer.Option(
            "--submission-port", help="SMTP submission port (0: any free port)")] = None,
        spool: Annotated[str | None, typer.Option(
            "--spool", help="spool: a SQLite file or postgresql://...?schema=NAME "
            "(default: [serve].spool, else HOME/spool.db)")] = None,
        seed: Annotated[int, typer.Option("--seed", help="policy core seed")] = 0,
        as_json: Annotated[bool, typer.Option(
            "--json", help="print where each listener is as one JSON line")] = False,
    ) -> None:
        """Accept mail (HTTP and SMTP submission), deliver it, take bounces and complaints
        in, push events to webhooks; SIGTERM stops cleanly. Prints where each listens."""
        import asyncio

        from engine.config import load_config
        from engine.intake.serve import event_loop_factory
        from engine.intake.serve import serve as run

        _check_port("--port", port, 1)
        _check_port("--inbound-port", inbound_port, 0)
        _check_port("--submission-port", submission_port, 0)
        lab = load_config(config)
        main = run(lab, home, port=port, seed=seed, as_json=as_json,
                   inbound_port=inbound_port, submission_port=submission_port,
                   spool_url=spool)
        factory = event_loop_factory()  # uvloop when installed (a Linux dependency)
        if factory is None:
            asyncio.run(main)
        else:
            with asyncio.Runner(loop_factory=factory) as loop_runner:
                loop_runner.run(main)
