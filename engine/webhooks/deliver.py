"""Webhook delivery from the spool's outbox: one cursor per endpoint, in order, retried.

Owns the delivery loop over the ``webhook_cursors`` rows (in the spool database, SQLite or
PostgreSQL, through the spool's ``webhook_*`` methods: endpoint, last outbox seq delivered,
the stream's own gap-free sequence number, failures, next attempt time). On a spool shared
by several engine nodes, one node at a time delivers an endpoint (``webhook_claim``: a
leased claim, taken over when its node stops renewing it), so the stream stays in order. A batch is the tenant's next outbox events after the cursor; it is POSTed
signed (``engine.webhooks.sign``) and the cursor advances only after a 2xx, in the same
transaction that resets the failure count -- so delivery is at-least-once and never out of
order (one batch in flight per endpoint; a failed batch is re-sent from the same place, with
the same ``stream_seq`` numbers). Failures back off exponentially
(``base * 2**(failures-1)``, capped, optional jitter from an injected ``random.Random``).
It must not move messages or write events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import LabConfig
from engine.webhooks.sign import SIGNATURE_HEADER, resolve_secret, sign


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One tenant's webhook: where events go and the secret that signs them."""

    tenant: str
    url: str
    secret: bytes

    @property
    def key(self) -> str:
        """The cursor key of this endpoint."""
        return f"{self.tenant} {self.url}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """The persisted delivery position of one endpoint."""

    outbox_seq: int
    stream_seq: int
    failures: int
    next_at: float
    last_error: str | None


def endpoints_from_config(config: LabConfig, env: Mapping[str, str] | None = None
                          ) -> list[Endpoint]:
    """Every tenant with a ``webhook_url``. Raises ``ConfigError`` for a missing secret."""
    base = Path(config.file).parent
    out = []
    for name, t in sorted(config.tenants.items()):
        if t.webhook_url is None:
            continue
        if t.webhook_secret is None:
            from engine.errors import ConfigError

            raise ConfigError(config.file, f"tenants.{name}.webhook_secret",
                              "a webhook_url needs a webhook_secret reference")
        out.append(Endpoint(name, t.webhook_url, resolve_secret(
            t.webhook_secret, env=env, base=base, file=config.file)))
    return out


def _row(seq: int, stream_seq: int, event: Any) -> dict[str, Any]:
    row = {k: v for k, v in event.to_row().items() if v is not None}
    for k in ("ts", "enqueued_ts"):
        if k in row:
            row[k] = row[k].isoformat()
    row["seq"] = seq
    row["stream_seq"] = stream_seq
    return row


class WebhookDispatcher:
    """Delivers each endpoint's events. ``await run(stop)`` or ``await step()``."""

    def __init__(self, spool: Any, endpoints: list[Endpoint], *, batch: int = 100,
                 base_backoff: float = 1.0, max_backoff: float = 3600.0,
                 timeout: float = 10.0, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.spool = spool
        self.endpoints = endpoints
        self.batch = batch
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.rng = rng
        self.clock = clock
        self.sent_batches = 0
        self.failed_batches = 0
        spool.prepare_side_tables()
        spool.webhook_open([(ep.key, ep.tenant) for ep in endpoints])

    def cursor(self, ep: Endpoint) -> Cursor:
        """The persisted cursor of ``ep``."""
        return Cursor(*self.spool.webhook_cursor(ep.key))

    def release(self) -> None:
        """Give up this engine's claims on its endpoints (a clean stop: on a shared spool
        another node delivers them at once instead of after the claim's lease)."""
        self.spool.webhook_release()

    def backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure."""
        delay = min(self.max_backoff, self.base_backoff * 2 ** max(0, failures - 1))
        if self.rng is not None:
            delay *= 1.0 + 0.2 * self.rng.random()
        return float(delay)

    def payload(self, ep: Endpoint) -> tuple[bytes, int, int] | None:
        """(body, last outbox seq, last stream seq) of the next batch, or None if idle."""
        got = self._next(ep)
        return None if got is None else got[1:]

    def _next(self, ep: Endpoint) -> tuple[int, bytes, int, int] | None:
        """(cursor's outbox seq, body, last outbox seq, last stream seq) of the next batch."""
        cur = self.cursor(ep)
        events = self.spool.events_after(cur.outbox_seq, tenant=ep.tenant, limit=self.batch)
        if not events:
            return None
        rows = [_row(int(e.seq or 0), cur.stream_seq + i + 1, e) for i, e in enumerate(events)]
        body = json.dumps({"stream": ep.tenant, "events": rows},
                          separators=(",", ":")).encode()
        return cur.outbox_seq, body, rows[-1]["seq"], rows[-1]["stream_seq"]

    async def deliver(self, ep: Endpoint, client: Any) -> int:
        """Try one batch now; returns events delivered (0 when idle or failed)."""
        nxt = self._next(ep)
        if nxt is None:
            return 0
        from_seq, body, last_seq, last_stream = nxt
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(ep.secret, body, int(self.clock())),
                   "X-Inboxlab-Stream": ep.tenant}
        error: str | None = None
        try:
            resp = await client.post(ep.url, content=body, headers=headers,
                                     timeout=self.timeout)
            if not 200 <= resp.status_code < 300:
                error = f"HTTP {resp.status_code}"
        except Exception as exc:  # any transport failure is retried later
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is None:
            n: int = self.spool.webhook_advance(ep.key, from_seq=from_seq, to_seq=last_seq,
                                                to_stream=last_stream)
            self.sent_batches += 1
            return n
        self.spool.webhook_fail(ep.key, error, self.backoff)
        self.failed_batches += 1
        return 0

    async def step(self, client: Any) -> float | None:
        """Deliver every due endpoint until it is idle or fails. Returns the earliest time
        an endpoint in backoff is due again (None: all idle)."""
        wakes: list[float] = []
        for ep in self.endpoints:
            if not self.spool.webhook_claim(ep.key):
                continue  # another node of a shared spool delivers it
            while True:
                cur = self.cursor(ep)
                if cur.next_at > self.clock():
                    wakes.append(cur.next_at)
                    break
                if await self.deliver(ep, client) == 0:
                    cur = self.cursor(ep)
                    if cur.failures:
                        wakes.append(cur.next_at)
                    break
        return min(wakes, default=None)

    async def run(self, stop: asyncio.Event, *, poll: float = 0.5) -> None:
        """Loop until ``stop`` is set (new outbox events are picked up every ``poll`` s)."""
        import httpx

        async with httpx.AsyncClient() as client:
            while not stop.is_set():
                wake = await self.step(client)
                delay = poll if wake is None else max(0.005, min(poll, wake - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
