"""Crash safety and clean shutdown of the engine, as real subprocesses over real sockets.

- ``kill -9`` of a runner process at seeded random points (three times, then a final run):
  every recipient ends in exactly one final state, none is lost, and the receiver never
  holds more copies than one plus the ambiguous flags allow.
- SIGTERM of ``inboxlab serve``: intake stops, in-flight sends finish, the exit code is 0,
  nothing is left ambiguous, and a restart on the same home delivers the backlog.

The receiver is an aiosmtpd server on 127.0.0.1 that records each Message-ID
(``<public_id.rid@domain>``), so copies are counted per spool recipient.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.spool import Spool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
MSGID = re.compile(rb"^Message-ID: <m_[0-9a-f]+\.(\d+)@", re.M | re.I)
FINAL = {"delivered", "bounced", "expired", "suppressed", "dead_lettered"}
# the sending domains of fixtures/lab.toml, spread so the lab's rate limits add up
SENDERS = [("acme", "news.acme.example"), ("acme", "mail.acme.example"),
           ("globex", "globex.example")]

CHILD = """
import asyncio, os, sys
from engine.config import load_config
from engine.runner import Runner
from engine.spool import Spool

async def main() -> None:
    spool = Spool(sys.argv[1], run_id=f"child-{os.getpid()}")
    print("recovered", spool.recovered, flush=True)
    runner = Runner(load_config(sys.argv[2]), spool, secret=b"c" * 32, timeout=10)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, poll=0.02))
    while spool.active():
        await asyncio.sleep(0.05)
    stop.set()
    await task
    spool.close()

