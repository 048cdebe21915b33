"""``inboxlab dash``: run the Streamlit dashboard (``dashboards/app.py``) on loopback.

Owns: locating the app and building the ``streamlit run`` command line. Must not touch: the
warehouse (the app reads it) or any other command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer


def app_path() -> Path:
    """The dashboard script, next to the ``inboxlab`` package."""
    import inboxlab

    return Path(inboxlab.__file__).resolve().parent.parent / "dashboards" / "app.py"


def command(home: str, port: int, browser: bool, address: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", address, "--server.port", str(port),
        "--server.headless", "false" if browser else "true",
        "--browser.gatherUsageStats", "false", "--browser.serverAddress", address,
        "--server.fileWatcherType", "none", "--global.developmentMode", "false",
        "--", "--home", home,
    ]


def register(app: typer.Typer) -> None:
    @app.command("dash")
    def dash_cmd(
        home: Annotated[str | None, typer.Option(
            "--home", help="warehouse home folder (default ./var or $INBOXLAB_HOME)")] = None,
        port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 8501,
        no_browser: Annotated[bool, typer.Option(
            "--no-browser", help="do not open a browser")] = False,
    ) -> None:
        """Serve the dashboard on 127.0.0.1:PORT (Ctrl-C stops it)."""
        from engine.errors import InputError
        from inboxlab.warehouse import home_dir

        if not 1 <= port <= 65535:
            raise InputError(f"--port {port}: choose 1..65535")
        script = app_path()
        if not script.is_file():
            raise InputError(f"dashboard app not found at {script}")
        folder = home_dir(home).resolve()
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--home {folder}: not a folder")
        env = {**os.environ, "INBOXLAB_HOME": str(folder)}
        typer.echo(f"inboxlab dash: http://127.0.0.1:{port}/ (warehouse {folder})", err=False)
        sys.stdout.flush()
        try:
            code = subprocess.call(command(str(folder), port, not no_browser), env=env)
        except KeyboardInterrupt:
            code = 0
        raise typer.Exit(code)
