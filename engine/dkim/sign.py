"""Build a ``DKIM-Signature`` header field (RFC 6376 section 3.5; RFC 8463 for Ed25519).

Owns the signer: key loading, header selection (over-signing names listed once more than
they occur, so nobody can add another instance), the body hash and the signature. It does
not read DNS or decide which domain signs; callers pass keys and domains.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from engine.dkim.canon import relaxed_body, relaxed_header, split_message, to_crlf
from engine.errors import ConfigError, InputError

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# Over-signed: each is listed in h= one time more than it occurs (twice for one instance),
# so a second instance added in transit breaks the signature (RFC 6376 8.15).
OVERSIGN: tuple[str, ...] = (
    "From", "Subject", "Date", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post",
)
# Signed once per occurrence when present.
SIGN_IF_PRESENT: tuple[str, ...] = (
    "To", "Cc", "Reply-To", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Feedback-ID", "In-Reply-To", "References",
)


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """Signs messages for ``domain`` with ``selector``'s private key."""

    domain: str
    selector: str
    algorithm: Algorithm
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)
    # base message -> (wire form, relaxed signed fields by lower-case name, body hash)
    cache: dict[bytes, tuple[bytes, dict[bytes, list[bytes]], bytes]] = field(
        default_factory=dict, repr=False, compare=False, hash=False)

    def header(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature: ...`` field (folded, ending in CRLF) for ``message``."""
        fields, body = split_message(_wire(message))
        bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        return self._assemble(_relaxed_by_name(fields), bh, timestamp)

    def sign_parts(self, head: bytes, base: bytes, *, timestamp: int | None = None) -> bytes:
        """``sign(head + base)``, byte for byte, where ``head`` is whole header lines (each
        ending in CRLF, no blank line) put before the stored message ``base``. The body hash
        and the relaxed header fields of ``base`` are computed once per distinct ``base``
        and cached (a campaign signs one base for every recipient)."""
        head = to_crlf(head)
        if (head and not head.endswith(b"\r\n")) or b"\r\n\r\n" in head or \
                base[:1] in (b" ", b"\t", b"\r", b"\n"):
            return self.sign(head + base, timestamp=timestamp)
        prep = self.cache.get(base)
        if prep is None:
            wire = _wire(base)
            fields, body = split_message(wire)
            bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
            if len(self.cache) >= _CACHE_SIZE:
                self.cache.clear()
            prep = self.cache[base] = (wire, _relaxed_by_name(fields), bh)
        wire, base_fields, bh = prep
        head_fields = _relaxed_by_name(split_message(head)[0]) if head else {}
        merged = dict(base_fields)
        for name, values in head_fields.items():
            merged[name] = values + merged.get(name, [])
        return self._assemble(merged, bh, timestamp) + head + wire

    def _assemble(self, by_name: dict[bytes, list[bytes]], bh: bytes,
                  timestamp: int | None) -> bytes:
        names: list[str] = []
        signed: list[bytes] = []
        for wanted in (*OVERSIGN, *SIGN_IF_PRESENT):
            found = list(by_name.get(wanted.lower().encode(), ()))
            count = len(found) + 1 if wanted in OVERSIGN else len(found)
            for _ in range(count):
                names.append(wanted)
                if found:
                    signed.append(found.pop() + b"\r\n")  # bottom-up
        tags = [f"v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain};",
                f" s={self.selector};"]
        if timestamp is not None:
            tags.append(f" t={timestamp};")
        tags.append(" h=" + ":".join(names) + ";")
        tags.append(f" bh={bh.decode()};")
        tags.append(" b=")
        value = "\r\n".join(_fold(tags)).encode()
        unsigned = b"DKIM-Signature: " + value
        data = b"".join(signed) + relaxed_header(unsigned)
        sig = base64.b64encode(self._sign(data))
        chunks = [sig[i:i + 72] for i in range(0, len(sig), 72)]
        return unsigned + b"\r\n ".join(chunks) + b"\r\n"

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """``message`` (in wire form: CRLF, final CRLF) with its ``DKIM-Signature`` prepended."""
        crlf = _wire(message)
        return self.header(crlf, timestamp=timestamp) + crlf

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        # RFC 8463 section 3: PureEdDSA over the SHA-256 hash of the canonical data.
        return self.key.sign(hashlib.sha256(data).digest())


_CACHE_SIZE = 256
_SIGNED_NAMES = frozenset(n.lower().encode() for n in (*OVERSIGN, *SIGN_IF_PRESENT))


def _relaxed_by_name(fields: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """The relaxed form of every field ``header`` may sign, by lower-case name, in order."""
    by_name: dict[bytes, list[bytes]] = {}
    for name, raw in fields:
        low = name.lower()
        if low in _SIGNED_NAMES:
            by_name.setdefault(low, []).append(relaxed_header(raw))
    return by_name


def _wire(message: bytes) -> bytes:
    """The message as it goes over SMTP: CRLF line ends, ending in CRLF (RFC 5321 4.1.1.4)."""
    crlf = to_crlf(message)
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


def _fold(tags: list[str]) -> list[str]:
    """Join tags into lines of at most ~76 characters (a line break before a tag)."""
    lines: list[str] = []
    cur = ""
    for tag in tags:
        if cur and len(cur) + len(tag) > 76:
            lines.append(cur)
            cur = " " + tag.lstrip()
            continue
        cur += tag
    lines.append(cur)
    return lines


def load_signer(domain: str, selector: str, key_file: str | Path,
                algorithm: Algorithm = "rsa-sha256") -> DkimSigner:
    """A signer from a PKCS#8 / traditional PEM key. Raises ``ConfigError`` when the file is
    unreadable or the key type does not match ``algorithm``."""
    path = Path(key_file)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(str(path), "", f"cannot load DKIM key: {exc}") from None
    if algorithm == "rsa-sha256" and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigError(str(path), "", "RSA DKIM keys must be at least 1024 bits")
        return DkimSigner(domain, selector, algorithm, key)
    if algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PrivateKey):
        return DkimSigner(domain, selector, algorithm, key)
    raise ConfigError(str(path), "", f"key type does not match algorithm {algorithm}")


def public_key_record(signer: DkimSigner) -> str:
    """The DNS TXT record text of ``signer``'s selector (``v=DKIM1; k=...; p=...``)."""
    if isinstance(signer.key, rsa.RSAPrivateKey):
        der = signer.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    raw = signer.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def check_header_value(name: str, value: str) -> None:
    """Refuse CR or LF in a header value (header injection). Raises ``InputError``."""
    if "\r" in value or "\n" in value:
        raise InputError(f"header {name}: CR/LF not allowed in a header value")
