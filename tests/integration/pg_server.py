"""A private PostgreSQL cluster for the tests of the scale-out spool (``engine.spool.pg``).

``pg_server`` (session scope) finds the server binaries (``pg_config --bindir``, else
``/usr/lib/postgresql/*/bin``), runs ``initdb`` into a fresh temporary folder and starts it
with ``pg_ctl`` on 127.0.0.1 and a free port (unix socket in the same folder, ``fsync=off``),
as the ``postgres`` OS user when the tests run as root (the server refuses root). It is
stopped (``pg_ctl stop -m immediate``) and its folder removed at the end of the session.

Without any PostgreSQL binaries the tests fail with a message saying so (``.ci/run``
installs the server; a developer installs the ``postgresql`` package). Test modules import
the fixture::

    from tests.integration.pg_server import pg_server  # noqa: F401  (a pytest fixture)

``pg_url`` (function scope) gives each test its own schema in that cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PgServer:
    """A running cluster: ``url`` of its ``postgres`` database (trust auth, loopback)."""

    port: int
    datadir: Path
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def schema_url(self, schema: str) -> str:
        """``url`` with the spool's ``schema`` option (each test isolates in its own)."""
        return f"{self.url}?schema={schema}"


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is absent."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           reverse=True)]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` OS user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(_quote, cmd))]


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def start_server(settings: str = "-c fsync=off -c synchronous_commit=off "
                 "-c full_page_writes=off") -> tuple[PgServer, Path]:
    """initdb + pg_ctl start; returns the server and its temporary folder. ``settings``:
    server options (tests trade durability for speed; the benchmark does not)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL binaries not found (pg_config / /usr/lib/postgresql/*/bin): "
                    "install the postgresql package (bash .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="inboxlab-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    root.chmod(0o755)
    init = subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust",
                                     "-U", "postgres", "-E", "UTF8", "--no-sync"]),
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    for _ in range(5):
        port = _free_port()
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=50 "
                + settings)
        start = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(datadir), "-w",
                                          "-t", "60", "-l", str(root / "log"), "-o", opts,
                                          "start"]),
                               capture_output=True, text=True, timeout=90)
        if start.returncode == 0:
            return PgServer(port, datadir, bindir), root
    log = (root / "log").read_text() if (root / "log").exists() else ""
    shutil.rmtree(root, ignore_errors=True)
    pytest.fail(f"pg_ctl start failed: {start.stderr[-1000:]} {log[-2000:]}")


def stop_server(server: PgServer, root: Path) -> None:
    subprocess.run(_as_owner([str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m",
                              "immediate", "-w", "stop"]), capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server, root = start_server()
    try:
        yield server
    finally:
        stop_server(server, root)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A spool URL with a schema of its own (created by the spool on first use)."""
    return pg_server.schema_url("t_" + uuid.uuid4().hex[:12])
