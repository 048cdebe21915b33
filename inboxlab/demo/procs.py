"""Child processes of ``inboxlab demo``: start in their own process group, stop for sure.

Owns ``Children`` (every process the demo started, stopped by SIGTERM to its group, then
SIGKILL after a grace period) and ``free_port``. It starts nothing on its own and knows
nothing of the lab.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.errors import InputError


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def inboxlab_cmd(*args: str) -> list[str]:
    """The argv of an ``inboxlab`` subcommand run by this interpreter."""
    return [sys.executable, "-m", "inboxlab", *args]


class Children:
    """The processes the demo started; ``stop_all`` ends every one of them."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str], *, log: Path, pipe: bool = False,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session; stderr (and stdout unless ``pipe``) go to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE if pipe else err,
                                    stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=dict(env) if env is not None else None)
        self.procs[name] = proc
        return proc

    def first_line(self, name: str, timeout: float, log: Path) -> str:
        """The first stdout line of ``name`` (it must print one within ``timeout``)."""
        proc = self.procs[name]
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(proc.stdout.readline()  # type: ignore[union-attr]
                                                       ), daemon=True)
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            raise InputError(f"{name} did not start within {timeout:.0f} s"
                             f"{_tail(log)} (log: {log})")
        return box[0].decode().strip()

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def stop(self, name: str, grace: float = 15.0) -> int | None:
        """SIGTERM the process group of ``name``; SIGKILL it after ``grace`` s. Its exit code."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        self.signal(name, signal.SIGTERM)
        try:
            rc = proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(name, signal.SIGKILL)
            rc = proc.wait(5)
        # a child may have left its own children in the group: end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        del self.procs[name]
        return rc

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every child, newest first (the engine before the sandbox it sends to)."""
        for name in reversed(list(self.procs)):
            self.stop(name, grace)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str,
              log: Path) -> None:
    """Wait until something accepts on 127.0.0.1:``port``; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InputError(f"{what} exited with code {proc.returncode}{_tail(log)} (log: {log})")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise InputError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _tail(log: Path) -> str:
    """The last non-empty line of a child's log, as ': line' (or '')."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1].strip()[:300]}" if lines else ""
