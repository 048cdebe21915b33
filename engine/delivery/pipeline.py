"""Our own asyncio SMTP client: greeting, EHLO (HELO fallback), STARTTLS, PIPELINING.

Owns one client connection: reading replies (``code``, RFC 3463 ``enhanced`` code, text;
multi-line replies joined; several replies in one read and one reply split over reads both
handled), and sending one mail transaction. When the server advertises PIPELINING
(RFC 2920) ``MAIL``, every ``RCPT`` and ``DATA`` leave in ONE write and their replies are
read afterwards; otherwise each command waits for its reply. A reset owed after a failed
transaction is sent in front of the next one. It reports what the server said; it does not
classify replies, retry, pool connections or touch the spool (``engine.delivery.smtp`` and
``engine.runner`` do).

``data_started`` in a ``TxReply`` is True once the server answered 354 and the message
content began to leave: a transaction that then loses its connection before the final reply
may have been delivered (the runner records it as ambiguous, never resends it).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from typing import NamedTuple

_LINE_LIMIT = 65_536  # a reply line longer than this is a protocol error (RFC 5321 4.5.3.1.5: 512)
_ENHANCED = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)")
_LONE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class Reply(NamedTuple):
    """One SMTP reply: ``text`` is everything after the code and separator, the lines of a
    multi-line reply joined by ``\\n`` (the enhanced code, when present, stays in it)."""

    code: int
    enhanced: str
    text: str


class TxReply(NamedTuple):
    """The outcome of one transaction: the reply that decided it (``code`` None: no reply,
    the connection failed), which command it answered (``"mail"``, ``"rcpt"`` or ``"data"``)
    and whether message content had started to leave (see the module docstring).
    ``rcpts``: the reply to each RCPT that got one."""

    code: int | None
    text: str
    stage: str
    data_started: bool
    rcpts: tuple[Reply, ...] = ()


class SMTPFailure(Exception):
    """The session cannot go on: ``code``/``text`` of the reply that ended it (``code`` None:
    the connection failed or timed out, or the server broke the protocol)."""

    def __init__(self, code: int | None, text: str) -> None:
        super().__init__(f"{code} {text}" if code is not None else text)
        self.code = code
        self.text = text


def parse_enhanced(text: str) -> str:
    """The RFC 3463 status code that opens ``text`` (``"4.7.28"``), or ``""``."""
    m = _ENHANCED.match(text)
    return m.group(1) if m else ""


def wire_data(message: bytes) -> bytes:
    """``message`` as DATA content: CRLF line ends, dot-stuffed (RFC 5321 4.5.2), ending in
    CRLF, followed by the terminating ``.`` line."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LONE.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message[:1] == b".":
        message = b"." + message
    if b"\n." in message:
        message = message.replace(b"\r\n.", b"\r\n..")
    return message + b".\r\n"


