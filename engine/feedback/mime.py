"""MIME plumbing for feedback parsing: decoded text of parts, safe header access.

Owns turning stdlib ``email`` objects (compat32 policy, the fast one) into plain ``str``:
transfer decoding, charsets (unknown ones fall back to Latin-1), 8-bit headers (bytes
that are not UTF-8 become U+FFFD, never lone surrogates) and the headers of a returned
original message, wherever a reporter put them. Must not interpret report fields.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email.message import Message
from email.parser import HeaderParser

_HEADER_PARSER = HeaderParser()
_MSGID = re.compile(r"^Message-ID[ \t]*:[ \t]*(?:\r?\n[ \t]+)?(\S[^\r\n]*)", re.I | re.M)


def safe(value: object) -> str:
    """Any header value as clean text: surrogate-escaped bytes become UTF-8 or U+FFFD."""
    s = str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return s


def header(msg: Message, name: str) -> str | None:
    """The first ``name`` header of ``msg`` as clean, unfolded text, or None."""
    lname = name.lower()
    for k, v in msg.raw_items():
        if k.lower() == lname:
            return " ".join(safe(v).split())
    return None


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text with the declared charset, UTF-8, then Latin-1 as fallbacks."""
    for cs in (charset, "utf-8"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")


def _transfer_decode(text: str, cte: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(raw.split()), validate=False)
        except (binascii.Error, ValueError):
            return raw
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _block_bytes(block: Message) -> bytes:
    lines = [f"{k}: {v}".encode("utf-8", "surrogateescape") for k, v in block.raw_items()]
    body = block.get_payload(decode=True)
    if isinstance(body, bytes) and body:
        lines.append(body)
    return b"\n".join(lines)


def _block_text(block: Message) -> str:
    return decode_bytes(_block_bytes(block), None)


def part_text(part: Message) -> str:
    """The decoded text of a leaf part, or the raw text of a parsed field-block part.

    compat32 splits ``message/delivery-status`` (and other ``message/*``) parts into
    sub-messages; those are joined back into the report text, transfer-decoded when the
    part itself was encoded. Bytes are decoded with the part's charset, else UTF-8,
    else Latin-1 (the stdlib's own ``get_payload()`` would replace 8-bit text).
    """
    cte = (header(part, "content-transfer-encoding") or "").strip().lower()
    payload = part.get_payload()
    if isinstance(payload, list):
        raw = b"\n\n".join(_block_bytes(b) for b in payload if isinstance(b, Message))
        if cte in ("base64", "quoted-printable"):
            raw = _transfer_decode(raw.decode("utf-8", "surrogateescape"), cte)
        return decode_bytes(raw, part.get_content_charset())
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    return decode_bytes(data, part.get_content_charset())


def embedded_headers(part: Message) -> Message | None:
    """The header block of a returned original (``message/rfc822`` or rfc822-headers).

    Handles originals parsed as sub-messages, encoded ones (base64 / quoted-printable)
    and header-only text parts. Returns None when no header was found.
    """
    payload = part.get_payload()
    cte = (header(part, "content-transfer-encoding") or "").strip().lower()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        if cte not in ("base64", "quoted-printable") and len(inner.keys()) > 0:
            return inner
        text = _block_text(inner)
    elif isinstance(payload, str):
        text = payload
    else:
        return None
    if cte in ("base64", "quoted-printable"):
        text = decode_bytes(_transfer_decode(text, cte), part.get_content_charset())
    inner = _HEADER_PARSER.parsestr(text.lstrip("\r\n"))
    return inner if len(inner.keys()) > 0 else None


def message_id_in_text(text: str) -> str | None:
    """A ``Message-ID:`` header quoted anywhere in plain text (a pasted original)."""
    m = _MSGID.search(text)
    if not m:
        return None
    value = m.group(1).strip()
    br = re.search(r"<[^<>\s]+>", value)
    return br.group(0) if br else (value.split()[0] if value else None)


def clean_message_id(value: str | None) -> str | None:
    """A Message-ID as ``<id>``: the bracketed token when there is one, else the text."""
    if value is None:
        return None
    br = re.search(r"<[^<>\s]+>", value)
    if br:
        return br.group(0)
    v = value.strip()
    return v or None


def leaf_parts(msg: Message) -> list[Message]:
    """Every part of ``msg`` in document order, not descending into returned originals."""
    out: list[Message] = []
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop()
        out.append(part)
        ctype = part.get_content_type()
        if part.is_multipart() and ctype.startswith("multipart/"):
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return out
