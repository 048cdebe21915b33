"""Two ``inboxlab serve`` processes -- two engine nodes -- on one PostgreSQL spool, every
surface through real loopback sockets (a private cluster: ``tests.integration.pg_server``).

The lab says ``[serve] spool = "${...}"`` (the URL, password included, comes from the
environment) and ``nodes = 2``. The test plays the world: a counting aiosmtpd sink is every
recipient's MX (it counts copies per spool recipient from our Message-ID, and rejects one
address as too large until told otherwise), ``httpx`` posts to both nodes' HTTP APIs,
``smtplib`` sends an ARF complaint to ONE node's inbound receiver, and the CLI runs
``inboxlab dlq list|replay --spool URL`` and ``inboxlab ingest --spool URL`` against the
shared spool.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import hash_key
from engine.spool.pg import split_url
from tests.integration.pg_server import pg_server, pg_url  # noqa: F401

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
KEY = "pg-acme-key"
PASSWORD = "s3cret-pw"  # trust auth ignores it; it must never be printed
MSGID = re.compile(rb"^Message-ID: (<m_[0-9a-f]+\.(\d+)@[^>]+>)", re.M | re.I)
BIG = "big@example.net"
N = 120  # messages posted, half to each node


class Sink:
    """Every recipient's MX: copies per spool recipient id, and the envelope of each."""

    def __init__(self) -> None:
        self.copies: Counter[int] = Counter()
        self.got: dict[str, list[tuple[str, bytes]]] = {}
        self.lock = threading.Lock()
        self.reject_big = True

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: Any) -> str:
        if address == BIG and self.reject_big:
            return "552 5.3.4 Message size exceeds fixed limit"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        m = MSGID.search(envelope.original_content)
        with self.lock:
            self.copies[int(m.group(2)) if m else -1] += 1
            for rcpt in envelope.rcpt_tos:
                self.got.setdefault(rcpt, []).append((envelope.mail_from,
                                                      envelope.original_content))
        return "250 2.0.0 ok"

    def to(self, rcpt: str) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.got.get(rcpt, []))

    def total(self) -> int:
        with self.lock:
            return sum(self.copies.values())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def write_lab(path: Path, sink_port: int) -> Path:
    fx = ROOT / "fixtures"
    path.write_text(f"""
name = "serve-pg"
policy = "{fx / 'policies' / 'default-v1.toml'}"

[tenants.acme]
api_keys = ["{hash_key(KEY)}"]

[domains."mail.acme.example"]
tenant = "acme"
return_path = "bounce.mail.acme.example"

[pools.tx-a]
source_ips = ["127.0.0.2"]

[routes]
"*" = "127.0.0.1:{sink_port}"

[shaping.override."*.generic"]
messages_per_second = 400.0

[serve]
spool = "${{PG_SPOOL_URL}}"
nodes = 2

[serve.submission]
enabled = false

[serve.webhooks]
enabled = false
""")
    return path


