"""Two real engine nodes on one PostgreSQL spool, as subprocesses over real sockets.

Each node is a process running ``engine.runner.Runner`` on a ``PgSpool`` of the same schema;
both deliver to one counting aiosmtpd sink on 127.0.0.1 that records each Message-ID
(``<public_id.rid@domain>``), so copies are counted per spool recipient.

- Both alive: every message received exactly once, every recipient delivered, and both
  nodes did part of the work (the queue is shared, not swallowed by the first).
- One node ``kill -9``-ed midway: the other takes its claims over once its lease expires
  and finishes the rest; nothing is lost, and copies beyond one exist only for recipients
  flagged ambiguous (DATA under way at the kill), which are never resent.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.spool.pg import PgSpool, split_url
from tests.integration.pg_server import pg_server, pg_url  # noqa: F401

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
MSGID = re.compile(rb"^Message-ID: <m_[0-9a-f]+\.(\d+)@", re.M | re.I)
FINAL = {"delivered", "bounced", "expired", "suppressed", "dead_lettered"}
SENDERS = [("acme", "news.acme.example"), ("acme", "mail.acme.example"),
           ("globex", "globex.example")]
N = 2000
LEASE = 2.0

CHILD = """
import asyncio, sys
from engine.config import load_config
from engine.runner import Runner
from engine.spool.pg import PgSpool

async def main() -> None:
    url, lab, node, lease, held = sys.argv[1:6]
    spool = PgSpool(url, run_id=node, node=node, lease=float(lease), max_held=int(held))
    runner = Runner(load_config(lab), spool, secret=b"c" * 32, timeout=10)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, poll=0.02))
    print("started", node, flush=True)
    while spool.active():
        await asyncio.sleep(0.05)
    stop.set()
    await task
    print("taken_over", spool.taken_over, flush=True)
    spool.close()

