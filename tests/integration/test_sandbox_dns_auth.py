"""The sandbox checks authentication with real DNS lookups when its config names a server.

A loopback DNS server (``sim.dns``) publishes the zone generated from fixtures/lab.toml (DKIM
key records, SPF listing the pool IPs, DMARC); the sandbox's Gmail model (SPF or DKIM
required) answers mail sent over real SMTP from pool and non-pool source addresses:
DKIM-signed mail from an address outside SPF passes on DKIM, unsigned mail from a pool IP
passes on SPF, unsigned mail from outside is refused with Gmail's 5.7.26 text, and a message
signed with a key the zone does not publish is refused too. The server's query log shows the
lookups really went over the network.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from engine.config import load_config as load_lab
from engine.dkim.sign import DkimSigner, load_signer
from sim.dns.authority import zone_from_text
from sim.dns.server import DnsServer
from sim.dns.zone import lab_zone
from sim.sandbox.config import load_config
from sim.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
LAB = ROOT / "fixtures" / "lab.toml"
DOMAIN = "mail.acme.example"
RETURN_PATH = "b-1@bounce.mail.acme.example"


def _message(i: int) -> bytes:
    return (f"From: Acme <hello@{DOMAIN}>\r\nTo: <u{i}@gmail.com>\r\nSubject: Your code {i}\r\n"
            f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <{i}.dns@{DOMAIN}>\r\n"
            f"X-Inboxlab-Lane: transactional\r\n\r\nYour code is {i:06d}.\r\n").encode()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxThread, DnsServer]]:
    tmp = tmp_path_factory.mktemp("dns-auth")
    server = DnsServer([zone_from_text(lab_zone(load_lab(LAB)))])
    with server.running():
        cfg_file = tmp / "sandbox.toml"
        cfg_file.write_text(f'seed = 3\ndns = "{server.address}"\n'
                            "[providers.gmail]\nport = 0\ntls = true\n")
        cfg = load_config(cfg_file)
        assert cfg.dns == server.address
        sandbox = SandboxThread(cfg, tmp / "home")
        sandbox.start()
        try:
            yield sandbox, server
        finally:
            sandbox.stop()


def _send(box: SandboxThread, source: str, data: bytes, i: int) -> tuple[int, str]:
    host, port = box.sandbox.addresses["gmail"]  # type: ignore[union-attr]
    with smtplib.SMTP(host, port, source_address=(source, 0), timeout=10) as s:
        s.ehlo("mta1.mail.acme.example")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the sandbox's self-signed certificate
        s.starttls(context=ctx)
        s.ehlo("mta1.mail.acme.example")
        code, _ = s.mail(RETURN_PATH)
        assert code == 250
        code, _ = s.rcpt(f"u{i}@gmail.com")
        assert code == 250
        code, text = s.data(data)
        return code, text.decode()


def _rsa_signer() -> DkimSigner:
    dom = load_lab(LAB).domains[DOMAIN]
    dk = next(d for d in dom.dkim if d.algorithm == "rsa-sha256")
    return load_signer(DOMAIN, dk.selector, LAB.parent / dk.key_file, dk.algorithm)


def test_dkim_from_dns_passes_mail_from_outside_spf(
        box: tuple[SandboxThread, DnsServer]) -> None:
    sandbox, server = box
    data = _message(1)
    code, text = _send(sandbox, "127.0.0.9", _rsa_signer().header(data) + data, 1)
    assert code == 250, text
    selector = _rsa_signer().selector
    assert server.queries[(f"{selector}._domainkey.{DOMAIN}.", "TXT")] >= 1


def test_spf_from_dns_passes_unsigned_mail_from_a_pool_ip(
        box: tuple[SandboxThread, DnsServer]) -> None:
    sandbox, server = box
    code, text = _send(sandbox, "127.0.0.2", _message(2), 2)
    assert code == 250, text
    assert server.queries[("bounce.mail.acme.example.", "TXT")] >= 1


def test_unauthenticated_mail_is_refused_with_gmails_text(
        box: tuple[SandboxThread, DnsServer]) -> None:
    sandbox, _ = box
    code, text = _send(sandbox, "127.0.0.9", _message(3), 3)
    assert code == 550 and "5.7.26" in text and "unauthenticated" in text, text
    # a signature by a key the zone does not publish does not authenticate either
    other = DkimSigner(DOMAIN, _rsa_signer().selector, "rsa-sha256",
                       rsa.generate_private_key(public_exponent=65537, key_size=2048))
    data = _message(4)
    code, text = _send(sandbox, "127.0.0.9", other.header(data) + data, 4)
    assert code == 550 and "5.7.26" in text, text
