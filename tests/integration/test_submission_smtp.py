"""SMTP submission through real sockets: STARTTLS + AUTH required, tenant-scoped From,
Message-ID idempotency, messages land in the spool."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.spool import Spool
from engine.submission import SubmissionServer, self_signed_context

pytestmark = pytest.mark.integration
LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"


def msg(frm: str, msgid: str, text: str = "hello") -> bytes:
    return (f"From: Acme <{frm}>\r\nTo: ann@example.net\r\nSubject: hi\r\n"
            f"Message-ID: {msgid}\r\nX-Inboxlab-Lane: lifecycle\r\n"
            f"X-Inboxlab-Campaign: wk9\r\n\r\n{text}\r\n").encode()


class Running:
    """The submission server on its own loop thread."""

    def __init__(self, srv: SubmissionServer) -> None:
        self.srv = srv
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(srv.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.srv.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    spool = Spool(tmp_path / "spool.db")
    srv = SubmissionServer(load_config(LAB), spool, self_signed_context(tmp_path / "tls"))
    run = Running(srv)
    yield run, spool
    run.stop()
    spool.close()


def _client(port: int) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("client.example")
    return s


def _tls(s: smtplib.SMTP) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo("client.example")


def test_no_open_relay(server: Any) -> None:
    run, spool = server
    with _client(run.port) as s:
        assert "starttls" in s.esmtp_features and "auth" not in s.esmtp_features
        assert s.docmd("AUTH", "PLAIN AGFjbWUAYWNtZS1kZW1vLWtleS0x")[0] == 530  # before TLS
        assert s.docmd("MAIL", "FROM:<a@mail.acme.example>")[0] == 530
    with _client(run.port) as s:
        _tls(s)
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        code, text = s.docmd("MAIL", "FROM:<a@mail.acme.example>")
        assert (code, text[:5]) == (530, b"5.7.0")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("acme", "wrong-key")
    with _client(run.port) as s:  # a valid key, but the login names another tenant
        _tls(s)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("globex", "acme-demo-key-1")
    assert spool.active() == 0


def test_submit_idempotent_and_scoped(server: Any) -> None:
    run, spool = server
    with _client(run.port) as s:
        _tls(s)
        s.login("acme", "acme-demo-key-1")  # smtplib prefers PLAIN when LOGIN is offered too
        first = s.sendmail("a@mail.acme.example", ["ann@example.net", "bob@example.org"],
                           msg("news@mail.acme.example", "<k1@acme>"))
        assert first == {}
        # the same Message-ID and bytes again: accepted, but stored once
        s.sendmail("a@mail.acme.example", ["ann@example.net", "bob@example.org"],
                   msg("news@mail.acme.example", "<k1@acme>"))
        with pytest.raises(smtplib.SMTPDataError) as conflict:
            s.sendmail("a@mail.acme.example", ["ann@example.net"],
                       msg("news@mail.acme.example", "<k1@acme>", "other text"))
        assert conflict.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPDataError) as foreign:
            s.sendmail("a@globex.example", ["ann@example.net"],
                       msg("x@globex.example", "<k2@acme>"))
        assert foreign.value.smtp_code == 550 and b"5.7.1" in foreign.value.smtp_error
    with _client(run.port) as s:  # AUTH LOGIN too
        _tls(s)
        s.user, s.password = "acme", "acme-demo-key-2"
        assert s.auth("LOGIN", s.auth_login)[0] == 235
        s.sendmail("a@mail.acme.example", ["cy@example.com"],
                   msg("news@mail.acme.example", "<k3@acme>"))
    assert run.srv.accepted == 2
    assert spool.active() == 3
    rows = spool.take_pending()
    jobs = [spool.job(p.id) for p in rows]
    assert sorted(j.rcpt for j in jobs) == ["ann@example.net", "bob@example.org",
                                            "cy@example.com"]
    j = jobs[0]
    assert (j.tenant, j.lane, j.campaign, j.sending_domain) == ("acme", "lifecycle", "wk9",
                                                                "mail.acme.example")
    assert b"Subject: hi" in j.body and b"hello" in j.body
    for dropped in (b"To:", b"Message-ID:", b"X-Inboxlab-Lane"):
        assert dropped not in j.body
