"""The CLI edge: one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args],
                          capture_output=True, text=True, timeout=60)


def test_unknown_command_is_one_line() -> None:
    p = run("no-such-command")
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.startswith("inboxlab: error:")


def test_help_lists_commands() -> None:
    p = run("--help")
    assert p.returncode == 0
    assert "version" in p.stdout


def test_version() -> None:
    from inboxlab import __version__

    p = run("version")
    assert p.returncode == 0 and p.stdout.strip() == __version__


def test_typer_exit_codes_reach_the_shell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # `config check` on a missing file must exit non-zero through the edge
    p = run("config", "check", str(tmp_path / "missing.toml"))
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