class _Protocol(asyncio.Protocol):
    """Parses replies as bytes arrive; hands them to the one waiting reader, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.lines: list[bytes] = []
        self.replies: deque[Reply] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.error: SMTPFailure | None = None
        self.paused = False
        self.drained: asyncio.Future[None] | None = None

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        start = 0
        got = False
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            code = line[:3]
            sep = line[3:4]
            if len(code) != 3 or not code.isdigit() or sep not in (b" ", b"-", b""):
                self._fail(SMTPFailure(None, f"malformed SMTP reply line {line[:80]!r}"))
                return
            if self.lines and self.lines[0][:3] != code:
                self._fail(SMTPFailure(None, "multi-line reply changed its code mid-way"))
                return
            if sep == b"-":
                self.lines.append(line)
                continue
            if self.lines:
                self.lines.append(line)
                text = "\n".join(ln[4:].decode("utf-8", "replace") for ln in self.lines)
                self.lines = []
            else:
                text = line[4:].decode("utf-8", "replace")
            self.replies.append(Reply(int(code), parse_enhanced(text), text))
            got = True
        self.buf = buf[start:] if start < len(buf) else b""
        if len(self.buf) > _LINE_LIMIT:
            self._fail(SMTPFailure(None, "SMTP reply line too long"))
            return
        if got and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = SMTPFailure(None, f"connection lost ({exc})" if exc else
                                     "connection closed by the server")
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- helpers ----------------------------------------------------------------------------
    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: SMTPFailure) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        self._wake()


class SMTPClient:
    """One SMTP client connection. ``await SMTPClient.connect(...)`` reads the greeting and
    says EHLO; ``starttls()`` upgrades it; ``transaction()`` sends one message; ``quit()``.

    Raises ``SMTPFailure`` when the session cannot go on (a refused greeting / EHLO /
    STARTTLS, a lost connection, a timeout, a protocol error); after that the connection is
    closed and ``is_connected`` is False.
    """

    def __init__(self, protocol: _Protocol, *, timeout: float, local_hostname: str) -> None:
        self._p = protocol
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.extensions: dict[str, str] = {}
        self.esmtp = False
        self.tls = False
        self._rset = False  # a failed transaction owes a RSET before the next MAIL
        # the envelope whose MAIL/RCPT/DATA went out behind the last content (``then``)
        self._ahead: tuple[str, list[str]] | None = None

    @classmethod
    async def connect(cls, host: str, port: int, *, source_address: tuple[str, int] | None,
                      timeout: float, local_hostname: str) -> SMTPClient:
        """Open a connection, read the 220 greeting and say EHLO (HELO if EHLO is refused)."""
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(loop), host, port,
                                       local_addr=source_address), timeout)
        except TimeoutError:
            raise SMTPFailure(None, f"timed out connecting to {host}:{port}") from None
        client = cls(proto, timeout=timeout, local_hostname=local_hostname)
        try:
            greeting = await client._reply()
            if greeting.code != 220:
                raise SMTPFailure(greeting.code, greeting.text)
            await client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    # -- state ------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        t = self._p.transport
        return self._p.error is None and t is not None and not t.is_closing()

    @property
    def pipelining(self) -> bool:
        return "pipelining" in self.extensions

    def supports(self, extension: str) -> bool:
        """Whether the last EHLO advertised ``extension`` (case-insensitive)."""
        return extension.lower() in self.extensions

    def close(self) -> None:
        """Drop the connection at once (no QUIT)."""
        t = self._p.transport
        if t is not None and not t.is_closing():
            t.abort()

    # -- IO ---------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        p = self._p
        if p.error is not None:
            raise p.error
        assert p.transport is not None
        p.transport.write(data)

    async def _drain(self) -> None:
        p = self._p
        if p.paused and p.error is None:
            p.drained = p.loop.create_future()
            await self._wait(p.drained)
        if p.error is not None:
            raise p.error

    async def _wait(self, fut: asyncio.Future[None]) -> None:
        handle = self._p.loop.call_later(self.timeout, _expire, fut)
        try:
            await fut
        finally:
            handle.cancel()
        if fut.result() is _TIMED_OUT:
            self._p._fail(SMTPFailure(None, f"timed out after {self.timeout:g} s waiting "
                                      "for the server"))

    async def _reply(self) -> Reply:
        """The next reply in order. Raises ``SMTPFailure`` if the connection is gone."""
        p = self._p
        while not p.replies:
            if p.error is not None:
                raise p.error
            p.waiter = p.loop.create_future()
            await self._wait(p.waiter)
            p.waiter = None
        return p.replies.popleft()

    async def command(self, line: str | bytes) -> Reply:
        """Send one command line (without CRLF) and return its reply."""
        self._write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self._reply()

    # -- session ----------------------------------------------------------------------------
    async def ehlo(self) -> None:
        """EHLO (HELO when the server refuses EHLO with 5xx); records the extensions."""
        reply = await self.command(f"EHLO {self.local_hostname}")
        if reply.code == 250:
            self.esmtp = True
            ext: dict[str, str] = {}
            for line in reply.text.split("\n")[1:]:
                name, _, params = line.strip().partition(" ")
                if name:
                    ext[name.lower()] = params
            self.extensions = ext
            return
        if 500 <= reply.code < 600:
            reply = await self.command(f"HELO {self.local_hostname}")
            if reply.code == 250:
                self.esmtp = False
                self.extensions = {}
                return
        raise SMTPFailure(reply.code, reply.text)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """STARTTLS, the TLS handshake on this connection, then EHLO again (RFC 3207 4.2).
        Raises ``SMTPFailure`` for a refusal, ``ssl.SSLError`` for a failed handshake."""
        reply = await self.command(b"STARTTLS")
        if reply.code != 220:
            raise SMTPFailure(reply.code, reply.text)
        p = self._p
        assert p.transport is not None
        try:
            transport = await asyncio.wait_for(
                p.loop.start_tls(p.transport, p, context, server_hostname=server_hostname),
                self.timeout)
        except TimeoutError:
            self.close()
            raise SMTPFailure(None, "timed out in the TLS handshake") from None
        except BaseException:
            self.close()
            raise
        if transport is None:
            raise SMTPFailure(None, "connection closed during the TLS handshake")
        p.transport = transport
        p.buf = b""
        p.replies.clear()
        self.tls = True
        self.extensions = {}
        await self.ehlo()

    async def transaction(self, sender: str, rcpts: list[str], message: bytes, *,
                          then: tuple[str, list[str]] | None = None) -> TxReply:
        """Send one message: MAIL FROM, RCPT TO each, DATA, the content. Pipelined in one
        write when the server advertises PIPELINING; ``then`` (the envelope of the message
        the caller sends next on this connection) is then sent right behind the content,
        so one write carries content + next MAIL/RCPT/DATA (RFC 2920 3.1 allows content
        first in a group) and the next call only reads its replies. A caller that does not
        follow up with exactly that envelope must not reuse the connection (``reusable``).
        Never raises for a reply or a lost connection: the ``TxReply`` says what happened
        (``code`` None: no reply)."""
        ahead = self._ahead
        self._ahead = None
        try:
            mail, rcpt_args = self._envelope(sender, rcpts)
        except UnicodeEncodeError:
            if ahead is not None:
                self.close()
            return TxReply(None, "SMTPUTF8 address but the server does not offer SMTPUTF8",
                           "mail", False)
        stage = "mail"
        data_started = False
        got: list[Reply] = []
        try:
            if ahead is not None and ahead != (sender, rcpts):
                self.close()  # the commands in flight name another message: start over
                raise SMTPFailure(None, "pipelined envelope differs from the one sent ahead")
            rset = self._rset
            self._rset = False
            if self.pipelining:
                if ahead is None:
                    self._write(b"".join((b"RSET\r\n" if rset else b"", mail,
                                          *rcpt_args, b"DATA\r\n")))
                    if rset:
                        r = await self._reply()
                        if r.code // 100 != 2:
                            # the session state is unknown: end it here
                            self.close()
                            return TxReply(r.code, r.text, stage, False)
                first = await self._reply()
                stage = "rcpt"
                for _ in rcpt_args:
                    got.append(await self._reply())
                data = await self._reply()
                if first.code != 250:
                    self._rset = True
                    return TxReply(first.code, first.text, "mail", False, tuple(got))
            else:
                if rset:
                    r = await self.command(b"RSET")
                    if r.code // 100 != 2:
                        self.close()
                        return TxReply(r.code, r.text, stage, False)
                first = await self.command(mail[:-2])
                if first.code != 250:
                    self._rset = True
                    return TxReply(first.code, first.text, "mail", False)
                stage = "rcpt"
                for arg in rcpt_args:
                    got.append(await self.command(arg[:-2]))
                data = Reply(0, "", "")
            refused = [r for r in got if r.code not in (250, 251)]
            if len(refused) == len(rcpt_args):
                # every recipient refused: the transaction fails with the (first) refusal
                if data.code == 354:
                    # RFC 2920 3.1: a 354 with no valid recipient still needs the content;
                    # end it empty and drop whatever the server says about it
                    self._write(b".\r\n")
                    await self._reply()
                self._rset = True
                return TxReply(refused[0].code, refused[0].text, "rcpt", False, tuple(got))
            stage = "data"
            if not self.pipelining:
                data = await self.command(b"DATA")
            if data.code != 354:
                self._rset = True
                return TxReply(data.code, data.text, "data", False, tuple(got))
            data_started = True
            content = wire_data(message)
            if then is not None and self.pipelining:
                try:
                    mail2, rcpt2 = self._envelope(*then)
                except UnicodeEncodeError:
                    pass
                else:
                    content = b"".join((content, mail2, *rcpt2, b"DATA\r\n"))
                    self._ahead = then
            self._write(content)
            await self._drain()
            # the end of the content ends the transaction whatever the reply (RFC 5321
            # 4.1.1.4): no RSET owed after it
            final = await self._reply()
            return TxReply(final.code, final.text, "data", True, tuple(got))
        except SMTPFailure as exc:
            self.close()
            return TxReply(None, exc.text, stage, data_started, tuple(got))

    @property
    def reusable(self) -> bool:
        """Connected and owing nothing: no commands sent ahead for a message not sent."""
        return self._ahead is None and self.is_connected

    def _envelope(self, sender: str, rcpts: list[str]) -> tuple[bytes, list[bytes]]:
        """The MAIL and RCPT lines (CRLF-terminated). Non-ASCII addresses go out as UTF-8
        with the SMTPUTF8 parameter (RFC 6531) when the server offers it; otherwise
        ``UnicodeEncodeError``."""
        try:
            mail = b"MAIL FROM:<" + sender.encode("ascii") + b">\r\n"
            args = [b"RCPT TO:<" + r.encode("ascii") + b">\r\n" for r in rcpts]
            return mail, args
        except UnicodeEncodeError:
            if "smtputf8" not in self.extensions:
                raise
        mail = b"MAIL FROM:<" + sender.encode() + b"> SMTPUTF8\r\n"
        return mail, [b"RCPT TO:<" + r.encode() + b">\r\n" for r in rcpts]

    async def rset(self) -> Reply:
        """RSET now (a reset owed by a failed transaction is then no longer owed). Raises
        ``SMTPFailure`` when commands for another message were sent ahead."""
        if self._ahead is not None:
            raise SMTPFailure(None, "commands for another message are in flight")
        self._rset = False
        return await self.command(b"RSET")

    async def quit(self) -> None:
        """QUIT and close (errors ignored: the session is over either way)."""
        try:
            if self._ahead is not None:
                self.close()  # a DATA may be open: anything sent now would be content
            elif self.is_connected:
                await self.command(b"QUIT")
        except SMTPFailure:
            pass
        finally:
            t = self._p.transport
            if t is not None and not t.is_closing():
                t.close()


_TIMED_OUT: object = object()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(_TIMED_OUT)  # type: ignore[arg-type]
