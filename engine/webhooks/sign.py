"""Webhook signatures and secret references.

Owns the signature format ``X-Inboxlab-Signature: t=<unix ts>,v1=<hex>`` where ``v1`` is
HMAC-SHA256(secret, ``"<t>." + body``), its constant-time verification with a timestamp
tolerance (replay protection), and resolving a config secret reference (``env:NAME`` or
``file:PATH``). No network, no clock of its own: ``now`` is an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from engine.errors import ConfigError, InputError

SIGNATURE_HEADER = "X-Inboxlab-Signature"


def sign(secret: bytes, body: bytes, ts: int) -> str:
    """The header value for ``body`` sent at ``ts``."""
    mac = hmac.new(secret, str(int(ts)).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={int(ts)},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance: float = 300.0
           ) -> int:
    """Check a signature header; returns its timestamp. Raises ``InputError`` when it is
    malformed, does not match, or is older/newer than ``tolerance`` seconds."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise InputError("malformed signature header")
        parts.setdefault(k, []).append(v)
    try:
        ts = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InputError("signature header without a timestamp") from None
    if abs(now - ts) > tolerance:
        raise InputError("signature timestamp outside the tolerance")
    want = sign(secret, body, ts).split("v1=", 1)[1]
    if not any(hmac.compare_digest(want, v) for v in parts.get("v1", [])):
        raise InputError("signature does not match")
    return ts


def resolve_secret(ref: str, *, env: Mapping[str, str] | None = None,
                   base: Path | None = None, file: str = "config") -> bytes:
    """The secret a reference names (``env:NAME`` / ``file:PATH``, relative to ``base``).
    Raises ``ConfigError`` when it is missing or empty (the secret is never echoed)."""
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = (os.environ if env is None else env).get(name, "")
    elif kind == "file":
        path = Path(name) if base is None else base / name
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(file, "webhook_secret", f"cannot read {path}: "
                              f"{exc.strerror}") from None
    else:
        raise ConfigError(file, "webhook_secret", "not an 'env:' or 'file:' reference")
    if not value:
        raise ConfigError(file, "webhook_secret", f"{ref} is not set or empty")
    return value.encode()
