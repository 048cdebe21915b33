"""``inboxlab demo``: the whole lab with one command.

Owns only the command-line surface; the steps are ``inboxlab.demo.lab.run_demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the app."""

    @app.command()
    def demo(
        home: Annotated[Path, typer.Option("--home", envvar="INBOXLAB_HOME",
                                           help="warehouse home; runs go to HOME/demo/")] = Path(
            "var"),
        messages: Annotated[int, typer.Option("--messages", help="messages to send live")] = 3000,
        keep: Annotated[bool, typer.Option("--keep", help="keep the spool and stored mail")] = False,
        wait: Annotated[float, typer.Option("--wait", help="longest wait for the spool to "
                                            "drain, seconds")] = 90.0,
        seed: Annotated[int, typer.Option("--seed", help="seed of traffic, sim and core")] = 7,
    ) -> None:
        """Sandbox + simulation + live engine + warehouse + report, then a summary."""
        import sys

        from rich.console import Console

        from engine.errors import InputError
        from inboxlab.demo import DemoOptions, run_demo

        if messages < 1:
            raise InputError("--messages must be at least 1")
        if wait < 0:
            raise InputError("--wait must be >= 0")
        run_demo(DemoOptions(home=home, messages=messages, keep=keep, wait_s=wait, seed=seed),
                 Console(width=None if sys.stdout.isatty() else 110), Console(stderr=True))
