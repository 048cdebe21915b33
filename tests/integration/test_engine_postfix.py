"""Postfix as a real receiving MTA: its anvil limits throttle the engine, the core slows down.

A private Postfix instance (own config folder under tmp, ``postfix -c DIR start/stop``,
discard transport, ``maillog_file``) listens on a loopback port. anvil counts per client
address, and ``smtpd_client_event_limit_exceptions =`` takes loopback off its exemption
list (notes: /work/shared/reference/postfix-peer.md). Over its message rate it answers
``450 4.7.1 Error: too much mail from <ip>`` and logs ``Message delivery request rate limit
exceeded``; each accepted message is a ``status=sent`` line (discard transport).

The engine's clock runs ``SCALE`` x real time so the 300 s back-off the generic profile
asks for after that reply takes seconds; Postfix's anvil window is in real seconds. The
pool's shaping starts above Postfix's limit on purpose: the core must classify the 450 as
throttled -> retry_slow_down, throttle the pool x provider and deliver everything with a
bounded number of refusals. CI installs Postfix (``scripts/install-postfix``): when it is
missing the test FAILS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.config import load_config
from engine.delivery.message import build_base
from engine.runner import Runner
from engine.spool import Spool

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
SCALE = 30.0       # engine seconds per real second (300 s back-off = 10 s real)
RATE = 10          # Postfix: messages per client IP per anvil time unit
UNIT = 1           # anvil_rate_time_unit in real seconds
CONNS = 3          # smtpd_client_connection_count_limit
N = 120
POSTFIX = "/usr/sbin/postfix"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostfix:
    """A throwaway Postfix instance on 127.0.0.1:port with its own folders and log."""

    def __init__(self, root: Path, port: int, **limits: str) -> None:
        self.root, self.port = root, port
        self.etc, self.log = root / "etc", root / "maillog"
        for sub in ("etc", "queue", "data"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "data", "postfix")
        main = {
            "compatibility_level": "3.6",
            "meta_directory": "/etc/postfix", "shlib_directory": "/usr/lib/postfix",
            "queue_directory": str(root / "queue"), "data_directory": str(root / "data"),
            "maillog_file": str(self.log), "maillog_file_prefixes": str(root),
            "myhostname": "peer.inboxlab.test", "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4", "mydestination": "", "local_recipient_maps": "",
            "relay_domains": "static:ALL",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "default_transport": "discard:peer", "relay_transport": "discard:peer",
            "alias_maps": "", "alias_database": "", "smtpd_peername_lookup": "no",
            "mynetworks": "127.0.0.0/8", "smtpd_client_event_limit_exceptions": "",
            **limits,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        master = Path("/etc/postfix/master.cf").read_text().splitlines()
        master = ["#" + line if line.startswith(("smtp      inet", "smtp inet")) else line
                  for line in master]
        master.append(f"127.0.0.1:{port} inet n - n - - smtpd")
        (self.etc / "master.cf").write_text("\n".join(master) + "\n")
        self._postconf("-F", "*/*/chroot = n")  # no chroot jail to populate

    def _postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(self.etc), *args], check=True,
                       capture_output=True, timeout=30)

    def start(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "start"], check=True,
                       capture_output=True, timeout=60)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"postfix did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", str(self.etc), "stop"], capture_output=True,
                       timeout=60)

    def count(self, needle: str) -> int:
        if not self.log.exists():
            return 0
        return sum(1 for line in self.log.read_text(errors="replace").splitlines()
                   if needle in line)


@pytest.fixture
def postfix(tmp_path: Path) -> Iterator[PrivatePostfix]:
    if os.geteuid() != 0 or not Path(POSTFIX).exists():
        pytest.fail("Postfix is required for this test: run scripts/install-postfix "
                    "(as root); a private instance needs root to start", pytrace=False)
    # pytest's tmp folders are 0700: the postfix user could not reach its data_directory
    root = Path(tempfile.mkdtemp(prefix="inboxlab-postfix-"))
    root.chmod(0o755)
    peer = PrivatePostfix(root, _free_port(),
                          smtpd_client_message_rate_limit=str(RATE),
                          anvil_rate_time_unit=f"{UNIT}s",
                          smtpd_client_connection_count_limit=str(CONNS))
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(root, ignore_errors=True)


def _lab(tmp_path: Path) -> Path:
    """fixtures/lab.toml with absolute paths, plus a tx-a x generic shaping that starts
    above Postfix's limit (2 source IPs x RATE / UNIT real = 20/s; the pool may do 24/s)."""
    text = LAB.read_text()
    fixtures = str(ROOT / "fixtures")
    text = text.replace('"policies/', f'"{fixtures}/policies/').replace(
        '"dkim/', f'"{fixtures}/dkim/')
    text += ('\n[shaping.override."tx-a.generic"]\n'
             f"messages_per_second = {24 / SCALE}\nburst = 5\nmax_connections = 2\n"
             "max_messages_per_connection = 50\n")
    path = tmp_path / "lab.toml"
    path.write_text(text)
    return path


