"""The intake under uvicorn on a loopback socket: concurrent keep-alive clients, every 202
committed before it was sent, racing duplicates of one Idempotency-Key get one id, and a
conflicting key in a busy group does not fail the other requests of that group."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from engine.config import load_config
from engine.intake.app import create_app
from engine.spool import Spool

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
ACME = {"Authorization": "Bearer acme-demo-key-1"}
MSG = {"from": "news@mail.acme.example", "subject": "Digest", "text": "Hello\n",
       "lane": "lifecycle"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_concurrent_posts_over_real_sockets(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    app = create_app(load_config(LAB), spool, secret=b"s" * 32)
    port = _free_port()

    async def scenario() -> dict[str, Any]:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        srv = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        out: dict[str, Any] = {}
        limits = httpx.Limits(max_connections=16)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20,
                                         limits=limits) as http:
                # 300 distinct messages; keys d0..d19 also sent a second time with the
                # same body (a retry racing the original) and c0..c9 with another body
                def post(key: str, rcpt: str) -> Any:
                    return http.post("/v1/messages", json={**MSG, "to": [rcpt]},
                                     headers={**ACME, "Idempotency-Key": key})
                calls = [post(f"d{i}" if i < 20 else f"k{i}", f"u{i}@example.net")
                         for i in range(300)]
                calls += [post(f"d{i}", f"u{i}@example.net") for i in range(20)]
                calls += [post(f"d{i}", f"other{i}@example.net") for i in range(10)]
                answers = await asyncio.gather(*calls)
                out["answers"] = [(r.status_code, r.json()) for r in answers]
                first = out["answers"][0][1]["id"]
                got = await http.get(f"/v1/messages/{first}", headers=ACME)
                out["get"] = got.status_code
        finally:
            server.should_exit = True
            await srv
        return out

    out = asyncio.run(scenario())
    answers = out["answers"]
    groups = {i: [answers[i], answers[300 + i]] + ([answers[320 + i]] if i < 10 else [])
              for i in range(20)}
    for i, tries in groups.items():
        ids = {body["id"] for status, body in tries if status == 202}
        conflicts = sum(1 for status, _ in tries if status == 409)
        assert len(ids) == 1, i  # one message per key, whichever request came first
        # same-body retries never conflict; the other body conflicts unless it came first
        assert conflicts == (0 if i >= 10 else (1 if tries[2][0] == 409 else 2)), i
    assert all(status == 202 for status, _ in answers[20:300])
    # everything answered 202 is in the spool (committed before the answer), exactly once
    rows = spool.db.execute("SELECT public_id FROM messages").fetchall()
    answered = {body["id"] for status, body in answers if status == 202}
    assert answered == {r[0] for r in rows} and len(rows) == 300
    assert out["get"] == 200
