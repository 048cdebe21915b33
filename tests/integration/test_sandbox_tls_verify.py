"""The sandbox's STARTTLS certificate verifies for a client that trusts it (it names
127.0.0.1), and only for such a client."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import pytest

from sim.sandbox.config import load_config
from sim.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration


def test_verifying_client_accepts_the_published_certificate(tmp_path: Path) -> None:
    cfg_file = tmp_path / "sandbox.toml"
    cfg_file.write_text("[providers.gmail]\nport = 0\ntls = true\n")
    box = SandboxThread(load_config(cfg_file), tmp_path / "home")
    box.start()
    try:
        host, port = box.sandbox.addresses["gmail"]  # type: ignore[union-attr]
        cert = tmp_path / "home" / "sandbox" / "tls-cert.pem"
        assert cert.is_file() and b"PRIVATE KEY" not in cert.read_bytes()
        trusting = ssl.create_default_context(cafile=str(cert))  # checks the host name too
        with smtplib.SMTP(host, port, timeout=10) as s:
            s.ehlo("client.example")
            code, _ = s.starttls(context=trusting)
            assert code == 220
            assert s.sock.getpeercert()["subjectAltName"]  # type: ignore[union-attr]
            assert s.ehlo("client.example")[0] == 250
        # the system's trust store knows nothing of it
        with smtplib.SMTP(host, port, timeout=10) as s, \
                pytest.raises(ssl.SSLCertVerificationError):
            s.ehlo("client.example")
            s.starttls(context=ssl.create_default_context())
    finally:
        box.stop()
