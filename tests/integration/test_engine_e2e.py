"""End to end through real sockets: HTTP POST -> spool -> runner -> aiosmtpd sink.

The sink listens on 127.0.0.1; the runner binds the pool's source address (127.0.0.2 or
127.0.0.3 for tx-a); dkimpy verifies every DKIM signature at the receiver.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Any

import dkim
import pytest

from engine.config import load_config
from engine.dkim import load_signer, public_key_record
from engine.intake.app import create_app
from engine.runner import Runner
from engine.spool import Spool

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
KEYS = Path(__file__).parents[2] / "fixtures" / "dkim"
ACME = {"Authorization": "Bearer acme-demo-key-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """An aiosmtpd receiver that records peer, envelope and DKIM verdicts."""

    def __init__(self) -> None:
        rsa = load_signer("mail.acme.example", "lab2026r", KEYS / "test-rsa2048.pem")
        ed = load_signer("mail.acme.example", "lab2026e", KEYS / "test-ed25519.pem",
                         "ed25519-sha256")
        self.records = {b"lab2026r._domainkey.mail.acme.example.": public_key_record(rsa),
                        b"lab2026e._domainkey.mail.acme.example.": public_key_record(ed)}
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content

        def dns(name: bytes, timeout: int = 5) -> bytes:
            return self.records[name].encode()

        d = dkim.DKIM(data)
        sigs = [h for h in d.headers if h[0].lower() == b"dkim-signature"]
        ok = [d.verify(idx=i, dnsfunc=dns) for i in range(len(sigs))]
        with self.lock:
            self.got.append({"peer": session.peer[0], "from": envelope.mail_from,
                             "to": list(envelope.rcpt_tos), "data": data, "dkim": ok})
        return "250 2.0.0 queued"


@pytest.fixture
def sink() -> Any:
    from aiosmtpd.controller import Controller

    s = Sink()
    port = _free_port()
    ctl = Controller(s, hostname="127.0.0.1", port=port)
    ctl.start()
    s.port = port  # type: ignore[attr-defined]
    yield s
    ctl.stop()


def test_post_to_sink_signed_idempotent_and_unsubscribe(sink: Any, tmp_path: Path) -> None:
    import httpx
    import uvicorn

    env = dict(os.environ, INBOXLAB_PORT_OTHER=str(sink.port), INBOXLAB_SANDBOX_HOST="127.0.0.1")
    config = load_config(LAB, env=env)
    spool = Spool(tmp_path / "spool.db")
    secret = b"s" * 32
    http_port = _free_port()

    async def scenario() -> dict[str, Any]:
        runner = Runner(config, spool, secret=secret, seed=7, timeout=10)
        app = create_app(config, spool, secret=secret, on_accept=runner.wake.set)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port,
                                               log_level="warning", lifespan="off"))
        stop = asyncio.Event()
        srv = asyncio.create_task(server.serve())
        run = asyncio.create_task(runner.run(stop, poll=0.05))
        while not server.started:
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{http_port}"
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            msg = {"from": "news@mail.acme.example", "to": ["ann@example.net"],
                   "subject": "Your weekly digest", "text": "Hello Ann\n", "lane": "lifecycle",
                   "campaign": "wk12"}
            r1 = await http.post("/v1/messages", json=msg, headers={**ACME,
                                                                  "Idempotency-Key": "k1"})
            r2 = await http.post("/v1/messages", json=msg, headers={**ACME,
                                                                  "Idempotency-Key": "k1"})
            r3 = await http.post("/v1/messages", json={**msg, "subject": "other"},
                                 headers={**ACME, "Idempotency-Key": "k1"})
            out["codes"] = (r1.status_code, r2.status_code, r3.status_code)
            out["ids"] = (r1.json()["id"], r2.json()["id"])
            for _ in range(200):
                st = (await http.get(f"/v1/messages/{out['ids'][0]}", headers=ACME)).json()
                if st["recipients"][0]["state"] == "delivered":
                    break
                await asyncio.sleep(0.05)
            out["state"] = st
            out["globex_view"] = (await http.get(
                f"/v1/messages/{out['ids'][0]}",
                headers={"Authorization": "Bearer globex-demo-key-1"})).status_code
            # one-click unsubscribe from the List-Unsubscribe header the sink received
            data = sink.got[0]["data"].decode()
            url = next(line for line in data.splitlines() if line.startswith("List-Unsub"))
            token = url.split("/u/", 1)[1].split(">", 1)[0]
            out["get_unsub"] = (await http.get(f"/u/{token}")).status_code
            out["suppressed_after_get"] = spool.is_suppressed("acme", "ann@example.net")
            out["post_unsub"] = (await http.post(f"/u/{token}",
                                                 content=b"List-Unsubscribe=One-Click")).status_code
            out["forged"] = (await http.post(f"/u/{token[:-2]}00")).status_code
            r4 = await http.post("/v1/messages", json={**msg, "subject": "again"},
                                 headers={**ACME, "Idempotency-Key": "k2"})
            for _ in range(100):
                st4 = (await http.get(f"/v1/messages/{r4.json()['id']}", headers=ACME)).json()
                if st4["recipients"][0]["state"] not in ("queued", "scheduled"):
                    break
                await asyncio.sleep(0.05)
            out["after_unsub"] = st4["recipients"][0]["state"]
            ev = (await http.get("/v1/events?after=0", headers=ACME)).json()
            out["events"] = [e["event"] for e in ev["events"]]
            out["seqs"] = [e["seq"] for e in ev["events"]]
            out["crlf"] = (await http.post("/v1/messages", json={**msg, "subject": "a\r\nBcc: x"},
                                           headers={**ACME, "Idempotency-Key": "k3"})).status_code
            out["noauth"] = (await http.post("/v1/messages", json=msg,
                                             headers={"Idempotency-Key": "k4"})).status_code
        server.should_exit = True
        await srv
        stop.set()
        await run
        return out

    out = asyncio.run(scenario())
    spool.close()
    assert out["codes"] == (202, 202, 409)
    assert out["ids"][0] == out["ids"][1]
    assert out["state"]["recipients"][0]["state"] == "delivered"
    assert out["globex_view"] == 404
    assert len(sink.got) == 1, "the same Idempotency-Key must be sent once"
    got = sink.got[0]
    assert got["peer"] in ("127.0.0.2", "127.0.0.3")  # tx-a / shared-c source addresses
    assert got["dkim"] == [True, True]  # Ed25519 and RSA both verify at the receiver
    assert got["from"].startswith("bounces+" + out["ids"][0] + ".")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in got["data"]
    assert out["get_unsub"] == 200 and out["suppressed_after_get"] is False
    assert out["post_unsub"] == 200 and out["forged"] == 404
    assert out["after_unsub"] == "suppressed"
    assert "enqueued" in out["events"] and "delivered" in out["events"]
    assert "unsubscribe" in out["events"]
    assert out["seqs"] == sorted(out["seqs"])
    assert out["crlf"] == 422 and out["noauth"] == 401
