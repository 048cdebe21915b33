"""The HTTP intake API: submit messages, read their state and events, one-click unsubscribe.

Owns request validation, tenant authentication (Bearer key checked against the hashed
keys of the config), idempotency answers (202 / same id / 409), budgets (429 with
Retry-After) and the RFC 8058 one-click endpoint. Every accepted POST is committed to the
spool before the 202: concurrent POSTs are committed together (group commit: each request
queues its arguments, one writer task commits what is queued in ONE transaction with
``Spool.accept_many`` and only then answers each request). It does not send mail and does
not decide policy.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations.

import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from engine.config import LabConfig
from engine.delivery.message import build_base, parse_unsubscribe_token
from engine.errors import InputError
from engine.intake.auth import bearer_tenant
from engine.policy.bucket import TokenBucket
from engine.policy.params import BucketSpec
from engine.spool import IdempotencyConflict, Spool

_HEADER_NAME = r"^[A-Za-z0-9-]{1,64}$"
_GROUP_MAX = 512  # requests committed in one transaction at most
_RESERVED = {"from", "to", "subject", "date", "message-id", "dkim-signature", "return-path",
             "list-unsubscribe", "list-unsubscribe-post", "feedback-id", "reply-to"}


def create_app(config: LabConfig, spool: Spool, *, secret: bytes,
               on_accept: Callable[[], None] | None = None, max_active: int = 1_000_000,
               clock: Callable[[], float] = time.time) -> Any:
    """The FastAPI application (OpenAPI at ``/openapi.json``)."""
    from fastapi import FastAPI, Header, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    class Body(BaseModel):
        model_config = ConfigDict(extra="forbid")
        from_: str = Field(alias="from", pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=254)
        from_name: str | None = Field(default=None, max_length=200)
        to: list[str] = Field(min_length=1, max_length=1000)
        subject: str = Field(max_length=998)
        text: str = Field(max_length=5_000_000)
        html: str | None = Field(default=None, max_length=5_000_000)
        lane: Literal["transactional", "lifecycle", "prospecting"] = "transactional"
        campaign: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
        reply_to: str | None = Field(default=None, max_length=254)
        headers: dict[str, str] = {}

        @field_validator("to")
        @classmethod
        def _addresses(cls, v: list[str]) -> list[str]:
            for a in v:
                if not (a.count("@") >= 1 and " " not in a and "<" not in a and len(a) < 255
                        and "\r" not in a and "\n" not in a):
                    raise ValueError(f"not an email address: {a!r}")
            return v

        @field_validator("subject", "from_name", "reply_to")
        @classmethod
        def _no_crlf(cls, v: str | None) -> str | None:
            if v is not None and ("\r" in v or "\n" in v):
                raise ValueError("CR/LF not allowed in a header value")
            return v

        @field_validator("headers")
        @classmethod
        def _headers(cls, v: dict[str, str]) -> dict[str, str]:
            import re

            for name, value in v.items():
                if not re.match(_HEADER_NAME, name) or name.lower() in _RESERVED:
                    raise ValueError(f"header name not allowed: {name!r}")
                if "\r" in value or "\n" in value:
                    raise ValueError(f"header {name}: CR/LF not allowed in a header value")
            return v

    buckets: dict[str, TokenBucket] = {
        t: TokenBucket.from_spec(BucketSpec(rate=m.limit.rate, burst=m.limit.burst), clock())
        for t, m in config.tenants.items() if m.limit is not None}
    app = FastAPI(title="inboxlab intake", version="1")

    @functools.lru_cache(maxsize=256)
    def cached_base(from_addr: str, from_name: str | None, subject: str, text: str,
                    html: str | None, reply_to: str | None,
                    headers: tuple[tuple[str, str], ...]) -> bytes:
        # building MIME with the email package costs ~0.8 ms; a campaign POSTs the same
        # content once per recipient, so identical content is built once
        return build_base(from_addr=from_addr, from_name=from_name, subject=subject,
                          text=text, html=html, reply_to=reply_to, headers=dict(headers))
    queued: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
    writers: set[asyncio.Task[None]] = set()

    async def write_queued() -> None:
        # The one writer: commits what is queued, in groups, until nothing is; a request
        # that goes away (client disconnect) cannot stop it, so no other request waits forever.
        while queued:
            group = queued[:_GROUP_MAX]
            del queued[:_GROUP_MAX]
            try:
                results: list[Any] = await asyncio.to_thread(
                    spool.accept_many, [kw for kw, _ in group])
            except Exception as exc:  # e.g. the disk is full: every request of the group
                results = [exc] * len(group)
            for (_, fut), res in zip(group, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def accept(**kw: Any) -> Any:
        """``spool.accept(**kw)`` through the group commit: returns after the commit."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued.append((kw, fut))
        if not writers:
            task = asyncio.get_running_loop().create_task(write_queued())
            writers.add(task)
            task.add_done_callback(writers.discard)
        res = await fut
        if isinstance(res, BaseException):
            raise res
        return res
    from engine.intake.replay import replay_router

    app.include_router(replay_router(config, spool, on_replay=on_accept))

    tenant_of = bearer_tenant(config)

    @app.post("/v1/messages", status_code=202)
    async def submit(request: Request, authorization: str | None = Header(default=None),
                     idempotency_key: str | None = Header(default=None)) -> Any:
        tenant = tenant_of(authorization)
        if not idempotency_key or len(idempotency_key) > 200:
            raise HTTPException(422, "an Idempotency-Key header (1-200 chars) is required")
        raw = await request.body()
        try:
            body = Body.model_validate_json(raw)
        except ValueError as exc:
            msg = str(exc)
            errs = exc.errors() if hasattr(exc, "errors") else [{"msg": msg}]
            raise HTTPException(422, [{"loc": list(e.get("loc", ())), "msg": e["msg"]}
                                      for e in errs]) from None
        domain = body.from_.rsplit("@", 1)[1].lower()
        model = config.domains.get(domain)
        if model is None or model.tenant != tenant:
            raise HTTPException(422, f"{domain} is not a sending domain of tenant {tenant}")
        if body.lane not in config.tenants[tenant].lanes:
            raise HTTPException(422, f"lane {body.lane} is not enabled for tenant {tenant}")
        bucket = buckets.get(tenant)
        now = clock()
        if bucket is not None:
            if bucket.available(now) < len(body.to):
                wait = max(1, int(bucket.time_until(len(body.to), now) + 0.999))
                raise HTTPException(429, "tenant rate limit",
                                    headers={"Retry-After": str(wait)})
            bucket.take(len(body.to), now)  # reserved now, given back unless stored

        def refund() -> None:
            if bucket is not None:
                bucket.tokens = min(bucket.burst, bucket.tokens + len(body.to))

        try:
            base = cached_base(body.from_, body.from_name, body.subject, body.text,
                               body.html, body.reply_to, tuple(body.headers.items()))
            canon = json.dumps(body.model_dump(by_alias=True), sort_keys=True).encode()
            acc = await accept(tenant=tenant, idem_key=idempotency_key, request=canon,
                               lane=body.lane, campaign=body.campaign, sending_domain=domain,
                               mail_from=body.from_, recipients=body.to, body=base,
                               max_active=max_active)
        except IdempotencyConflict as exc:
            refund()
            raise HTTPException(409, str(exc)) from None
        except InputError as exc:
            refund()
            if "full" in str(exc):
                raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from None
            raise HTTPException(422, str(exc)) from None
        except BaseException:
            refund()
            raise
        if not acc.created:
            refund()
        elif on_accept is not None:
            on_accept()
        return JSONResponse({"id": acc.public_id, "created": acc.created}, status_code=202)

    @app.get("/v1/messages/{public_id}")
    async def get_message(public_id: str,
                          authorization: str | None = Header(default=None)) -> Any:
        tenant = tenant_of(authorization)
        found = spool.message(public_id, tenant)
        if found is None:
            raise HTTPException(404, "no such message")
        return found

    @app.get("/v1/events")
    async def events(after: int = 0, limit: int = 1000,
                     authorization: str | None = Header(default=None)) -> Any:
        tenant = tenant_of(authorization)
        evs = spool.events_after(after, tenant=tenant, limit=max(1, min(limit, 10_000)))
        rows = [{k: v for k, v in e.to_row().items() if v is not None} for e in evs]
        for r in rows:
            for k in ("ts", "enqueued_ts"):
                if k in r:
                    r[k] = r[k].isoformat()
        return {"events": rows, "next": evs[-1].seq if evs else after}

    @app.post("/u/{token}", response_class=PlainTextResponse)
    async def unsubscribe(token: str) -> str:
        # RFC 8058: the POST (body "List-Unsubscribe=One-Click") unsubscribes; no auth/cookies.
        try:
            t = parse_unsubscribe_token(secret, token)
        except InputError:
            raise HTTPException(404, "unknown unsubscribe link") from None
        spool.suppress(t.tenant, t.address, "unsubscribe")
        return "unsubscribed\n"

    @app.get("/u/{token}", response_class=PlainTextResponse)
    async def unsubscribe_page(token: str) -> str:
        # A GET (link scanners, prefetchers) must change nothing.
        return "To unsubscribe, confirm with a POST to this address.\n"

    return app
