"""The API's ``timezone`` field: an IANA zone or a 422; stored with the message for the
engine's send windows; a request without it reads as it did before the field existed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from engine.config import load_config
from engine.intake.app import create_app
from engine.spool import Spool

LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
ACME = {"Authorization": "Bearer acme-demo-key-1", "Content-Type": "application/json"}
MSG = {"from": "news@mail.acme.example", "to": ["ann@example.net"], "subject": "Digest",
       "text": "Hello Ann\n", "lane": "lifecycle"}


def _post(app: Any, posts: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            return [await h.post("/v1/messages", content=json.dumps(body),
                                 headers={**ACME, "Idempotency-Key": key})
                    for key, body in posts]
    return asyncio.run(go())


def test_timezone_is_checked_stored_and_optional(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    app = create_app(load_config(LAB), spool, secret=b"s" * 32)
    ok, bad, plain, again = _post(app, [
        ("tz", {**MSG, "timezone": "Europe/Berlin"}),
        ("bad", {**MSG, "timezone": "Europe/Atlantis"}),
        ("plain", MSG),
        ("plain", {**MSG, "timezone": None}),  # null reads as absent: same request
    ])
    assert ok.status_code == 202 and plain.status_code == 202
    assert bad.status_code == 422 and "Europe/Atlantis" in bad.text
    assert again.status_code == 202 and again.json() == {**plain.json(), "created": False}
    zones = sorted((p.timezone or "") for p in spool.take_pending())
    assert zones == ["", "Europe/Berlin"]  # the plain message has none
    spool.close()


def test_a_spool_from_before_the_column_gains_it(tmp_path: Path) -> None:
    import sqlite3

    from engine.spool.store import SCHEMA

    old = SCHEMA.replace(" timezone TEXT,", "")
    assert old != SCHEMA
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(old)
    db.close()
    spool = Spool(tmp_path / "old.db")
    cols = {r[1] for r in spool.db.execute("PRAGMA table_info(messages)")}
    assert "timezone" in cols
    spool.accept(tenant="acme", idem_key="k", request=b"r", lane="lifecycle", campaign=None,
                 sending_domain="news.acme.example", mail_from="n@news.acme.example",
                 recipients=["a@example.net"], body=b"x", timezone="Asia/Tokyo")
    assert [p.timezone for p in spool.take_pending()] == ["Asia/Tokyo"]
    spool.close()
