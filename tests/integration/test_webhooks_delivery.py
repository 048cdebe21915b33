"""Webhook delivery to a real HTTP receiver on loopback that fails its first deliveries."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.spool import Spool
from engine.webhooks import SIGNATURE_HEADER, Endpoint, WebhookDispatcher, verify

pytestmark = pytest.mark.integration
SECRET = b"whsec-test"


class Receiver:
    """An ``http.server`` on 127.0.0.1 answering 500 to the first ``fail`` requests."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.calls = 0
        self.got: list[tuple[str, bytes]] = []
        recv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recv.calls += 1
                if recv.calls <= recv.fail:
                    self.send_response(500)
                else:
                    recv.got.append((self.headers[SIGNATURE_HEADER], body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _traffic(spool: Spool, tenant: str, n: int, tag: str) -> None:
    for i in range(n):
        spool.accept(tenant=tenant, idem_key=f"{tag}{i}", request=b"r", lane="transactional",
                     campaign=None, sending_domain="d.example", mail_from="a@d.example",
                     recipients=[f"r{i}@x.example", f"s{i}@y.example"], body=b"b\r\n")
    for p in spool.take_pending():
        spool.start_attempts([p.id], pool="p", source_ip="127.0.0.2")
        spool.finish(p.id, "delivered" if p.id % 2 else "deferred", event="delivered"
                     if p.id % 2 else "deferred", code=250 if p.id % 2 else 451)


async def _until(disp: WebhookDispatcher, ep: Endpoint, spool: Spool, client: Any) -> None:
    last = spool.events_after(0, tenant=ep.tenant, limit=100_000)[-1].seq
    deadline = time.monotonic() + 20
    while disp.cursor(ep).outbox_seq != last:
        assert time.monotonic() < deadline, "webhook delivery did not catch up"
        await disp.step(client)
        await asyncio.sleep(0.01)


def test_in_order_signed_no_gaps_with_failures(tmp_path: Path) -> None:
    recv = Receiver(fail=3)
    spool = Spool(tmp_path / "spool.db")
    _traffic(spool, "acme", 4, "a")
    _traffic(spool, "globex", 2, "g")  # another stream: never sent to acme's endpoint
    ep = Endpoint("acme", f"http://127.0.0.1:{recv.port}/hooks/acme", SECRET)
    dead = Endpoint("globex", "http://127.0.0.1:9/hooks/globex", SECRET)  # nothing listens

    async def run() -> None:
        disp = WebhookDispatcher(spool, [ep, dead], batch=3, base_backoff=0.02,
                                 max_backoff=0.1)
        async with httpx.AsyncClient() as client:
            await _until(disp, ep, spool, client)
            assert disp.failed_batches >= 3
            assert disp.cursor(dead).failures >= 1 and disp.cursor(dead).outbox_seq == 0
            # a restart resumes from the persisted cursor, and numbering continues
            _traffic(spool, "acme", 1, "later")
            again = WebhookDispatcher(spool, [ep], batch=3, base_backoff=0.02)
            await _until(again, ep, spool, client)

    try:
        asyncio.run(run())
    finally:
        recv.stop()
    rows: list[dict[str, Any]] = []
    for header, body in recv.got:
        verify(SECRET, header, body, now=time.time())  # raises on a bad signature
        doc = json.loads(body)
        assert doc["stream"] == "acme"
        rows.extend(doc["events"])
    want = spool.events_after(0, tenant="acme", limit=100_000)
    assert [r["stream_seq"] for r in rows] == list(range(1, len(want) + 1))  # no gap, no dup
    assert [r["seq"] for r in rows] == [e.seq for e in want]  # outbox order kept
    assert all(r["tenant"] == "acme" for r in rows)
    per_msg: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        per_msg.setdefault((r["message_id"], r["recipient"]), []).append(r["event"])
    assert all(evs[0] == "enqueued" for evs in per_msg.values())
    assert recv.calls == len(recv.got) + 3
    spool.close()