asyncio.run(main())
"""


class CountingSink:
    """Counts copies per spool recipient id (from the Message-ID)."""

    def __init__(self) -> None:
        self.copies: Counter[int] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        m = MSGID.search(envelope.original_content)
        with self.lock:
            self.copies[int(m.group(1)) if m else -1] += 1
        return "250 2.0.0 ok"

    def total(self) -> int:
        with self.lock:
            return sum(self.copies.values())


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def counting_sink() -> Any:
    from aiosmtpd.controller import Controller

    sink = CountingSink()
    port = _port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    sink.port = port  # type: ignore[attr-defined]
    yield sink
    ctl.stop()


def _env(sink_port: int) -> dict[str, str]:
    return dict(os.environ, INBOXLAB_PORT_OTHER=str(sink_port),
                INBOXLAB_SANDBOX_HOST="127.0.0.1", INBOXLAB_SECRET="c" * 32,
                PYTHONPATH=str(ROOT))


def _fill(path: Path, n: int) -> None:
    spool = Spool(path)
    for i in range(n):
        tenant, domain = SENDERS[i % len(SENDERS)]
        spool.accept(tenant=tenant, idem_key=f"k{i}", request=b"%d" % i, lane="lifecycle",
                     campaign="crash", sending_domain=domain, mail_from=f"news@{domain}",
                     recipients=[f"r{i}@example.net"],
                     body=b"Subject: crash test\r\nFrom: news@" + domain.encode()
                     + b"\r\n\r\nbody %d\r\n" % i)
    spool.close()


def _crash_lab(tmp: Path, n: int) -> Path:
    """fixtures/lab.toml with the generic receiver's rate lifted for big runs (its default
    10 msgs/s per IP would make 10,000 messages take ~5 minutes per kill); paths absolute."""
    text = LAB.read_text().replace('"policies/', f'"{LAB.parent}/policies/') \
        .replace('"dkim/', f'"{LAB.parent}/dkim/')
    if n > 1000:
        text += '\n[shaping.override."*.generic"]\nmessages_per_second = 200.0\n'
    out = tmp / "crash-lab.toml"
    out.write_text(text)
    return out


def _final_states(path: Path) -> list[tuple[int, str, int, int]]:
    spool = Spool(path, recover=False)
    rows = spool.db.execute("SELECT id, state, ambiguous, (SELECT count(*) FROM attempts a "
                            "WHERE a.recipient_id=r.id AND a.data_started=1) FROM recipients r"
                            " ORDER BY id").fetchall()
    spool.close()
    return rows


def test_kill_9_three_times_loses_nothing(counting_sink: Any, tmp_path: Path) -> None:
    n = int(os.environ.get("INBOXLAB_CRASH_N", "1000"))
    db = tmp_path / "spool.db"
    _fill(db, n)
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    lab = _crash_lab(tmp_path, n)
    env = _env(counting_sink.port)
    rng = random.Random(20260405)
    targets = sorted(rng.sample(range(n // 10, n * 9 // 10), 3))
    kills = 0
    for target in targets:
        proc = subprocess.Popen([sys.executable, str(child), str(db), str(lab)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while counting_sink.total() < target and proc.poll() is None:
            assert time.monotonic() < deadline, "no progress towards the kill point"
            time.sleep(0.002)
        time.sleep(rng.random() * 0.01)  # land anywhere in a send, not on a boundary
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert kills == 3, "every kill must land while mail is still being delivered"
    done = subprocess.run([sys.executable, str(child), str(db), str(lab)], env=env,
                          capture_output=True, timeout=120 + n // 50)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    rows = _final_states(db)
    assert len(rows) == n
    assert all(state in FINAL for _, state, _, _ in rows), Counter(s for _, s, _, _ in rows)
    ambiguous = {rid for rid, state, amb, _ in rows if amb}
    assert all(state == "dead_lettered" for rid, state, amb, _ in rows if amb)
    for rid, state, amb, _ in rows:
        if not amb:  # nothing lost: a clean final state was really received, once
            assert state == "delivered", (rid, state)
            assert counting_sink.copies[rid] == 1, (rid, counting_sink.copies[rid])
    # an ambiguous recipient was in DATA at a kill: at most three (one per kill per
    # connection in DATA), received at most once, and never resent afterwards
    dupes = sum(c - 1 for c in counting_sink.copies.values() if c > 1)
    assert dupes <= len(ambiguous)
    assert all(counting_sink.copies[rid] <= 1 for rid in ambiguous)
    assert set(counting_sink.copies) <= {rid for rid, *_ in rows}
    assert sum(counting_sink.copies.values()) >= n - len(ambiguous)
    print(f"crash: {n} messages, {kills} kills, "
          f"{sum(state == 'delivered' for _, state, _, _ in rows)} delivered, "
          f"{len(ambiguous)} ambiguous, {dupes} duplicates, "
          f"{sum(counting_sink.copies.values())} received")


def test_sigterm_finishes_in_flight_and_restart_resumes(counting_sink: Any,
                                                        tmp_path: Path) -> None:
    n = 400
    home = tmp_path / "home"
    home.mkdir()
    _fill(home / "spool.db", n)
    env = _env(counting_sink.port)
    http = _port()
    cmd = [sys.executable, "-m", "inboxlab", "serve", "--config", str(LAB), "--home",
           str(home), "--port", str(http)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while counting_sink.total() < n // 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    with pytest.raises(OSError):  # intake is closed
        socket.create_connection(("127.0.0.1", http), timeout=1).close()
    first = counting_sink.total()
    assert first < n, "SIGTERM must stop before the whole backlog is sent"
    rows = _final_states(home / "spool.db")
    # in-flight work finished: no open attempt is left, nothing needs the ambiguous path
    spool = Spool(home / "spool.db", recover=False)
    open_attempts = spool.db.execute("SELECT count(*) FROM attempts WHERE finished IS NULL"
                                     ).fetchone()[0]
    spool.close()
    assert open_attempts == 0
    assert not any(amb for _, _, amb, _ in rows)
    assert sum(state == "delivered" for _, state, _, _ in rows) == first

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while counting_sink.total() < n and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"'ambiguous': 0" in out
    rows = _final_states(home / "spool.db")
    assert [s for _, s, _, _ in rows] == ["delivered"] * n
    assert counting_sink.copies == Counter({rid: 1 for rid, *_ in rows})