def _scaled_clock(scale: float) -> Callable[[], float]:
    epoch, mono = time.time(), time.monotonic()
    return lambda: epoch + (time.monotonic() - mono) * scale


def test_postfix_anvil_throttles_and_the_core_slows_down(postfix: PrivatePostfix,
                                                         tmp_path: Path) -> None:
    env = dict(os.environ, INBOXLAB_SANDBOX_HOST="127.0.0.1",
               INBOXLAB_PORT_OTHER=str(postfix.port))
    config = load_config(_lab(tmp_path), env=env)
    clock = _scaled_clock(SCALE)
    spool = Spool(tmp_path / "spool.db", clock=clock)
    body = build_base(from_addr="alerts@mail.acme.example", from_name=None,
                      subject="Receipt", text="Thank you for your order.\n")
    for i in range(N):
        spool.accept(tenant="acme", idem_key=f"k{i}", request=f"r{i}".encode(),
                     lane="transactional", campaign=None, sending_domain="mail.acme.example",
                     mail_from="alerts@mail.acme.example",
                     recipients=[f"user{i}@peer{i % 7}.example.net"], body=body)

    async def scenario() -> float:
        runner = Runner(config, spool, secret=b"p" * 32, seed=11, timeout=10, clock=clock)
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(runner.run(stop, poll=0.05))
        deadline = started + 55
        while time.monotonic() < deadline and spool.active():
            await asyncio.sleep(0.1)
        stop.set()
        await task
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    events = spool.events_after(0, limit=100_000)
    if spool.active():
        from collections import Counter

        said = Counter((e.event, e.smtp_code, (e.response or "")[:60], (e.reason or "")[:60])
                       for e in events if e.event not in ("enqueued", "delivered"))
        t0 = min(e.ts for e in events)
        line = " ".join(f"{e.ts - t0:.0f}:{e.event[:3]}:{e.source_ip or ''}:{(e.reason or '')[:40]}"
                        for e in events if e.event in ("deferred", "automation", "delivered"))
        raise AssertionError(f"{spool.active()} of {N} not delivered in {elapsed:.0f} s: "
                             f"{said.most_common(12)} {line}")
    delivered = {e.recipient for e in events if e.event == "delivered"}
    assert len(delivered) == N
    deadline = time.monotonic() + 10  # the discard transport logs shortly after the 250
    while postfix.count("status=sent") < N and time.monotonic() < deadline:
        time.sleep(0.1)
    sent = postfix.count("status=sent")
    refused = postfix.count("Message delivery request rate limit exceeded")
    too_many_conns = postfix.count("Connection concurrency limit exceeded")
    assert sent == N, f"postfix logged {sent} status=sent for {N} messages"
    # Postfix did throttle us, the reply was read as "slow down", and the core throttled
    deferred = [e for e in events if e.event == "deferred"]
    too_much = [e for e in deferred if e.smtp_code == 450 and "too much mail" in
                (e.response or "")]
    assert refused >= 1 and too_much, "Postfix never throttled the engine"
    assert all("throttled -> retry_slow_down" in (e.reason or "") for e in too_much), \
        {e.reason for e in too_much}
    assert any(e.event == "automation" for e in events), "no slow-down was applied"
    # ... so refusals stay bounded: no hammering (each refused MAIL is a logged line)
    assert refused <= N // 5, f"{refused} refusals for {N} messages"
    assert too_many_conns == 0, "the engine opened more connections than the pool allows"
    # every refusal the engine saw is one Postfix logged (450 at MAIL FROM, same session)
    assert len(too_much) <= refused
