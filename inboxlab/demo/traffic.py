"""The demo's traffic: N messages across tenants, lanes and providers, sent over HTTP.

Owns ``plan`` (a seeded, deterministic list of requests: who sends what to whom, with a few
``unknown-*`` and ``complain-*`` recipients so bounces and complaints show) and ``send``
(``POST /v1/messages`` with a Bearer key and an Idempotency-Key, a bounded number in flight,
429 answered by waiting ``Retry-After``). It starts no process and reads no spool.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import InputError

# The plain demo keys whose hashes fixtures/demo/lab.toml stores.
KEYS = {"acme": "acme-demo-key-1", "globex": "globex-demo-key-1"}
# recipient domain -> weight (roughly a consumer list's mix)
DOMAINS = (("gmail.com", 40), ("yahoo.com", 20), ("outlook.com", 20), ("icloud.com", 10),
           ("example.net", 10))
# (tenant, from address, lane, campaign, weight)
STREAMS = (
    ("acme", "alerts@mail.acme.example", "transactional", None, 35),
    ("acme", "news@news.acme.example", "lifecycle", "spring-digest", 30),
    ("acme", "hello@news.acme.example", "prospecting", "cold-q2", 15),
    ("globex", "billing@globex.example", "transactional", None, 20),
)


@dataclass(frozen=True, slots=True)
class Request:
    tenant: str
    idem_key: str
    body: dict[str, Any]


def plan(n: int, run: str, seed: int = 7) -> list[Request]:
    """``n`` requests, the same for the same ``seed`` (recipients carry ``run`` so re-runs
    into one warehouse stay distinct)."""
    rng = random.Random(seed)
    domains, dw = [d for d, _ in DOMAINS], [w for _, w in DOMAINS]
    streams, sw = list(STREAMS), [s[4] for s in STREAMS]
    out = []
    for i in range(n):
        tenant, sender, lane, campaign, _ = rng.choices(streams, sw)[0]
        domain = rng.choices(domains, dw)[0]
        roll = rng.random()
        local = ("unknown" if roll < 0.03 else "complain" if roll < 0.05 else "user")
        rcpt = f"{local}-{run}-{i}@{domain}"
        body: dict[str, Any] = {
            "from": sender, "from_name": tenant.title(), "to": [rcpt], "lane": lane,
            "subject": {"transactional": "Your sign-in code", "lifecycle": "What's new this week",
                        "prospecting": "A quick question"}[lane],
            "text": f"Hello,\n\nmessage {i} of the inboxlab demo ({lane}).\n",
        }
        if campaign:
            body["campaign"] = campaign
        out.append(Request(tenant, f"demo-{run}-{i}", body))
    return out


async def _send_all(base_url: str, reqs: list[Request], concurrency: int,
                    on_done: Callable[[], None]) -> Counter[str]:
    import httpx

    results: Counter[str] = Counter()
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                r = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            for _ in range(20):
                resp = await client.post(
                    "/v1/messages", json=r.body,
                    headers={"Authorization": f"Bearer {KEYS[r.tenant]}",
                             "Idempotency-Key": r.idem_key})
                if resp.status_code != 429:
                    break
                await asyncio.sleep(min(5.0, float(resp.headers.get("Retry-After", "1"))))
            if resp.status_code != 202:
                raise InputError(f"intake refused message {r.idem_key}: HTTP "
                                 f"{resp.status_code} {resp.text[:200]}")
            results["created" if resp.json().get("created") else "duplicate"] += 1
            on_done()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results


def send(base_url: str, reqs: list[Request], *, concurrency: int = 16,
         on_done: Callable[[], None] = lambda: None) -> Counter[str]:
    """POST every request; returns counts of ``created`` / ``duplicate`` answers. Raises
    ``InputError`` when the intake refuses one (anything but 202 after 429 retries)."""
    return asyncio.run(_send_all(base_url, reqs, concurrency, on_done))
