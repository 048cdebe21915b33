"""Message building: the stored base message and the per-recipient headers added at send.

Owns Message-ID, Date, the ``X-Inboxlab-Lane`` header, Feedback-ID, RFC 8058 one-click List-Unsubscribe (an HTTPS URL with
an HMAC-signed token, plus mailto) and the VERP Return-Path with an HMAC
(``bounces+<msgid>.<rcpt-hash>.<mac>@<bounce domain>``) and their parsers, which reject
forged tokens. Signing is ``engine.dkim``; nothing here does IO.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from functools import lru_cache

from engine.errors import InputError

# RFC 8058 section 3.1: these lanes carry one-click unsubscribe; transactional mail does not.
UNSUBSCRIBE_LANES = frozenset({"lifecycle", "prospecting"})
# The lane by intent travels with the message (read by the sandbox's provider models).
LANE_HEADER = "X-Inboxlab-Lane"
_VERP = re.compile(r"^bounces\+(m_[0-9a-f]{24})\.([0-9a-f]{12})\.([0-9a-f]{16})@(.+)$", re.I)


def _mac(secret: bytes, *parts: str, n: int = 16) -> str:
    return hmac.new(secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()[:n]


def rcpt_hash(address: str) -> str:
    """A short stable hash of a recipient address (12 hex digits)."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:12]


def verp_address(secret: bytes, public_id: str, rcpt: str, bounce_domain: str) -> str:
    """The VERP envelope sender mapping a bounce back to ``public_id`` and ``rcpt``."""
    h = rcpt_hash(rcpt)
    return f"bounces+{public_id}.{h}.{_mac(secret, 'verp', public_id, h)}@{bounce_domain}"


def parse_verp(secret: bytes, address: str) -> tuple[str, str]:
    """(public id, recipient hash) of a VERP address. Raises ``InputError`` when it is not
    one of ours or its MAC is forged."""
    m = _VERP.match(address.strip().strip("<>"))
    if m is None:
        raise InputError(f"not a VERP bounce address: {address!r}")
    public_id, h, mac = m.group(1), m.group(2).lower(), m.group(3).lower()
    if not hmac.compare_digest(mac, _mac(secret, "verp", public_id, h)):
        raise InputError("VERP bounce address with a forged MAC")
    return public_id, h


@dataclass(frozen=True, slots=True)
class UnsubToken:
    """What a one-click unsubscribe token names."""

    tenant: str
    address: str
    public_id: str


def unsubscribe_token(secret: bytes, tenant: str, address: str, public_id: str) -> str:
    """A URL-safe token naming tenant, address and message, with an HMAC."""
    payload = "\x1f".join((tenant, address.strip().lower(), public_id)).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(secret, 'unsub', body, n=32)}"


def parse_unsubscribe_token(secret: bytes, token: str) -> UnsubToken:
    """The contents of a token from ``unsubscribe_token``. Raises ``InputError`` if forged."""
    body, _, mac = token.partition(".")
    if not body or not hmac.compare_digest(mac.lower(), _mac(secret, "unsub", body, n=32)):
        raise InputError("invalid unsubscribe token")
    try:
        parts = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("\x1f")
    except (ValueError, UnicodeDecodeError):
        raise InputError("invalid unsubscribe token") from None
    if len(parts) != 3:
        raise InputError("invalid unsubscribe token")
    return UnsubToken(*parts)


def build_base(*, from_addr: str, from_name: str | None, subject: str, text: str,
               html: str | None = None, reply_to: str | None = None,
               headers: dict[str, str] | None = None) -> bytes:
    """The recipient-independent part of a message (CRLF bytes), stored once per body.
    Raises ``InputError`` for CR/LF in a header value."""
    msg = EmailMessage(policy=SMTP)
    for name, value in {"From": from_addr, "Subject": subject, "Reply-To": reply_to or "",
                        **(headers or {})}.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise InputError(f"header {name}: CR/LF not allowed")
        if name.lower() == LANE_HEADER.lower():
            raise InputError(f"header {name}: set by the engine from the lane")
    msg["From"] = formataddr((from_name, from_addr)) if from_name else from_addr
    msg["Subject"] = subject
    if reply_to:
        msg["Reply-To"] = reply_to
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    """The RFC 5322 date of a whole second (what ``format_datetime`` prints: no fraction)."""
    return format_datetime(datetime.fromtimestamp(second, tz=UTC))


def recipient_headers(*, secret: bytes, public_id: str, rid: int, tenant: str, lane: str,
                      campaign: str | None, sending_domain: str, rcpt: str,
                      feedback_prefix: str | None, unsubscribe_base: str | None,
                      bounce_domain: str, now: float) -> bytes:
    """Headers added per recipient at send time: To, Date, Message-ID, ``X-Inboxlab-Lane``
    (the lane by intent; the sandbox's provider models read it), Feedback-ID and, on
    lifecycle/prospecting mail, List-Unsubscribe + List-Unsubscribe-Post (RFC 8058)."""
    lines = [f"To: {rcpt}",
             f"Date: {_date(int(now))}",
             f"Message-ID: <{public_id}.{rid}@{sending_domain}>",
             f"{LANE_HEADER}: {lane}"]
    if feedback_prefix:
        # Gmail's Feedback-ID is colon-separated identifiers, sender id last.
        lines.append(f"Feedback-ID: {campaign or 'none'}:{lane}:{tenant}:{feedback_prefix}")
    if lane in UNSUBSCRIBE_LANES and unsubscribe_base:
        token = unsubscribe_token(secret, tenant, rcpt, public_id)
        lines.append(f"List-Unsubscribe: <{unsubscribe_base}{token}>, "
                     f"<mailto:unsubscribe+{public_id}.{rcpt_hash(rcpt)}@{bounce_domain}>")
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    return "".join(line + "\r\n" for line in lines).encode()
