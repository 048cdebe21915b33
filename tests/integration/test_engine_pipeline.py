"""The pipelining SMTP client and the runner on it, over real loopback sockets.

- A scripted server (asyncio, 127.0.0.1) that advertises PIPELINING, answers every command
  of one read in ONE write (several replies per client read) or byte by byte (replies split
  over reads), refuses chosen recipients with 4xx/5xx and can drop the connection after the
  end of a message's content without replying.
- aiosmtpd with STARTTLS (self-signed sandbox cert) and PIPELINING advertised.
- Postfix's ``smtp-sink``, with and without PIPELINING, and dropping after end-of-data.
- The ``Runner`` against the scripted server: a drop mid-DATA is recorded ambiguous (dead
  letter, never resent), a 5xx RCPT bounces, the rest is delivered once.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.delivery.mx import Destination
from engine.delivery.pipeline import SMTPClient, SMTPFailure
from engine.delivery.smtp import ConnectionPool, unverified_tls_context
from engine.spool import Spool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scripted(asyncio.Protocol):
    """One server session; the test's ``Script`` holds what the server does and saw."""

    def __init__(self, script: Script) -> None:
        self.s = script
        self.buf = b""
        self.in_data = False
        self.mail_from = ""
        self.rcpts: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.s.sessions += 1
        self._send([b"220 scripted.test ESMTP"])

    def _send(self, lines: list[bytes]) -> None:
        data = b"".join(ln + b"\r\n" for ln in lines)
        if not self.s.split:
            self.t.write(data)
            return
        loop = asyncio.get_running_loop()
        for i in range(len(data)):  # one byte per write, spaced: replies split over reads
            loop.call_later(0.0005 * i, self._write_byte, data[i:i + 1])

    def _write_byte(self, b: bytes) -> None:
        if not self.t.is_closing():
            self.t.write(b)

    def data_received(self, data: bytes) -> None:
        self.s.reads.append(data)
        self.buf += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    break
                content, self.buf = self.buf[:end + 2], self.buf[end + 5:]
                self.in_data = False
                self.s.messages.append((self.mail_from, list(self.rcpts), content))
                if len(self.s.messages) in self.s.drop_after:
                    self.t.write(b"".join(ln + b"\r\n" for ln in out))
                    self.t.close()  # content received, no reply: the client cannot know
                    return
                out.append(b"250 2.0.0 queued as %d" % len(self.s.messages))
                continue
            nl = self.buf.find(b"\r\n")
            if nl < 0:
                break
            line, self.buf = self.buf[:nl].decode(), self.buf[nl + 2:]
            verb = line[:4].upper()
            self.s.commands.append(verb)
            if verb in ("EHLO", "HELO"):
                out += [b"250-scripted.test", *(b"250-" + e for e in self.s.ext[:-1]),
                        b"250 " + self.s.ext[-1]]
            elif verb == "MAIL":
                self.mail_from, self.rcpts = line[10:].strip("<>"), []
                out.append(b"250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = line[8:].strip("<>")
                reply = self.s.refuse.get(addr)
                if reply is None:
                    self.rcpts.append(addr)
                    reply = b"250 2.1.5 Ok"
                out.append(reply)
            elif verb == "DATA":
                if self.rcpts:
                    self.in_data = True
                    out.append(b"354 go ahead")
                else:
                    out.append(b"554 5.5.1 no valid recipients")
            elif verb == "RSET":
                self.mail_from, self.rcpts = "", []
                out.append(b"250 2.0.0 Ok")
            elif verb == "QUIT":
                out.append(b"221 2.0.0 Bye")
                self._send(out)
                self.t.close()
                return
            else:
                out.append(b"502 5.5.2 not implemented")
        if out:
            self._send(out)  # every reply to what one read carried: one write


class Script:
    def __init__(self, *, split: bool = False, pipelining: bool = True,
                 refuse: dict[str, bytes] | None = None,
                 drop_after: tuple[int, ...] = ()) -> None:
        self.split = split
        self.ext = [b"PIPELINING", b"8BITMIME"] if pipelining else [b"8BITMIME"]
        self.refuse = refuse or {}
        self.drop_after = set(drop_after)
        self.reads: list[bytes] = []
        self.commands: list[str] = []
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.sessions = 0


async def _serve(script: Script) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Scripted(script), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _client(port: int) -> SMTPClient:
    return await SMTPClient.connect("127.0.0.1", port, source_address=("127.0.0.2", 0),
                                    timeout=5, local_hostname="engine.test")


MSG = b"Subject: hi\r\n\r\n.leading dot\r\nline\r\n.\r\nend\r\n"


@pytest.mark.parametrize("split", [False, True], ids=["replies-together", "replies-split"])
def test_pipelined_transactions_and_per_rcpt_refusals(split: bool) -> None:
    script = Script(split=split, refuse={"busy@x.test": b"450 4.2.1 mailbox busy",
                                         "gone@x.test": b"550 5.1.1 no such user"})

    async def go() -> list[Any]:
        server, port = await _serve(script)
        try:
            c = await _client(port)
            assert c.pipelining
            plan = [["u1@x.test"], ["u0@x.test"], ["busy@x.test"], ["gone@x.test"],
                    ["u2@x.test", "gone@x.test"]]
            out = []
            for i, rcpts in enumerate(plan):  # each next envelope rides behind the content
                then = ("s@a.test", plan[i + 1]) if i + 1 < len(plan) else None
                out.append(await c.transaction("s@a.test", rcpts, MSG, then=then))
            assert c.reusable
            await c.quit()
            return [out[0], *out[2:]]
        finally:
            server.close()
            await server.wait_closed()

    ok, busy, gone, partial = asyncio.run(go())
    assert (ok.code, ok.stage, ok.data_started) == (250, "data", True)
    assert ok.text == "2.0.0 queued as 1"
    assert (busy.code, busy.stage, busy.data_started) == (450, "rcpt", False)
    assert busy.rcpts[0].enhanced == "4.2.1"
    assert (gone.code, gone.stage, gone.data_started) == (550, "rcpt", False)
    assert (partial.code, partial.data_started) == (250, True)
    assert [r.code for r in partial.rcpts] == [250, 550]
    # MAIL, RCPT and DATA of a transaction left in one write (the reset owed after a failed
    # transaction goes in front of the next one)
    assert any(r.startswith(b"MAIL") and r.endswith(b"DATA\r\n") and b"RCPT" in r
               for r in script.reads)
    assert any(r.startswith(b"RSET\r\nMAIL") for r in script.reads)
    # the next envelope went out in the same write as the content before it
    assert any(b"end\r\n.\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<u0@x.test>\r\nDATA\r\n" in r
               for r in script.reads)
    # what arrived is the content as sent (dot-stuffing undone by the server's framing)
    stored = [c for _, _, c in script.messages]
    assert len(stored) == 3
    assert all(c.replace(b"\r\n..", b"\r\n.") == MSG for c in stored)
    assert b"\r\n..leading dot\r\n" in stored[0] and b"\r\n..\r\nend" in stored[0]
    assert [m[1] for m in script.messages] == [["u1@x.test"], ["u0@x.test"], ["u2@x.test"]]


def test_envelope_sent_ahead_but_not_followed_drops_the_connection() -> None:
    """A caller that stops after sending the next envelope ahead: the server is in DATA for
    a message whose content never came, so QUIT must not be sent (it would be content) and
    the connection is not reused; nothing is delivered for the abandoned message."""
    script = Script()

    async def go() -> tuple[Any, bool, Any]:
        server, port = await _serve(script)
        try:
            c = await _client(port)
            first = await c.transaction("s@a.test", ["u1@x.test"], MSG,
                                        then=("s@a.test", ["u2@x.test"]))
            reusable = c.reusable
            wrong = await c.transaction("s@a.test", ["other@x.test"], MSG)
            await c.quit()
            await asyncio.sleep(0.05)
            return first, reusable, wrong
        finally:
            server.close()
            await server.wait_closed()

    first, reusable, wrong = asyncio.run(go())
    assert first.code == 250 and not reusable
    assert wrong.code is None and not wrong.data_started
    assert "QUIT" not in script.commands
    assert [m[1] for m in script.messages] == [["u1@x.test"]]


def test_lockstep_without_pipelining() -> None:
    script = Script(pipelining=False, refuse={"gone@x.test": b"550 5.1.1 no such user"})

    async def go() -> list[Any]:
        server, port = await _serve(script)
        try:
            c = await _client(port)
            assert not c.pipelining
            out = [await c.transaction("s@a.test", ["gone@x.test"], MSG),
                   await c.transaction("s@a.test", ["u@x.test"], MSG)]
            await c.quit()
            return out
        finally:
            server.close()
            await server.wait_closed()

    gone, ok = asyncio.run(go())
    assert gone.code == 550 and ok.code == 250
    # one command per read: the client waited for each reply
    assert all(r.count(b"\r\n") == 1 for r in script.reads if not r.startswith(b"Subject"))
    assert script.commands == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]


