"""``inboxlab dns serve`` as a real process, queried by ``inboxlab dns check`` and dnspython.

Starts the server with the lab's generated zone (``dns zone``) and the hand-written example
zone, reads its address from the first ``--json`` line, checks SPF/DMARC through the CLI,
and stops it with SIGTERM. Bad input exits non-zero with one ``inboxlab: error:`` line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "inboxlab.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    zone = tmp_path_factory.mktemp("dns") / "lab.zone"
    made = run("dns", "zone", "--config", "fixtures/lab.toml", "--out", str(zone))
    assert made.returncode == 0, made.stderr
    proc = subprocess.Popen(
        [*CLI, "dns", "serve", "--zone", str(zone), "--zone", "fixtures/dns/lab.example.zone",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert sorted(first["zones"]) == ["example.", "lab.example."]
        yield first["dns"], proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check(addr: str, *extra: str) -> dict:  # type: ignore[type-arg]
    out = run("dns", "check", "--server", addr, *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_check_spf_and_dmarc_through_the_served_zone(served: tuple[str, subprocess.Popen[str]]) -> None:
    addr, _ = served
    ok = check(addr, "--mail-from", "b@bounce.mail.acme.example", "--ip", "127.0.0.4",
               "--from-domain", "mail.acme.example")
    assert ok["spf"]["result"] == "pass" and ok["spf"]["domain"] == "bounce.mail.acme.example"
    assert ok["dmarc"]["record"]["p"] == "reject" and ok["dmarc"]["spf_aligned"] is True
    bad = check(addr, "--mail-from", "b@bounce.mail.acme.example", "--ip", "127.0.0.99",
                "--from-domain", "mail.acme.example")
    assert bad["spf"]["result"] == "fail" and bad["dmarc"]["pass_by_spf"] is False
    shop = check(addr, "--mail-from", "x@shop.lab.example", "--ip", "127.0.0.3")
    assert shop["spf"]["result"] == "pass"
    assert shop["dmarc"]["record"]["rua"] == "mailto:dmarc@shop.lab.example"
    host, port = addr.rsplit(":", 1)
    r = dns.query.tcp(dns.message.make_query("big._domainkey.shop.lab.example", "TXT"), host,
                      port=int(port), timeout=3)
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer[0][0].strings) == 3


def test_bad_input_is_one_line(served: tuple[str, subprocess.Popen[str]]) -> None:
    addr, _ = served
    for args in (["dns", "check", "--server", addr, "--mail-from", "a@b.test", "--ip", "nope"],
                 ["dns", "check", "--server", "not-an-ip", "--mail-from", "a@b.test",
                  "--ip", "1.2.3.4"],
                 ["dns", "serve", "--zone", "fixtures/lab.toml"],
                 ["dns", "serve", "--zone", "fixtures/dns/lab.example.zone", "--host", "0.0.0.0"],
                 ["dns", "zone", "--config", "missing.toml"]):
        out = run(*args)
        assert out.returncode != 0, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("inboxlab: error: "), out.stderr
        assert "Traceback" not in out.stderr


def test_port_in_use_is_an_error(served: tuple[str, subprocess.Popen[str]]) -> None:
    addr, _ = served
    port = addr.rsplit(":", 1)[1]
    out = run("dns", "serve", "--zone", "fixtures/dns/lab.example.zone", "--port", port)
    assert out.returncode != 0 and out.stderr.startswith("inboxlab: error: cannot listen")


def test_sigterm_stops_cleanly(served: tuple[str, subprocess.Popen[str]]) -> None:
    _, proc = served
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and "stopped after" in proc.stderr.read()
