"""``inboxlab serve`` as a real subprocess, every listener through real loopback sockets.

One process runs the HTTP intake, the runner, the inbound feedback receiver, SMTP
submission and the webhook dispatcher. The test plays the outside world: an aiosmtpd sink
stands in for the recipient's MX, an ``http.server`` is the tenant's webhook endpoint, and
``smtplib`` is both a feedback-loop sender (an ARF complaint to the serve process's inbound
port) and a submission client (STARTTLS + AUTH). Then SIGTERM, and a restart on the same
home that must resume the webhook stream where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import hash_key
from engine.spool import Spool
from engine.webhooks import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
KEY = "h6-acme-key"
HOOK_SECRET = "h6-webhook-secret"
MSGID = re.compile(rb"^Message-ID: (<m_[0-9a-f]+\.\d+@[^>]+>)", re.M | re.I)


class Sink:
    """The recipients' MX: keeps (MAIL FROM, RCPT TOs, bytes) of every message."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                             envelope.original_content))
        return "250 2.0.0 ok"

    def to(self, rcpt: str) -> list[tuple[str, list[str], bytes]]:
        with self.lock:
            return [g for g in self.got if rcpt in g[1]]


class Hooks:
    """The tenant's webhook endpoint: keeps (signature header, body) of each POST."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        hooks = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.got.append((self.headers[SIGNATURE_HEADER], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        """Every event received, each batch's signature checked."""
        out: list[dict[str, Any]] = []
        for header, body in list(self.got):
            verify(HOOK_SECRET.encode(), header, body, time.time())
            out.extend(json.loads(body)["events"])
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(cond: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def write_lab(path: Path, sink_port: int, hook_port: int) -> Path:
    fx = ROOT / "fixtures"
    path.write_text(f"""
name = "serve-test"
policy = "{fx / 'policies' / 'default-v1.toml'}"

[tenants.acme]
api_keys = ["{hash_key(KEY)}"]
webhook_url = "http://127.0.0.1:{hook_port}/hooks/acme"
webhook_secret = "env:H6_WEBHOOK_SECRET"

[domains."mail.acme.example"]
tenant = "acme"
return_path = "bounce.mail.acme.example"
dkim = [{{ selector = "s1", key_file = "{fx / 'dkim' / 'test-rsa2048.pem'}" }}]

[pools.tx-a]
source_ips = ["127.0.0.2"]

[routes]
"*" = "127.0.0.1:{sink_port}"

[serve.inbound]
feedback_domains = ["fbl.acme.example"]

[serve.webhooks]
require_secrets = true
poll = "50ms"
""")
    return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from aiosmtpd.controller import Controller

    sink = Sink()
    sink_port = _free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=sink_port)
    ctl.start()
    hooks = Hooks()
    lab = write_lab(tmp_path / "lab.toml", sink_port, hooks.port)
    procs: list[subprocess.Popen[bytes]] = []
    yield {"sink": sink, "hooks": hooks, "lab": lab, "home": tmp_path / "home",
           "procs": procs}
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    hooks.server.shutdown()
    hooks.server.server_close()
    ctl.stop()


