"""Inbound feedback through real sockets: ARF complaints and DSNs sent by SMTP to the
receiver suppress the recipient, write events, and move the breaker of a real Scheduler."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import load_config
from engine.delivery.message import verp_address
from engine.inbound import FeedbackProcessor, InboundServer, feedback_domains
from engine.inbound.wire import feed_runner
from engine.intake.app import create_app
from engine.policy.scheduler import Result
from engine.runner import Runner
from engine.spool import Spool

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"
SECRET = b"k" * 32
T0 = 1_780_000_000.0  # a fixed wall clock the test advances


def arf(verp: str, rcpt: str, msgid: str, ftype: str = "abuse") -> bytes:
    return (
        "From: <fbl@isp.example>\r\nTo: <fbl@bounce.mail.acme.example>\r\n"
        "Subject: complaint\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        "--b1\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {ftype}\r\nUser-Agent: TestFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\nOriginal-Rcpt-To: <{rcpt}>\r\n\r\n"
        "--b1\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{verp}>\r\nFrom: news@mail.acme.example\r\nTo: {rcpt}\r\n"
        f"Message-ID: {msgid}\r\nSubject: hi\r\n\r\nhello\r\n--b1--\r\n").encode()


def dsn(rcpt: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounce@x\r\nSubject: failure\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b2"\r\n\r\n'
        "--b2\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
        "--b2\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--b2--\r\n").encode()


def _send(port: int, rcpt: str, data: bytes) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        return s.sendmail("fbl@isp.example", [rcpt], data)


def test_complaint_suppresses_and_trips_breaker(tmp_path: Path) -> None:
    now = [T0]
    clock = lambda: now[0]  # noqa: E731
    config = load_config(LAB)
    spool = Spool(tmp_path / "spool.db", clock=clock)
    runner = Runner(config, spool, secret=SECRET, clock=clock)
    # 250 transactional messages to gmail.com, carried by tx-a and recorded as delivered by
    # driving the real scheduler (due -> start_attempts -> record -> apply).
    rcpts = [f"user{i}@gmail.com" for i in range(250)]
    acc = spool.accept(tenant="acme", idem_key="bulk", request=b"r", lane="transactional",
                       campaign=None, sending_domain="mail.acme.example",
                       mail_from="news@mail.acme.example", recipients=rcpts, body=b"x\r\n")
    runner.intake()
    group = runner.groups[config.pool_policy["tx-a"]]
    sched = group.scheduler
    delivered = 0
    for _ in range(2000):
        for d in sched.due(now[0]):
            spool.start_attempts(d.ids, pool=d.pool, source_ip=d.source_ip)
            for i in d.ids:
                res = Result(id=i, pool=d.pool, source_ip=d.source_ip, provider=d.provider,
                             code=250, text="ok", data_completed=True)
                runner.apply(sched.record(res, now[0]), {i: {"code": 250, "pool": d.pool,
                                                              "provider": d.provider}})
                delivered += 1
        if delivered == len(rcpts):
            break
        now[0] += 1.0
    assert delivered == len(rcpts)
    msg = spool.message(acc.public_id, "acme")
    assert msg is not None and {r["state"] for r in msg["recipients"]} == {"delivered"}

    victim = rcpts[7]
    rid = next(j for j in range(1, 300) if spool.job(j).rcpt == victim)
    verp = verp_address(SECRET, acc.public_id, victim, "bounce.mail.acme.example")
    forged = verp[:-len("@bounce.mail.acme.example") - 1] + ("0" if verp[-26] != "0" else "1") \
        + "@bounce.mail.acme.example"
    signals: list[Any] = []
    applied: list[Any] = []
    feed = feed_runner(runner)

    def on_signal(sig: Any) -> None:
        signals.append(sig)
        applied.extend(feed(sig))

    proc = FeedbackProcessor(spool, SECRET, config=config, on_signal=on_signal)
    domains = feedback_domains(config)

    async def scenario() -> dict[str, Any]:
        srv = InboundServer(proc, domains)
        port = await srv.start()
        out: dict[str, Any] = {}

        def smtp_side() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.ehlo("isp.example")
                out["relay"] = s.docmd("MAIL", "FROM:<x@isp.example>")[0], \
                    s.docmd("RCPT", "TO:<someone@gmail.com>")[0]
                s.rset()
            _send(port, "fbl@bounce.mail.acme.example",
                  arf(forged, rcpts[8], "<unrelated@elsewhere.example>"))
            report = arf(verp, victim, f"<{acc.public_id}.{rid}@mail.acme.example>")
            _send(port, "fbl@bounce.mail.acme.example", report)
            _send(port, "fbl@bounce.mail.acme.example", report)  # a duplicate: no effect
            # a permanent DSN sent to the VERP address of another recipient
            other = rcpts[9]
            _send(port, verp_address(SECRET, acc.public_id, other, "bounce.mail.acme.example"),
                  dsn(other))

        await asyncio.to_thread(smtp_side)
        await srv.close()
        return out

    out = asyncio.run(scenario())
    assert out["relay"] == (250, 550)
    assert proc.stats["forged"] == 1 and proc.stats["forged_tokens"] == 1
    assert proc.stats["complaint"] == 1 and proc.stats["duplicate"] == 1
    assert proc.stats["bounced"] == 1 and proc.stats["relay_refused"] == 1
    assert spool.is_suppressed("acme", victim)
    assert spool.is_suppressed("acme", rcpts[9])
    assert not spool.is_suppressed("acme", rcpts[8])  # the forged report changed nothing
    assert [s.kind for s in signals] == ["complaint", "bounce"]
    assert signals[0].pool == "tx-a" and signals[0].provider == "gmail"
    # 1 complaint in 250 attempts = 0.4 % >= the 0.1 % review threshold of the policy
    changes = [d for d in applied if getattr(d, "to_state", None)]
    assert changes and changes[0].from_state == "closed" and changes[0].to_state != "closed"
    events = spool.events_after(0, limit=100_000)
    names = [e.event for e in events]
    assert names.count("complaint") == 1 and names.count("bounced") == 1
    comp = next(e for e in events if e.event == "complaint")
    assert comp.recipient == victim and comp.message_id == acc.public_id and comp.pool == "tx-a"
    assert any(e.event == "breaker" and e.pool == "tx-a" for e in events)

    # a later POST to the complained-about recipient ends `suppressed`
    app = create_app(config, spool, secret=SECRET, clock=clock)

    async def post() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as http:
            r = await http.post("/v1/messages", headers={
                "Authorization": "Bearer acme-demo-key-1", "Idempotency-Key": "later"},
                json={"from": "news@mail.acme.example", "to": [victim], "subject": "again",
                      "text": "hi"})
            assert r.status_code == 202, r.text
            return str(r.json()["id"])

    later = asyncio.run(post())
    runner.intake()
    got = spool.message(later, "acme")
    assert got is not None and got["recipients"][0]["state"] == "suppressed"
    spool.close()