@pytest.fixture
def world(tmp_path: Path, pg_url: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    from aiosmtpd.controller import Controller

    sink = Sink()
    port = _free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    url = _with_password(pg_url)
    env = dict(os.environ, PG_SPOOL_URL=url, INBOXLAB_SECRET="n" * 32, PYTHONPATH=str(ROOT))
    procs: list[subprocess.Popen[bytes]] = []
    yield {"sink": sink, "lab": write_lab(tmp_path / "lab.toml", port), "url": url,
           "env": env, "tmp": tmp_path, "procs": procs}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    ctl.stop()


def start(world: dict[str, Any], name: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    cmd = [sys.executable, "-m", "inboxlab", "serve", "--config", str(world["lab"]),
           "--home", str(world["tmp"] / name), "--port", str(_free_port()), "--json"]
    proc = subprocess.Popen(cmd, env=world["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    world["procs"].append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""
    assert line, f"serve printed nothing: {proc.stderr.read() if proc.poll() else ''!r}"
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[bytes]) -> str:
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert PASSWORD not in out.decode() + err.decode()
    return out.decode()


def post(client: httpx.Client, base: str, rcpt: str, key: str) -> str:
    r = client.post(f"{base}/v1/messages", headers={"Authorization": f"Bearer {KEY}",
                                                    "Idempotency-Key": key},
                    json={"from": "news@mail.acme.example", "to": [rcpt],
                          "subject": "hello", "text": "hi there"}, timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def state(base: str, public_id: str) -> str:
    r = httpx.get(f"{base}/v1/messages/{public_id}",
                  headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["recipients"][0]["state"])


def arf(verp: str, rcpt: str, msgid: str) -> bytes:
    """An RFC 5965 abuse report about one message we sent."""
    return (
        "From: <fbl@isp.example>\r\nTo: <fbl@bounce.mail.acme.example>\r\n"
        "Subject: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: TestFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{verp}>\r\nFrom: news@mail.acme.example\r\nTo: {rcpt}\r\n"
        f"Message-ID: {msgid}\r\nSubject: hello\r\n\r\nhi there\r\n--b1--\r\n").encode()


def cli(world: dict[str, Any], *args: str) -> str:
    got = subprocess.run([sys.executable, "-m", "inboxlab", *args], env=world["env"],
                         capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr.decode()[-2000:]
    assert PASSWORD not in got.stdout.decode() + got.stderr.decode()
    return got.stdout.decode()


def _pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    libpq, schema = split_url(url)
    with psycopg.connect(libpq) as db:
        db.execute(f'SET search_path TO "{schema}"')
        return db.execute(sql).fetchall()


def test_two_serve_nodes_share_one_pg_spool(world: dict[str, Any]) -> None:
    sink: Sink = world["sink"]
    url: str = world["url"]
    (pa, wa), (pb, wb) = start(world, "node-a"), start(world, "node-b")
    for w in (wa, wb):
        assert w["nodes"] == 2 and "***" in w["spool"] and PASSWORD not in json.dumps(w)
        assert w["spool"].startswith("postgresql://postgres:***@127.0.0.1:")
    assert wa["node"] != wb["node"]
    bases = [f"http://{wa['http']}", f"http://{wb['http']}"]

    # 1. N messages, half posted to each node: each delivered exactly once
    t0 = time.monotonic()
    with httpx.Client() as client, ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: post(client, bases[i % 2], f"u{i}@example.net",
                                           f"k{i}"), range(N)))
    _wait(lambda: sink.total() >= N, f"{N} messages at the sink")
    took = time.monotonic() - t0
    rows = _pg(url, "SELECT id, state FROM recipients ORDER BY id")
    assert len(rows) == N and {s for _, s in rows} == {"delivered"}
    assert sink.copies == Counter({rid: 1 for rid, _ in rows})
    per_node = dict(_pg(url, "SELECT node, count(*) FROM attempts GROUP BY node"))
    assert set(per_node) == {wa["node"], wb["node"]}, per_node  # both nodes sent
    assert sum(per_node.values()) == N
    assert state(bases[1], ids[0]) == "delivered"  # node b answers for node a's message
    print(f"two nodes: {N} messages posted and delivered in {took:.2f}s; attempts {per_node}")

    # 2. an ARF complaint to node b's inbound suppresses the recipient for both nodes
    victim = "u0@example.net"  # posted to node a
    verp, raw = sink.to(victim)[0]
    msgid = MSGID.search(raw).group(1).decode()  # type: ignore[union-attr]
    host, port = wb["inbound"].rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=10) as s:
        s.ehlo("isp.example")
        s.mail("fbl@isp.example")
        assert s.rcpt(verp)[0] == 250
        code, text = s.data(arf(verp, victim, msgid))
    assert code == 250 and b"complaint" in text, text
    with httpx.Client() as client:
        again = [post(client, b, victim, f"again-{i}") for i, b in enumerate(bases)]
    for base, pid in zip(bases, again, strict=True):
        _wait(lambda base=base, pid=pid: state(base, pid) == "suppressed",
              f"the complained-about recipient suppressed via {base}")
    assert len(sink.to(victim)) == 1

    # 3. a dead letter: listed by `inboxlab dlq list --spool URL`, re-driven by `dlq replay`
    with httpx.Client() as client:
        big = post(client, bases[0], BIG, "big-1")
    _wait(lambda: state(bases[1], big) == "dead_lettered", "the too-large message dead")
    listed = [json.loads(line) for line in cli(world, "dlq", "list", "--spool", url,
                                               "--json").splitlines()]
    assert [(d["message_id"], d["recipient"], d["state"]) for d in listed] == [
        (big, "b**@example.net", "dead_lettered")]
    assert "5.3.4" in (listed[0]["reason"] or "")
    sink.reject_big = False
    out = cli(world, "dlq", "replay", "--spool", url, "--tenant", "acme")
    assert out.startswith("replayed 1, already replayed 0"), out
    _wait(lambda: sink.to(BIG), "the replayed message at the sink")
    _wait(lambda: state(bases[0], big) == "delivered", "the replayed message delivered")
    assert cli(world, "dlq", "replay", "--spool", url, "--tenant", "acme").startswith(
        "replayed 0"), "a repeated replay must do nothing"

    # 4. SIGTERM both: clean stops, nothing in flight
    for proc in (pa, pb):
        assert "0 in flight" in stop(proc)
    assert _pg(url, "SELECT count(*) FROM attempts WHERE finished IS NULL") == [(0,)]
    assert _pg(url, "SELECT count(*) FROM nodes") == [(0,)]  # both left cleanly
    assert sum(sink.copies.values()) == N + 1  # + the replayed one; nothing else, no copy

    # 5. `inboxlab ingest --spool URL` loads the outbox into a warehouse exactly once
    wh = str(world["tmp"] / "warehouse")
    plain = url.replace(f":{PASSWORD}@", "@")  # the ingest command echoes its argument
    total = _pg(url, "SELECT count(*) FROM outbox")[0][0]
    first = cli(world, "ingest", "--spool", plain, "--home", wh)
    assert f": {total} new events" in first, (first, total)
    assert "nothing new" in cli(world, "ingest", "--spool", plain, "--home", wh)
    n = cli(world, "query", "--home", wh, "SELECT count(*) AS n FROM events")
    assert str(total) in n, n
