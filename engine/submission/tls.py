"""The STARTTLS certificate of SMTP submission: generated at start, or loaded from files.

Owns making a short-lived self-signed certificate (ECDSA P-256, ``cryptography``) and the
server ``ssl.SSLContext`` (TLS 1.2+). It does not listen or authenticate.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path


def self_signed_context(directory: Path, hostname: str = "localhost",
                        cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A server context from ``cert``/``key``, or from a self-signed pair written to
    ``directory`` (made once, mode 0600 for the key)."""
    if cert is None or key is None:
        cert, key = directory / "submission.crt", directory / "submission.key"
        if not (cert.exists() and key.exists()):
            _generate(cert, key, hostname)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _generate(cert: Path, key: Path, hostname: str) -> None:
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName(hostname),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(pk.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - dt.timedelta(minutes=5))
           .not_valid_after(now + dt.timedelta(days=365)).add_extension(san, critical=False)
           .sign(pk, hashes.SHA256()))
    cert.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
