"""MX resolution against a real DNS server on loopback (a small dnspython UDP responder).

Covers the configurable nameserver/port, MX preference order, the TTL cache (hits within
the TTL, a new query after it), RFC 7505 null MX, RFC 5321 5.1 implicit MX (A fallback),
NXDOMAIN, and config routes that bypass DNS entirely.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from engine.config import load_config
from engine.delivery.mx import Destination, NullMX, Resolver
from engine.errors import InputError

LAB = Path(__file__).parents[2] / "fixtures" / "lab.toml"

ZONE: dict[tuple[str, str], tuple[int, list[str]]] = {
    ("multi.lab.example.", "MX"): (60, ["20 mx2.multi.lab.example.",
                                        "10 mx1.multi.lab.example."]),
    ("mx1.multi.lab.example.", "A"): (60, ["127.0.0.11"]),
    ("mx2.multi.lab.example.", "A"): (60, ["127.0.0.12"]),
    ("null.lab.example.", "MX"): (60, ["0 ."]),
    ("plain.lab.example.", "A"): (60, ["127.0.0.13"]),  # no MX: implicit MX
    ("dead.lab.example.", "MX"): (60, ["10 nowhere.lab.example."]),
}
NAMES = {name for name, _ in ZONE} | {"nowhere.lab.example."}


class DnsServer:
    """Answers from ``ZONE`` over UDP on 127.0.0.1; counts queries per (name, type)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.queries: Counter[tuple[str, str]] = Counter()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(wire)
            q = query.question[0]
            name, rtype = q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype)
            self.queries[(name, rtype)] += 1
            resp = dns.message.make_response(query)
            hit = ZONE.get((name, rtype))
            if hit is not None:
                resp.answer.append(dns.rrset.from_text(name, hit[0], "IN", rtype, *hit[1]))
            elif name not in NAMES:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(resp.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_mx_order_and_ttl_cache(dns_server: DnsServer) -> None:
    clock = Clock()
    res = Resolver(None, nameserver="127.0.0.1", port=dns_server.port, clock=clock)
    want = [Destination("mx1.multi.lab.example", "127.0.0.11", 25),
            Destination("mx2.multi.lab.example", "127.0.0.12", 25)]
    assert res.resolve("multi.lab.example") == want
    clock.t += 59
    assert res.resolve("multi.lab.example") == want
    assert dns_server.queries[("multi.lab.example.", "MX")] == 1  # served from the cache
    clock.t += 2  # past the 60 s TTL
    assert res.resolve("multi.lab.example") == want
    assert dns_server.queries[("multi.lab.example.", "MX")] == 2


def test_null_mx_implicit_mx_and_failures(dns_server: DnsServer) -> None:
    res = Resolver(None, nameserver="127.0.0.1", port=dns_server.port)
    with pytest.raises(NullMX, match="RFC 7505"):
        res.resolve("null.lab.example")
    assert issubclass(NullMX, InputError)
    assert res.resolve("plain.lab.example") == [
        Destination("plain.lab.example", "127.0.0.13", 25)]
    assert dns_server.queries[("plain.lab.example.", "A")] == 1
    with pytest.raises(InputError, match="NXDOMAIN"):
        res.resolve("missing.lab.example")
    with pytest.raises(InputError, match="no address"):
        res.resolve("dead.lab.example")


def test_routes_bypass_dns_and_mx_routes_use_it(dns_server: DnsServer) -> None:
    config = load_config(LAB, env={"INBOXLAB_PORT_GMAIL": "3535",
                                   "INBOXLAB_SANDBOX_HOST": "127.0.0.1"})
    res = Resolver(config, nameserver="127.0.0.1", port=dns_server.port)
    assert res.resolve("gmail.com") == [Destination("127.0.0.1", "127.0.0.1", 3535)]
    assert not dns_server.queries
    # "*.lab.example" = { mx = true } in the lab: resolved through the configured server
    assert res.resolve("multi.lab.example")[0].addr == "127.0.0.11"
    assert dns_server.queries[("multi.lab.example.", "MX")] == 1


def test_null_mx_ends_the_recipient_without_connecting(dns_server: DnsServer,
                                                tmp_path: Path) -> None:
    import asyncio

    from engine.runner import Runner
    from engine.spool import Spool

    config = load_config(LAB, env={})
    spool = Spool(tmp_path / "s.db")
    spool.accept(tenant="acme", idem_key="k", request=b"r", lane="lifecycle", campaign=None,
                 sending_domain="news.acme.example", mail_from="n@news.acme.example",
                 recipients=["x@null.lab.example"], body=b"Subject: x\r\n\r\nx\r\n")
    runner = Runner(config, spool, secret=b"k" * 32,
                    resolver=Resolver(config, nameserver="127.0.0.1", port=dns_server.port))

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, poll=0.02))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if spool.active() == 0:
                break
        stop.set()
        await task

    asyncio.run(go())
    # the runner reports RFC 7505's 556 5.1.10 without connecting; the policy core's
    # verdict for it (profiles: text.null_mx -> suppress_recipient) ends the recipient
    assert spool.state(1) == ("bounced", False)
    last = spool.events_after(0)[-2:]
    suppressed = spool.is_suppressed("acme", "x@null.lab.example")
    spool.close()
    bounce = next(e for e in last if e.event == "bounced")
    assert bounce.smtp_code == 556 and "5.1.10" in (bounce.response or "")
    assert suppressed
    assert dns_server.queries[("null.lab.example.", "MX")] == 1
