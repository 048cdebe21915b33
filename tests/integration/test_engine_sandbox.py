"""The real runner delivers through the real sandbox (Gmail model) on loopback.

One compressed clock drives both sides: the sandbox runs model time at ``SCALE`` x real
time and the engine's runner and spool read a clock running at the same rate, so Gmail's
900 s back-off for 421 4.7.28 takes a few real seconds. What must hold:

- every message is DKIM-signed with the engine's test keys (``fixtures/dkim``) and the
  sandbox verifies it against the key records of its own config (Gmail refuses
  unauthenticated mail with 550 5.7.26, so "all delivered" needs DKIM to verify);
- STARTTLS is required by the model (421 4.7.29 otherwise) and is used; the engine accepts
  the sandbox's self-signed certificate only because the test passes an unverified context;
  with the default context the handshake fails;
- the lane travels in ``X-Inboxlab-Lane``;
- a burst from the pool's two source IPs over the per-IP quota draws 421 4.7.28, which the
  core classifies throttled -> retry_slow_down, and everything is delivered in the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.delivery.message import build_base
from engine.delivery.mx import Destination
from engine.delivery.smtp import ConnectionPool, unverified_tls_context
from engine.dkim import load_signer, public_key_record
from engine.runner import Runner
from engine.spool import Spool
from sim.sandbox.messages import dkim_domain

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
KEYS = ROOT / "fixtures" / "dkim"
SCALE = 200.0          # model seconds per real second, both sides
N = 60                 # messages in the burst
IP_QUOTA = 10          # per source IP per 60 model seconds (0.3 s real): the burst trips it


def _dkim_records() -> dict[str, str]:
    """The key records of the engine's signing keys, as the sandbox config lists them."""
    rsa = load_signer("mail.acme.example", "lab2026r", KEYS / "test-rsa2048.pem")
    ed = load_signer("mail.acme.example", "lab2026e", KEYS / "test-ed25519.pem",
                     "ed25519-sha256")
    return {"lab2026r._domainkey.mail.acme.example": public_key_record(rsa),
            "lab2026e._domainkey.mail.acme.example": public_key_record(ed)}


def _scaled_clock(scale: float) -> Callable[[], float]:
    epoch, mono = time.time(), time.monotonic()
    return lambda: epoch + (time.monotonic() - mono) * scale


@pytest.fixture
def gmail(sandbox_factory: Callable[..., Any]) -> Any:
    box = sandbox_factory({
        "time_scale": SCALE,
        "dkim_keys": _dkim_records(),
        "providers": {"gmail": {
            "port": 0, "tls": True,
            # both tx-a addresses are established IPs: no young-IP daily cap in the way
            "ip_age_days": {"127.0.0.2": 90, "127.0.0.3": 90},
            "overrides": {"rates": {"ip": [IP_QUOTA, IP_QUOTA, IP_QUOTA]}},
        }},
    })
    box.port = box.sandbox.addresses["gmail"][1]
    return box


def _enqueue(spool: Spool, n: int) -> None:
    body = build_base(from_addr="alerts@mail.acme.example", from_name="Acme",
                      subject="Your sign-in code", text="Your code is 424242.\n")
    for i in range(n):
        spool.accept(tenant="acme", idem_key=f"k{i}", request=f"r{i}".encode(),
                     lane="transactional", campaign=None, sending_domain="mail.acme.example",
                     mail_from="alerts@mail.acme.example", recipients=[f"user{i}@gmail.com"],
                     body=body)


def test_default_context_refuses_the_self_signed_cert(gmail: Any) -> None:
    """Without the explicit test context, STARTTLS to the sandbox fails (cert verified)."""
    async def attempt() -> None:
        pool = ConnectionPool(timeout=5)
        dest = Destination("gmail.com", "127.0.0.1", gmail.port)
        await pool._open("127.0.0.2", dest, "required")

    with pytest.raises(Exception) as info:
        asyncio.run(attempt())
    assert "certificate" in str(info.value).lower() or "ssl" in type(info.value).__name__.lower()


def test_runner_through_gmail_model(gmail: Any, tmp_path: Path) -> None:
    env = dict(os.environ, INBOXLAB_SANDBOX_HOST="127.0.0.1",
               INBOXLAB_PORT_GMAIL=str(gmail.port))
    config = load_config(LAB, env=env)
    clock = _scaled_clock(SCALE)
    spool = Spool(tmp_path / "spool.db", clock=clock)
    _enqueue(spool, N)

    async def scenario() -> None:
        runner = Runner(config, spool, secret=b"t" * 32, seed=5, timeout=10, clock=clock,
                        tls_context=unverified_tls_context())
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.05))
        deadline = time.monotonic() + 28
        while time.monotonic() < deadline and spool.active():
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(scenario())
    events = spool.events_after(0, limit=100_000)
    delivered = [e for e in events if e.event == "delivered"]
    deferred = [e for e in events if e.event == "deferred"]
    assert spool.active() == 0, f"{spool.active()} of {N} still queued after 28 s"
    assert len({e.recipient for e in delivered}) == N
    assert {e.event for e in events} <= {"enqueued", "delivered", "deferred", "breaker",
                                         "automation"}, "nothing bounced or dead-lettered"
    # the burst drew Gmail's per-IP 4.7.28 and the core slowed down instead of bouncing
    throttled = [e for e in deferred if e.smtp_code == 421 and "4.7.28" in (e.response or "")]
    assert throttled, "the burst never drew 421 4.7.28"
    assert all("throttled -> retry_slow_down" in (e.reason or "") for e in throttled)
    assert {e.source_ip for e in delivered} == {"127.0.0.2", "127.0.0.3"}
    assert not [e for e in deferred if "4.7.29" in (e.response or "")], "sent without TLS"
    # retries waited for Gmail's back-off (900 model s), not hammered the server
    per_rcpt: dict[str, list[float]] = {}
    for e in events:
        if e.event in ("deferred", "delivered"):
            per_rcpt.setdefault(e.recipient or "", []).append(float(e.ts))
    gaps = [b - a for ts in per_rcpt.values() for a, b in itertools.pairwise(ts)]
    assert gaps and min(gaps) >= 0.8 * 900

    gmail.stop()
    home = gmail.home / "sandbox"
    stats = json.loads((home / "stats.json").read_text())["gmail"]
    assert stats["accepted"] == N and stats["duplicates"] == 0
    # the server refused some sessions with 421; the engine deferred the rest of each such
    # session's batch with the same reply, as an MTA does
    assert 1 <= stats["deferred"] <= len(throttled)
    store = gmail.sandbox.store
    assert store.count("gmail") == N
    stored = [data for box in store.mailboxes("gmail") for data in store.messages("gmail", box)]
    assert len(stored) == N
    records = _dkim_records()
    for data in stored[:10]:
        assert b"\r\nX-Inboxlab-Lane: transactional\r\n" in data
        assert data.lower().count(b"dkim-signature:") == 2
        assert dkim_domain(data, records) == "mail.acme.example"
        assert dkim_domain(data.replace(b"424242", b"424243"), records) is None  # tampered