def test_connection_dropped_after_content_is_data_started_without_reply() -> None:
    script = Script(drop_after=(2,))

    async def go() -> list[Any]:
        server, port = await _serve(script)
        try:
            c = await _client(port)
            out = [await c.transaction("s@a.test", ["u1@x.test"], MSG),
                   await c.transaction("s@a.test", ["u2@x.test"], MSG)]
            assert not c.is_connected
            out.append(await c.transaction("s@a.test", ["u3@x.test"], MSG))
            return out
        finally:
            server.close()
            await server.wait_closed()

    first, dropped, after = asyncio.run(go())
    assert first.code == 250
    assert dropped.code is None and dropped.data_started  # the runner's ambiguous case
    assert after.code is None and not after.data_started  # never reached DATA
    assert len(script.messages) == 2


def test_timeout_closes_the_connection() -> None:
    async def go() -> Any:
        # a server that accepts and greets, then never answers anything
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"220 hi\r\n")
            await r.read(1 << 16)
            await asyncio.sleep(5)
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(SMTPFailure) as info:
                await SMTPClient.connect("127.0.0.1", port, source_address=None, timeout=0.3,
                                         local_hostname="engine.test")
            return info.value
        finally:
            server.close()

    exc = asyncio.run(go())
    assert exc.code is None and "timed out" in exc.text