asyncio.run(main())
"""


class CountingSink:
    """Counts copies per spool recipient id (from the Message-ID)."""

    def __init__(self) -> None:
        self.copies: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.port = 0

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
def sink() -> Iterator[CountingSink]:
    from aiosmtpd.controller import Controller

    box = CountingSink()
    box.port = _port()
    ctl = Controller(box, hostname="127.0.0.1", port=box.port)
    ctl.start()
    yield box
    ctl.stop()


def _lab(tmp: Path) -> Path:
    """fixtures/lab.toml with absolute paths, the generic receiver's rate and the tenants'
    and domains' limits lifted, and no DKIM keys: this tests the spool, not shaping or
    signing (at the demo limits 2,000 messages take half a minute)."""
    text = LAB.read_text().replace('"policies/', f'"{LAB.parent}/policies/') \
        .replace('"dkim/', f'"{LAB.parent}/dkim/')
    text = re.sub(r"limit = \{ rate = [0-9.]+, burst = \d+ \}",
                  "limit = { rate = 2000.0, burst = 4000 }", text)
    text = re.sub(r"^dkim = \[.*?\]\n", "", text, flags=re.S | re.M)  # CPU for signing
    text += '\n[shaping.override."*.generic"]\nmessages_per_second = 400.0\n'
    out = tmp / "nodes-lab.toml"
    out.write_text(text)
    return out


def _fill(url: str, n: int) -> None:
    spool = PgSpool(url, node="filler")
    reqs = []
    for i in range(n):
        tenant, domain = SENDERS[i % len(SENDERS)]
        reqs.append(dict(tenant=tenant, idem_key=f"k{i}", request=b"%d" % i, lane="lifecycle",
                         campaign="nodes", sending_domain=domain, mail_from=f"news@{domain}",
                         recipients=[f"r{i}@example.net"],
                         body=b"Subject: nodes\r\nFrom: news@" + domain.encode()
                         + b"\r\n\r\nbody %d\r\n" % i))
    for lo in range(0, n, 500):
        assert all(getattr(r, "created", False) for r in spool.accept_many(reqs[lo:lo + 500]))
    spool.close()


def _rows(url: str) -> tuple[list[tuple[int, str, bool]], Counter[str]]:
    """(id, state, ambiguous) of every recipient, and attempts per node."""
    import psycopg

    libpq, schema = split_url(url)
    with psycopg.connect(libpq) as db:
        db.execute(f'SET search_path TO "{schema}"')
        rows = db.execute("SELECT id, state, ambiguous FROM recipients ORDER BY id").fetchall()
        per = Counter({n: c for n, c in db.execute(
            "SELECT node, count(*) FROM attempts GROUP BY node")})
    return rows, per


def _start(child: Path, url: str, lab: Path, node: str, env: dict[str, str]
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(child), url, str(lab), node, str(LEASE), "150"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _setup(sink: CountingSink, tmp: Path, url: str) -> tuple[Path, Path, dict[str, str]]:
    _fill(url, N)
    child = tmp / "node.py"
    child.write_text(CHILD)
    env = dict(os.environ, INBOXLAB_PORT_OTHER=str(sink.port),
               INBOXLAB_SANDBOX_HOST="127.0.0.1", INBOXLAB_SECRET="c" * 32,
               PYTHONPATH=str(ROOT))
    return child, _lab(tmp), env


def _finish(proc: subprocess.Popen[bytes], timeout: float) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


def test_two_nodes_share_one_queue_and_deliver_each_message_once(
        sink: CountingSink, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    child, lab, env = _setup(sink, tmp_path, pg_url)
    t0 = time.monotonic()
    procs = [_start(child, pg_url, lab, name, env) for name in ("node-a", "node-b")]
    for p in procs:
        _finish(p, 90)
    took = time.monotonic() - t0
    rows, per_node = _rows(pg_url)
    assert len(rows) == N
    assert [s for _, s, _ in rows] == ["delivered"] * N
    assert sink.copies == Counter({rid: 1 for rid, _, _ in rows})
    assert set(per_node) == {"node-a", "node-b"} and sum(per_node.values()) == N
    assert min(per_node.values()) >= N // 10, per_node  # both really worked
    print(f"two nodes: {N} messages in {took:.1f}s, attempts per node {dict(per_node)}")


def test_a_killed_node_is_taken_over_after_its_lease(
        sink: CountingSink, pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    child, lab, env = _setup(sink, tmp_path, pg_url)
    victim = _start(child, pg_url, lab, "node-a", env)
    other = _start(child, pg_url, lab, "node-b", env)
    deadline = time.monotonic() + 60
    while sink.total() < N * 2 // 5:
        assert victim.poll() is None and other.poll() is None, "a node stopped early"
        assert time.monotonic() < deadline, "no progress towards the kill point"
        time.sleep(0.002)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    victim.stdout.close()  # type: ignore[union-attr]
    victim.stderr.close()  # type: ignore[union-attr]
    killed_at = time.monotonic()
    out = _finish(other, 120)
    assert time.monotonic() - killed_at >= LEASE * 0.9  # it waited for the lease, not less
    taken = re.search(r"taken_over \{'requeued': (\d+), 'ambiguous': (\d+)\}", out)
    assert taken, out
    requeued, amb_taken = int(taken.group(1)), int(taken.group(2))
    assert requeued + amb_taken > 0, "the killed node held nothing: the kill proved nothing"

    rows, per_node = _rows(pg_url)
    assert len(rows) == N
    assert all(state in FINAL for _, state, _ in rows), Counter(s for _, s, _ in rows)
    ambiguous = {rid for rid, _, amb in rows if amb}
    assert len(ambiguous) == amb_taken
    assert all(state == "dead_lettered" for _, state, amb in rows if amb)
    for rid, state, amb in rows:
        if not amb:  # nothing lost: every clean final state was received exactly once
            assert state == "delivered", (rid, state)
            assert sink.copies[rid] == 1, (rid, sink.copies[rid])
    assert all(sink.copies[rid] <= 1 for rid in ambiguous)  # never resent
    assert set(sink.copies) <= {rid for rid, _, _ in rows}
    assert sum(sink.copies.values()) >= N - len(ambiguous)
    assert per_node["node-a"] > 0 and per_node["node-b"] > 0
    print(f"kill -9: {N} messages, node-a attempts {per_node['node-a']}, "
          f"taken over {requeued} requeued + {amb_taken} ambiguous, "
          f"{sum(sink.copies.values())} received")
