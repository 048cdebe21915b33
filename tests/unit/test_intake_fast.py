"""The intake's ASGI hot path answers POST /v1/messages exactly as the FastAPI route does
(status, JSON body, headers that matter), keeps the API contract (202 / same id / 409 / 422
/ 401 / 429 with Retry-After) and keeps the request body published in the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.intake.app import create_app
from engine.intake.fast import IntakeAPI, read_body, render
from engine.spool import Spool

LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
ACME = {"Authorization": "Bearer acme-demo-key-1"}
MSG = {"from": "news@mail.acme.example", "to": ["ann@example.net"], "subject": "Digest",
       "text": "Hello Ann\n", "lane": "lifecycle", "campaign": "wk12"}

# (headers, body) pairs covering every answer of the endpoint; bodies are raw bytes so
# malformed JSON is exercised too
CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("ok", {**ACME, "Idempotency-Key": "k1"}, json.dumps(MSG).encode()),
    ("same key same body", {**ACME, "Idempotency-Key": "k1"}, json.dumps(MSG).encode()),
    ("same key other body", {**ACME, "Idempotency-Key": "k1"},
     json.dumps({**MSG, "subject": "other"}).encode()),
    ("no auth", {"Idempotency-Key": "k2"}, json.dumps(MSG).encode()),
    ("bad key", {"Authorization": "Bearer nope", "Idempotency-Key": "k2"},
     json.dumps(MSG).encode()),
    ("no idempotency key", ACME, json.dumps(MSG).encode()),
    ("long idempotency key", {**ACME, "Idempotency-Key": "k" * 201}, json.dumps(MSG).encode()),
    ("crlf subject", {**ACME, "Idempotency-Key": "k3"},
     json.dumps({**MSG, "subject": "hi\r\nBcc: x@evil.example"}).encode()),
    ("crlf header", {**ACME, "Idempotency-Key": "k3"},
     json.dumps({**MSG, "headers": {"X-A": "1\nBcc: x@evil.example"}}).encode()),
    ("reserved header", {**ACME, "Idempotency-Key": "k3"},
     json.dumps({**MSG, "headers": {"Return-Path": "a@b.c"}}).encode()),
    ("bad address", {**ACME, "Idempotency-Key": "k3"},
     json.dumps({**MSG, "to": ["not an address"]}).encode()),
    ("extra field", {**ACME, "Idempotency-Key": "k3"},
     json.dumps({**MSG, "bcc": ["a@b.c"]}).encode()),
    ("malformed json", {**ACME, "Idempotency-Key": "k3"}, b'{"from": "news@mail.acme'),
    ("not an object", {**ACME, "Idempotency-Key": "k3"}, b"[1, 2]"),
    ("empty body", {**ACME, "Idempotency-Key": "k3"}, b""),
    ("foreign domain", {**ACME, "Idempotency-Key": "k4"},
     json.dumps({**MSG, "from": "a@globex.example"}).encode()),
    ("lane not enabled", {"Authorization": "Bearer globex-demo-key-1", "Idempotency-Key": "k5"},
     json.dumps({**MSG, "from": "a@globex.example", "lane": "prospecting"}).encode()),
    ("too many recipients", {**ACME, "Idempotency-Key": "k6"},
     json.dumps({**MSG, "to": [f"u{i}@example.net" for i in range(1001)]}).encode()),
    ("over the tenant budget", {**ACME, "Idempotency-Key": "k7"},
     json.dumps({**MSG, "to": [f"u{i}@example.net" for i in range(1000)]}).encode()),
    ("second ok", {**ACME, "Idempotency-Key": "k8"},
     json.dumps({**MSG, "to": ["bob@example.org", "bob@example.org"]}).encode()),
]


def _run(app: Any, cases: list[tuple[str, dict[str, str], bytes]]) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            for name, headers, body in cases:
                r = await h.post("/v1/messages", content=body,
                                 headers={**headers, "Content-Type": "application/json"})
                out.append({"case": name, "status": r.status_code, "json": r.json(),
                            "type": r.headers["content-type"],
                            "retry": r.headers.get("retry-after"),
                            "auth": r.headers.get("www-authenticate")})
        return out

    return asyncio.run(go())


def _answers(tmp_path: Path, hot: bool) -> tuple[list[dict[str, Any]], Spool]:
    spool = Spool(tmp_path / f"spool-{hot}.db")
    t = [1000.0]
    app = create_app(load_config(LAB), spool, secret=b"s" * 32, clock=lambda: t[0])
    assert isinstance(app, IntakeAPI)
    app.hot_enabled = hot
    return _run(app, CASES), spool


def test_hot_path_answers_exactly_as_the_fastapi_route(tmp_path: Path) -> None:
    hot, hot_spool = _answers(tmp_path, True)
    slow, slow_spool = _answers(tmp_path, False)
    ids = {}
    for a, b in zip(hot, slow, strict=True):
        if a["status"] == 202:  # ids are random per spool: compare their shape
            ids[a["case"]] = (a["json"].pop("id"), b["json"].pop("id"))
        assert a == b, a["case"]
    by = {a["case"]: a for a in hot}
    assert [by[c]["status"] for c in ("ok", "same key same body", "same key other body")] == \
        [202, 202, 409]
    assert by["ok"]["json"] == {"created": True}
    assert by["same key same body"]["json"] == {"created": False}
    assert ids["ok"] == ids["same key same body"]
    assert by["no auth"]["status"] == 401 and by["no auth"]["auth"] == "Bearer"
    assert by["bad key"]["status"] == 401
    for case in ("no idempotency key", "long idempotency key", "crlf subject", "crlf header",
                 "reserved header", "bad address", "extra field", "malformed json",
                 "not an object", "empty body", "foreign domain", "lane not enabled",
                 "too many recipients"):
        assert by[case]["status"] == 422, case
    assert "CR/LF" in json.dumps(by["crlf subject"]["json"])
    assert "CR/LF" in json.dumps(by["crlf header"]["json"])
    assert by["crlf subject"]["json"]["detail"][0]["loc"] == ["subject"]
    # the acme burst is 1000: 1 + 1000 recipients do not fit, and nothing was reserved
    assert by["over the tenant budget"]["status"] == 429
    assert by["over the tenant budget"]["retry"] is not None
    assert int(by["over the tenant budget"]["retry"]) >= 1
    assert by["second ok"]["status"] == 202
    for spool in (hot_spool, slow_spool):
        # what the 202s promised is committed: two messages, 1 + 1 (deduplicated) recipients
        n_msg = spool.db.execute("SELECT count(*) FROM messages").fetchone()[0]
        n_rcpt = spool.db.execute("SELECT count(*) FROM recipients").fetchone()[0]
        assert (n_msg, n_rcpt) == (2, 2)
        for public_id in ids["ok"] + ids["second ok"]:
            if spool.message(public_id, "acme") is not None:
                break
        else:
            raise AssertionError("accepted ids not found in the spool")


def test_other_methods_and_paths_still_go_through_fastapi(tmp_path: Path) -> None:
    app = create_app(load_config(LAB), Spool(tmp_path / "s.db"), secret=b"s" * 32)

    async def go() -> tuple[int, int, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            return ((await h.get("/v1/messages", headers=ACME)).status_code,
                    (await h.get("/v1/messages/m_nope", headers=ACME)).status_code,
                    (await h.post("/v1/messages/", headers=ACME)).status_code)

    get_collection, get_missing, trailing = asyncio.run(go())
    assert get_collection == 405 and get_missing == 404
    assert trailing in (307, 404, 405)


def test_openapi_documents_the_request_body(tmp_path: Path) -> None:
    app = create_app(load_config(LAB), Spool(tmp_path / "s.db"), secret=b"s" * 32)
    op = app.openapi()["paths"]["/v1/messages"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert {"from", "to", "subject", "text"} <= set(schema["required"])
    assert schema["properties"]["lane"]["enum"] == ["transactional", "lifecycle",
                                                    "prospecting"]
    assert schema["additionalProperties"] is False
    assert {p["name"] for p in op["parameters"]} == {"Authorization", "Idempotency-Key"}


def test_unexpected_error_is_a_500_and_the_next_request_is_served(tmp_path: Path) -> None:
    app = IntakeAPI()
    calls = []

    async def handler(headers: dict[str, str], body: bytes) -> tuple[int, Any, None]:
        calls.append(body)
        if body == b"boom":
            raise RuntimeError("disk on fire")
        return 202, {"echo": body.decode(), "key": headers.get("x-k")}, None

    app.hot("POST", "/x", handler)

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            return [await h.post("/x", content=b"boom"),
                    await h.post("/x", content="é", headers=[("X-K", "a"), ("X-K", "b")])]

    boom, ok = asyncio.run(go())
    assert boom.status_code == 500 and boom.text == "Internal Server Error"
    assert ok.status_code == 202 and ok.json() == {"echo": "é", "key": "a"}
    assert ok.content == render({"echo": "é", "key": "a"})


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=6))
def test_read_body_joins_any_chunking(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    msgs = [{"type": "http.request", "body": p, "more_body": True} for p in pieces[:-1]]
    msgs.append({"type": "http.request", "body": pieces[-1], "more_body": False})

    async def go() -> bytes | None:
        it = iter(msgs)

        async def receive() -> dict[str, Any]:
            return next(it)

        return await read_body(receive)

    assert asyncio.run(go()) == data


def test_read_body_reports_a_client_that_went_away() -> None:
    msgs = iter([{"type": "http.request", "body": b"ab", "more_body": True},
                 {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(msgs)

    assert asyncio.run(read_body(receive)) is None


@pytest.mark.parametrize("hot", [True, False])
def test_a_burst_of_concurrent_posts_is_committed_in_groups(tmp_path: Path, hot: bool) -> None:
    spool = Spool(tmp_path / "s.db")
    app = create_app(load_config(LAB), spool, secret=b"s" * 32)
    app.hot_enabled = hot

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as h:
            return await asyncio.gather(*(
                h.post("/v1/messages", json={**MSG, "to": [f"u{i}@example.net"]},
                       headers={**ACME, "Idempotency-Key": f"b{i % 150}"})
                for i in range(200)))

    answers = asyncio.run(go())
    # keys b0..b49 were sent twice with different bodies: one of each pair wins, the other
    # gets 409; the rest are accepted once
    codes = sorted(r.status_code for r in answers)
    assert codes.count(202) == 150 and codes.count(409) == 50
    assert spool.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 150
    writer = app.state.group_commit
    assert writer.items == 200 and writer.groups < 200