# -- aiosmtpd with STARTTLS -----------------------------------------------------------------
def test_starttls_then_pipelining_on_aiosmtpd(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from sim.sandbox.tls import server_context

    got: list[bytes] = []

    class Handler:
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                              responses: list[str]) -> list[str]:
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:
            if address.startswith("full"):
                return "452 4.2.2 mailbox full"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            got.append(envelope.original_content)
            return "250 2.0.0 ok" if session.ssl else "554 not over TLS"

    port = _port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port,
                     tls_context=server_context(tmp_path, "mx.sandbox.test"),
                     require_starttls=True)
    ctl.start()
    try:
        async def go() -> list[Any]:
            pool = ConnectionPool(timeout=5, tls_context=unverified_tls_context())
            conn = await pool._open("127.0.0.2", Destination("x.test", "127.0.0.1", port),
                                    "required")
            c = conn.client
            assert c.tls and c.pipelining
            out = [await c.transaction("s@a.test", [f"u{i}@x.test"], MSG) for i in range(5)]
            out.append(await c.transaction("s@a.test", ["full@x.test"], MSG))
            out.append(await c.transaction("s@a.test", ["u9@x.test"], MSG))
            await c.quit()
            return out

        results = asyncio.run(go())
    finally:
        ctl.stop()
    assert [r.code for r in results] == [250] * 5 + [452, 250]
    assert results[5].stage == "rcpt"
    assert len(got) == 6 and all(g.replace(b"\r\n..", b"\r\n.").endswith(b"end\r\n")
                                 for g in got)


# -- Postfix smtp-sink ----------------------------------------------------------------------
def _sink_binary() -> str:
    for cand in (shutil.which("smtp-sink"), "/usr/sbin/smtp-sink",
                 "/usr/lib/postfix/sbin/smtp-sink"):
        if cand and Path(cand).exists():
            return cand
    pytest.fail("smtp-sink not found: install postfix (.ci/run installs it)")


