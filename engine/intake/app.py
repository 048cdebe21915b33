"""The HTTP intake API: submit messages, read their state and events, one-click unsubscribe.

Owns request validation, tenant authentication (Bearer key checked against the hashed
keys of the config), idempotency answers (202 / same id / 409), budgets (429 with
Retry-After) and the RFC 8058 one-click endpoint. POST /v1/messages is answered from ASGI
(``engine.intake.fast``: raw body bytes validated by pydantic-core, no FastAPI dependency
solving) and is still declared as a FastAPI route, so ``/openapi.json`` documents its body.
Every accepted POST is committed to the spool before the 202: concurrent POSTs are
committed together (``engine.intake.group.GroupCommit`` over ``Spool.accept_many``: ONE
transaction, then each request is answered). It does not send mail and does not decide
policy.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations.

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Literal

from engine.config import LabConfig
from engine.delivery.message import build_base, parse_unsubscribe_token
from engine.errors import InputError
from engine.intake.auth import bearer_tenant
from engine.intake.fast import IntakeAPI
from engine.intake.group import GroupCommit
from engine.intake.mime import fast_base
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
    from fastapi import Header, HTTPException, Request, Response
    from fastapi.responses import PlainTextResponse
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
        # the recipients' IANA time zone ("America/New_York"): lanes with a send window
        # deliver inside it in the recipient's local time (unknown: the window never holds)
        timezone: str | None = Field(default=None, max_length=64)

        @field_validator("timezone")
        @classmethod
        def _zone(cls, v: str | None) -> str | None:
            if v is None:
                return v
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown IANA time zone {v!r}") from None
            return v

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
    app = IntakeAPI(title="inboxlab intake", version="1")
    validate_json = Body.model_validate_json

    @functools.lru_cache(maxsize=256)
    def cached_base(from_addr: str, from_name: str | None, subject: str, text: str,
                    html: str | None, reply_to: str | None,
                    headers: tuple[tuple[str, str], ...]) -> bytes:
        # building MIME with the email package costs ~0.6-1.3 ms: the plain case is built
        # without it (byte-identical, property-tested); a campaign POSTs the same content
        # once per recipient, so identical content is built once
        fast = fast_base(from_addr=from_addr, from_name=from_name, subject=subject, text=text,
                         html=html, reply_to=reply_to, headers=dict(headers))
        if fast is not None:
            return fast
        return build_base(from_addr=from_addr, from_name=from_name, subject=subject,
                          text=text, html=html, reply_to=reply_to, headers=dict(headers))
    # every accepted POST goes through one group commit: committed before its 202
    writer: GroupCommit[dict[str, Any]] = GroupCommit(spool.accept_many, limit=_GROUP_MAX)
    accept = writer.submit
    app.state.group_commit = writer
    from engine.intake.replay import replay_router

    app.include_router(replay_router(config, spool, on_replay=on_accept))

    tenant_of = bearer_tenant(config)

    async def submit_raw(headers: dict[str, str], raw: bytes) -> tuple[int, bytes, None]:
        """POST /v1/messages: request headers (lower-cased names) and raw body bytes ->
        202 and its JSON; raises ``HTTPException`` (401/409/422/429)."""
        tenant = tenant_of(headers.get("authorization"))
        idempotency_key = headers.get("idempotency-key")
        if not idempotency_key or len(idempotency_key) > 200:
            raise HTTPException(422, "an Idempotency-Key header (1-200 chars) is required")
        try:
            body = validate_json(raw)  # pydantic-core on the raw bytes
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
        n = len(body.to)
        bucket = buckets.get(tenant)
        now = clock()
        if bucket is not None:
            if bucket.available(now) < n:
                wait = max(1, int(bucket.time_until(n, now) + 0.999))
                raise HTTPException(429, "tenant rate limit",
                                    headers={"Retry-After": str(wait)})
            bucket.take(n, now)  # reserved now, given back unless stored

        def refund() -> None:
            if bucket is not None:
                bucket.tokens = min(bucket.burst, bucket.tokens + n)

        try:
            base = cached_base(body.from_, body.from_name, body.subject, body.text,
                               body.html, body.reply_to, tuple(body.headers.items()))
            fields = body.model_dump(by_alias=True)
            if fields.get("timezone") is None:  # requests from before the field read the same
                fields.pop("timezone", None)
            canon = json.dumps(fields, sort_keys=True).encode()
            acc = await accept(dict(tenant=tenant, idem_key=idempotency_key, request=canon,
                                    lane=body.lane, campaign=body.campaign,
                                    sending_domain=domain, mail_from=body.from_,
                                    recipients=body.to, body=base, max_active=max_active,
                                    timezone=body.timezone))
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
        return 202, (b'{"id":"' + acc.public_id.encode() + b'","created":'
                     + (b"true}" if acc.created else b"false}")), None

    # The route is declared for the OpenAPI document (and answers if the hot path is off,
    # e.g. under a root_path); ``IntakeAPI`` answers it from ASGI with the same function.
    @app.post("/v1/messages", status_code=202, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": Body.model_json_schema(by_alias=True)}}},
        "parameters": [
            {"name": "Authorization", "in": "header", "required": True,
             "schema": {"type": "string"}, "description": "Bearer <API key>"},
            {"name": "Idempotency-Key", "in": "header", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 200}}]})
    async def submit(request: Request) -> Any:
        headers = {k.lower(): v for k, v in reversed(request.headers.items())}
        status, content, _ = await submit_raw(headers, await request.body())
        return Response(content, status_code=status, media_type="application/json")

    app.hot("POST", "/v1/messages", submit_raw)

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
