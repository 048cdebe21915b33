"""The authoritative DNS server: ``sim.dns.authority`` behind UDP and TCP on one port.

Owns ``DnsServer`` (asyncio: a datagram endpoint and a stream server on the same
127.0.0.0/8 address and port; ``port=0`` picks a free one), ``DnsServer.running()`` (the
same in a background thread, for synchronous callers and tests) and the TCP framing
(RFC 1035 §4.2.2: a two-byte length before each message; several queries per connection,
RFC 7766 §6.2.1). What an answer holds is ``Authority``'s business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import dns.zone

from engine.errors import InputError
from sim.dns.authority import Authority, load_zone

TCP_IDLE_S = 10.0  # an idle TCP connection is closed after this (RFC 7766 §6.2.3)
BIND_ATTEMPTS = 20  # port 0: tries to find a port free for both UDP and TCP


def check_host(host: str) -> str:
    """``host`` when it is an address in 127.0.0.0/8, else ``InputError``."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise InputError(f"--host {host!r} is not an IP address (use 127.0.0.x)") from None
    if not (isinstance(addr, ipaddress.IPv4Address) and addr in ipaddress.ip_network("127.0.0.0/8")):
        raise InputError(f"--host {host}: the DNS server binds 127.0.0.0/8 only")
    return host


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.udp_queries += 1
        reply = self.server.authority.respond(data, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a client
        pass


class DnsServer:
    """An authoritative server for ``zones`` on ``host:port`` (UDP and TCP)."""

    def __init__(self, zones: Iterable[dns.zone.Zone], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.host = check_host(host)
        if not 0 <= port <= 65535:
            raise InputError(f"--port {port} is not a port number")
        self.port = port
        self.authority = Authority(zones)
        self.udp_queries = 0
        self.tcp_queries = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_files(cls, files: Iterable[str | Path], **kw: object) -> DnsServer:
        """A server for the zones of these master files (``ConfigError`` for a bad one)."""
        return cls([load_zone(f) for f in files], **kw)  # type: ignore[arg-type]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def queries(self) -> dict[tuple[str, str], int]:
        """Questions answered so far, by (lower-case name with the final dot, type)."""
        return dict(self.authority.queries)

    # --- asyncio ------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        """Bind UDP and TCP on the same port; returns (host, port). Raises ``OSError``."""
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(BIND_ATTEMPTS if self.port == 0 else 1):
            udp, _proto = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self.port))
            port = int(udp.get_extra_info("sockname")[1])
            try:
                tcp = await asyncio.start_server(self._serve_tcp, self.host, port,
                                                 reuse_address=True)
            except OSError as exc:  # the port is free for UDP but taken for TCP: again
                udp.close()
                last = exc
                continue
            self._udp, self._tcp, self.port = udp, tcp, port
            return self.host, port
        assert last is not None
        raise last

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_S)
                (size,) = struct.unpack("!H", head)
                wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_S)
                self.tcp_queries += 1
                reply = self.authority.respond(wire, tcp=True)
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- a background thread ------------------------------------------------------------

    def start_thread(self) -> tuple[str, int]:
        """Run the server in its own thread and event loop; returns (host, port)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"dns-{self.host}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self.host, self.port

    def stop_thread(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = self._loop = None

    @contextlib.contextmanager
    def running(self) -> Iterator[DnsServer]:
        """``with DnsServer(zones).running() as srv:`` serves in a thread until the block ends."""
        self.start_thread()
        try:
            yield self
        finally:
            self.stop_thread()