def start(world: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = dict(os.environ, H6_WEBHOOK_SECRET=HOOK_SECRET, INBOXLAB_SECRET="s" * 32,
               PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "inboxlab", "serve", "--config", str(world["lab"]),
           "--home", str(world["home"]), "--port", str(_free_port()), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    return out.decode()


def post(base: str, rcpt: str, key: str) -> str:
    r = httpx.post(f"{base}/v1/messages", headers={"Authorization": f"Bearer {KEY}",
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
        "From: <fbl@isp.example>\r\nTo: <fbl@fbl.acme.example>\r\nSubject: complaint\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: TestFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{verp}>\r\nFrom: news@mail.acme.example\r\nTo: {rcpt}\r\n"
        f"Message-ID: {msgid}\r\nSubject: hello\r\n\r\nhi there\r\n--b1--\r\n").encode()


def _hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def test_serve_runs_every_listener_and_resumes(world: dict[str, Any]) -> None:
    sink: Sink = world["sink"]
    hooks: Hooks = world["hooks"]
    proc, where = start(world)
    assert where["webhooks"] == ["acme"] and where["webhooks_skipped"] == {}
    assert set(where["feedback_domains"]) == {"bounce.mail.acme.example", "fbl.acme.example"}
    base = f"http://{where['http']}"

    # 1. HTTP intake -> runner -> the sink
    first = post(base, "alice@example.net", "k1")
    _wait(lambda: sink.to("alice@example.net"), "alice's message at the sink")
    _wait(lambda: state(base, first) == "delivered", "alice delivered")
    verp, _, raw = sink.to("alice@example.net")[0]
    assert verp.startswith("bounces+") and verp.endswith("@bounce.mail.acme.example")
    msgid = MSGID.search(raw).group(1).decode()  # type: ignore[union-attr]

    # 2. an ARF complaint sent by SMTP to the inbound port suppresses alice
    with smtplib.SMTP(*_hostport(where["inbound"]), timeout=10) as s:
        s.ehlo("isp.example")
        s.mail("fbl@isp.example")
        assert s.rcpt("someone@elsewhere.example")[0] == 550  # never a relay
        assert s.rcpt(verp)[0] == 250
        code, text = s.data(arf(verp, "alice@example.net", msgid))
    assert code == 250 and b"complaint" in text, text
    second = post(base, "alice@example.net", "k2")
    _wait(lambda: state(base, second) == "suppressed", "the second message suppressed")
    assert len(sink.to("alice@example.net")) == 1

    # 3. SMTP submission: STARTTLS, AUTH with the tenant's API key, then delivered
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*_hostport(where["submission"]), timeout=10) as s:
        s.ehlo("client.example")
        s.starttls(context=tls)
        s.ehlo("client.example")
        s.login("acme", KEY)
        s.sendmail("news@mail.acme.example", ["bob@example.net"],
                    b"From: news@mail.acme.example\r\nTo: bob@example.net\r\n"
                    b"Message-ID: <sub-1@client.example>\r\nSubject: via smtp\r\n\r\nbody\r\n")
    _wait(lambda: sink.to("bob@example.net"), "bob's submitted message at the sink")

    # 4. webhooks: signed (checked in events()), in outbox order, gap-free stream numbers
    def acme_events() -> list[dict[str, Any]]:
        return hooks.events()

    _wait(lambda: any(e["event"] == "delivered" and e.get("recipient") == "bob@example.net"
                      for e in acme_events()), "bob's delivered event at the webhook")
    evs = acme_events()
    assert [e["stream_seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["seq"] for e in evs] == sorted({e["seq"] for e in evs})
    alice = [e["event"] for e in evs if e.get("recipient") == "alice@example.net"]
    assert alice.index("enqueued") < alice.index("delivered") < alice.index("complaint")
    assert alice.count("suppressed") >= 2  # the complaint's, then the second message's

    # 5. SIGTERM: exit 0, nothing in flight, every event pushed before exit
    out = stop(proc)
    assert "0 in flight" in out
    assert "'complaint': 1" in out and "submission accepted 1" in out, out
    spool = Spool(world["home"] / "spool.db", recover=False)
    try:
        assert spool.db.execute("SELECT count(*) FROM attempts WHERE finished IS NULL"
                                ).fetchone()[0] == 0
        last = spool.db.execute("SELECT max(seq) FROM outbox WHERE tenant='acme'"
                                ).fetchone()[0]
    finally:
        spool.close()
    before = hooks.events()
    assert before[-1]["seq"] == last
    with pytest.raises(OSError):
        socket.create_connection(_hostport(where["submission"]), timeout=1).close()

    # 6. restart on the same home: the webhook stream resumes, nothing is sent twice
    proc, where = start(world)
    assert where["recovered"] == {"requeued": 0, "ambiguous": 0}
    third = post(f"http://{where['http']}", "carol@example.net", "k3")
    _wait(lambda: any(e["event"] == "delivered" and e.get("message_id") == third
                      for e in hooks.events()), "carol's delivered event")
    after = hooks.events()[len(before):]
    assert after[0]["stream_seq"] == before[-1]["stream_seq"] + 1
    assert min(e["seq"] for e in after) > last
    stop(proc)
    assert len(sink.got) == 3