@pytest.fixture
def smtp_sink() -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*opts: str) -> int:
        port = _port()
        args = [_sink_binary()]
        if hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0:
            args += ["-u", "postfix"]
        proc = subprocess.Popen([*args, *opts, f"127.0.0.1:{port}", "64"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        for _ in range(250):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return port
            time.sleep(0.02)
        pytest.fail("smtp-sink did not start")

    yield start
    for p in procs:
        p.terminate()
        p.wait(5)


@pytest.mark.parametrize("opts", [(), ("-p",)], ids=["pipelining", "no-pipelining"])
def test_smtp_sink_many_messages(smtp_sink: Any, opts: tuple[str, ...]) -> None:
    port = smtp_sink(*opts)

    async def go() -> tuple[bool, list[Any]]:
        c = await _client(port)
        out = [await c.transaction("s@a.test", [f"u{i}@x.test"], MSG * (1 + i % 40))
               for i in range(300)]
        await c.quit()
        return c.pipelining, out

    pipelined, results = asyncio.run(go())
    assert pipelined == (opts == ())
    assert all((r.code, r.stage, r.data_started) == (250, "data", True) for r in results)


def test_smtp_sink_hangs_up_after_end_of_data(smtp_sink: Any) -> None:
    port = smtp_sink("-q", ".")

    async def go() -> Any:
        c = await _client(port)
        return await c.transaction("s@a.test", ["u@x.test"], MSG)

    res = asyncio.run(go())
    assert res.code is None and res.data_started


def test_smtp_sink_soft_and_hard_rcpt_refusals(smtp_sink: Any) -> None:
    soft, hard = smtp_sink("-r", "rcpt"), smtp_sink("-f", "rcpt")

    async def go() -> list[Any]:
        out = []
        for port in (soft, hard):
            c = await _client(port)
            out.append(await c.transaction("s@a.test", ["u@x.test"], MSG))
            await c.quit()
        return out

    s, h = asyncio.run(go())
    assert (s.code // 100, s.stage, s.data_started) == (4, "rcpt", False)
    assert (h.code // 100, h.stage, h.data_started) == (5, "rcpt", False)


# -- the runner on the pipelining client ----------------------------------------------------
def _lab(folder: Path, port: int) -> Path:
    keys = ROOT / "fixtures" / "dkim"
    path = folder / "lab.toml"
    path.write_text(f'''name = "pipeline"
policy = "{ROOT / "fixtures" / "policies" / "default-v1.toml"}"
[tenants.acme]
api_keys = ["sha256:53c0bbbb0bb4c4b246b3864960657bcb300d500b1599167dabfb3e9372241898"]
lanes = ["transactional", "lifecycle", "prospecting"]
[domains."mail.acme.example"]
tenant = "acme"
return_path = "bounce.mail.acme.example"
dkim = [{{ selector = "lab2026e", key_file = "{keys / "test-ed25519.pem"}", algorithm = "ed25519-sha256" }}]
[pools.tx-a]
source_ips = ["127.0.0.2"]
dedicated = true
[routes]
"*" = "127.0.0.1:{port}"
[shaping.override."tx-a.*"]
messages_per_second = 100000.0
burst = 10000
max_connections = 1
max_messages_per_connection = 1000
''')
    return path


def test_runner_drop_mid_data_is_ambiguous_and_rcpt_550_bounces(tmp_path: Path) -> None:
    from engine.config import load_config
    from engine.delivery.message import build_base
    from engine.runner import Runner

    n = 12
    script = Script(refuse={"user3@example.net": b"550 5.1.1 no such user"},
                    drop_after=(n - 1,))  # the last content the server gets: no reply
    spool = Spool(tmp_path / "spool.db")
    body = build_base(from_addr="news@mail.acme.example", from_name=None, subject="s",
                      text=".dot line\nhello\n")
    spool.accept_many([
        {"tenant": "acme", "idem_key": f"k{i}", "request": b"%d" % i, "lane": "transactional",
         "campaign": None, "sending_domain": "mail.acme.example",
         "mail_from": "news@mail.acme.example", "recipients": [f"user{i}@example.net"],
         "body": body} for i in range(n)])

    async def go() -> None:
        server, port = await _serve(script)
        runner = Runner(load_config(_lab(tmp_path, port)), spool, secret=b"p" * 32, timeout=5)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.02))
        deadline = time.monotonic() + 20
        while spool.active() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        await task
        server.close()
        await server.wait_closed()

    asyncio.run(go())
    assert spool.active() == 0
    events = spool.events_after(0, limit=1000)
    bounced = [e for e in events if e.event == "bounced"]
    assert [(e.recipient, e.smtp_code) for e in bounced] == [("user3@example.net", 550)]
    ambiguous = [e for e in events if e.event == "ambiguous"]
    assert [e.recipient for e in ambiguous] == [f"user{n - 1}@example.net"]
    rows = dict(spool.db.execute("SELECT rcpt, state || ':' || ambiguous FROM recipients"))
    assert rows[f"user{n - 1}@example.net"] == "dead_lettered:1"
    delivered = {e.recipient for e in events if e.event == "delivered"}
    assert delivered == {f"user{i}@example.net" for i in range(n)} - {
        "user3@example.net", f"user{n - 1}@example.net"}
    # the server got each non-refused recipient's content exactly once (nothing resent)
    got = [r for _, rcpts, _ in script.messages for r in rcpts]
    assert sorted(got) == sorted(delivered | {f"user{n - 1}@example.net"})
    assert all(b"DKIM-Signature:" in c and b"\r\n..dot line" in c
               for _, _, c in script.messages)
    spool.close()
