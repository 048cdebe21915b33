"""``inboxlab serve``: run the HTTP intake and the delivery runner until SIGTERM.

Owns only the command-line surface; the work is ``engine.intake.serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the app."""

    @app.command()
    def serve(
        config: Annotated[Path, typer.Option("--config", help="lab config file (TOML)")],
        home: Annotated[Path, typer.Option("--home", help="spool and secret dir")] = Path(
            ".inboxlab"),
        port: Annotated[int, typer.Option("--port", help="HTTP port on 127.0.0.1")] = 8025,
        seed: Annotated[int, typer.Option("--seed", help="policy core seed")] = 0,
    ) -> None:
        """Accept messages over HTTP and deliver them; SIGTERM stops cleanly."""
        import asyncio

        from engine.config import load_config
        from engine.errors import InputError
        from engine.intake.serve import serve as run

        if not 0 < port < 65536:
            raise InputError(f"--port must be 1..65535, got {port}")
        asyncio.run(run(load_config(config), home, port=port, seed=seed))
