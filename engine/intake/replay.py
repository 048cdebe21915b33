"""HTTP surface of dead letters: ``GET /v1/dlq`` (redacted listing) and ``POST /v1/replay``.

Owns the request shapes and tenant scoping: a tenant (Bearer API key, checked against the
config's hashed keys) sees and replays only its own dead letters. The work is
``engine.spool.dlq.DeadLetters``; ``on_replay`` wakes the runner. No policy here.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations.

from collections.abc import Callable
from typing import Any

from engine.config import LabConfig
from engine.errors import InputError
from engine.intake.auth import bearer_tenant
from engine.spool import Spool
from engine.spool.dlq import DeadLetters, Filter


def replay_router(config: LabConfig, spool: Spool,
                  on_replay: Callable[[], None] | None = None) -> Any:
    """The ``APIRouter`` to include in the intake app."""
    from fastapi import APIRouter, Header, HTTPException
    from pydantic import BaseModel, ConfigDict, Field

    dlq = DeadLetters(spool)
    router = APIRouter()

    class FilterBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        campaign: str | None = Field(default=None, max_length=64)
        provider: str | None = Field(default=None, max_length=64)
        reason: str | None = Field(default=None, max_length=200)
        state: str | None = None
        message_id: str | None = Field(default=None, max_length=64)

    class ReplayBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        filter: FilterBody = FilterBody()
        pool: str | None = None
        not_before: float | None = Field(default=None, ge=0)

    tenant_of = bearer_tenant(config)

    def make_filter(tenant: str, f: FilterBody) -> Filter:
        try:
            return Filter(tenant=tenant, **f.model_dump())
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None

    @router.get("/v1/dlq")
    async def list_dead(campaign: str | None = None, provider: str | None = None,
                        reason: str | None = None, state: str | None = None,
                        limit: int = 1000,
                        authorization: str | None = Header(default=None)) -> Any:
        tenant = tenant_of(authorization)
        f = make_filter(tenant, FilterBody(campaign=campaign, provider=provider,
                                           reason=reason, state=state))
        rows = dlq.list(f, limit=max(1, min(limit, 10_000)))
        return {"dead_letters": [r.as_dict() for r in rows]}

    @router.post("/v1/replay")
    async def replay(body: ReplayBody,
                     authorization: str | None = Header(default=None)) -> Any:
        tenant = tenant_of(authorization)
        if body.pool is not None and body.pool not in config.pools:
            raise HTTPException(422, f"unknown pool {body.pool!r}")
        res = dlq.replay(make_filter(tenant, body.filter), pool=body.pool,
                         not_before=body.not_before)
        if res.replayed and on_replay is not None:
            on_replay()
        return {"key": res.key, "replayed": len(res.replayed),
                "already_replayed": len(res.already)}

    return router
