"""A throwaway self-signed certificate for the sandbox's STARTTLS, made at start-up.

Owns ``server_context``: an ``ssl.SSLContext`` with a fresh EC key and certificate
(cryptography) written to a temporary folder the caller removes. The certificate names the
sandbox's host name and the addresses it listens on (subjectAltName DNS and IP entries), so
a verifying client that trusts it (``ssl.create_default_context(cafile=...)``) accepts a
connection to 127.0.0.1. Nothing else.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def server_context(folder: Path, hostname: str, addresses: Iterable[str] = ()) -> ssl.SSLContext:
    """Make a key and a self-signed cert for ``hostname`` (and the IP ``addresses``) in
    ``folder`` (``sandbox-cert.pem``, ``sandbox-key.pem``); return a server context."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(hostname), *(x509.IPAddress(ipaddress.ip_address(a))
                                       for a in dict.fromkeys(addresses))]), critical=False)
        # its own trust anchor: a client trusts exactly this certificate
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "sandbox-cert.pem", folder / "sandbox-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
