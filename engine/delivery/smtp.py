"""Outbound SMTP connections (``engine.delivery.pipeline.SMTPClient``) pooled per (source IP,
destination).

Owns opening, reusing and closing connections: STARTTLS opportunistic or required, the
source address bound, at most ``max_connections`` per pool key and at most
``messages_per_connection`` messages on one connection. It reports what the server said;
it does not classify replies or touch the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from engine.delivery.mx import Destination
from engine.delivery.pipeline import SMTPClient, SMTPFailure


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one recipient: final ``code``/``text`` (None: no reply) and whether
    DATA had started (a missing reply after that is ambiguous)."""

    code: int | None
    text: str
    data_started: bool
    mx_host: str
    stage: str = ""  # the command the reply answered: "mail", "rcpt" or "data"


def unverified_tls_context() -> ssl.SSLContext:
    """A client context that accepts ANY certificate (self-signed sandbox certs in tests).

    Never a default: a caller must pass it explicitly (``Runner(tls_context=...)``). Without
    it STARTTLS verifies the peer as ``ssl.create_default_context()`` does.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Conn:
    __slots__ = ("client", "used")

    def __init__(self, client: SMTPClient) -> None:
        self.client = client
        self.used = 0


class _Limit:
    """At most ``limit`` holders at once, where ``limit`` may change between acquisitions
    (the core's connection plan shrinks after 4.7.28 / breaker trips): a lower limit makes
    new sessions wait until enough running ones have ended."""

    __slots__ = ("active", "cond", "limit")

    def __init__(self) -> None:
        self.active = 0
        self.limit = 1
        self.cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, limit: int) -> AsyncIterator[None]:
        async with self.cond:
            self.limit = max(1, limit)
            await self.cond.wait_for(lambda: self.active < self.limit)
            self.active += 1
        try:
            yield
        finally:
            async with self.cond:
                self.active -= 1
                self.cond.notify_all()


class ConnectionPool:
    """Idle connections and a connection limit per (source IP, host, port); the limit is
    the latest plan's ``max_connections`` (it follows the core down and up)."""

    def __init__(self, *, helo: str = "engine.inboxlab.test", timeout: float = 30.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.helo = helo
        self.timeout = timeout
        self.tls_context = tls_context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._sems: dict[tuple[str, str, int], _Limit] = {}
        self.opened = 0

    def _sem(self, key: tuple[str, str, int], limit: int
             ) -> contextlib.AbstractAsyncContextManager[None]:
        sem = self._sems.get(key)
        if sem is None:
            sem = self._sems[key] = _Limit()
        return sem.hold(limit)

    async def _open(self, source_ip: str, dest: Destination, tls: str) -> _Conn:
        """Connect from ``source_ip``, EHLO, STARTTLS when offered (required: or fail with
        530). Raises ``SMTPFailure``, ``OSError`` (``ssl.SSLError`` for a refused cert)."""
        client = await SMTPClient.connect(dest.addr, dest.port, source_address=(source_ip, 0),
                                          timeout=self.timeout, local_hostname=self.helo)
        self.opened += 1
        if client.supports("starttls"):
            context = self.tls_context or _default_context()
            try:
                await client.starttls(context, dest.addr)
            except SMTPFailure:
                if tls == "required" or not client.is_connected:
                    client.close()
                    raise
            except BaseException:
                client.close()
                raise
        elif tls == "required":
            client.close()
            raise SMTPFailure(530, "5.7.10 STARTTLS not offered and TLS is required for this "
                              "provider")
        return _Conn(client)

    async def session(self, source_ip: str, dest: Destination, *, max_connections: int,
                      per_connection: int, tls: str,
                      work: Callable[[SMTPClient], Awaitable[int]]) -> None:
        """Run ``work(client)`` on a pooled connection; ``work`` returns how many messages it
        sent. A connection that reached ``per_connection`` or failed is closed."""
        key = (source_ip, dest.addr, dest.port)
        async with self._sem(key, max_connections):
            idle = self._idle.setdefault(key, [])
            conn = idle.pop() if idle else None
            if conn is not None and not conn.client.is_connected:
                conn = None
            if conn is None:
                conn = await self._open(source_ip, dest, tls)
            ok = False
            try:
                conn.used += await work(conn.client)
                ok = True
            finally:
                if ok and conn.used < per_connection and conn.client.reusable:
                    idle.append(conn)
                else:
                    await _quit(conn.client)

    async def close(self) -> None:
        """QUIT every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                await _quit(conn.client)
        self._idle.clear()


async def _quit(client: SMTPClient) -> None:
    try:
        if client.is_connected:  # quit() itself drops one owing replies, without QUIT
            await asyncio.wait_for(client.quit(), 5.0)
    except Exception:
        client.close()


_CONTEXT: list[ssl.SSLContext] = []


def _default_context() -> ssl.SSLContext:
    """``ssl.create_default_context()``, made once (loading the CA store is slow)."""
    if not _CONTEXT:
        _CONTEXT.append(ssl.create_default_context())
    return _CONTEXT[0]
