"""RFC 6376 section 3.4 "relaxed" canonicalisation of header fields and bodies.

Owns only byte transformations: splitting a message into header fields and body, and the
relaxed forms of both. No keys, no hashing policy, no IO.
"""

from __future__ import annotations

import re

_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_TRAIL_WSP = re.compile(rb"[ \t]+(?=\r\n)")
_TRAIL_CRLF = re.compile(rb"(?:\r\n)+\Z")
_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """``data`` with every bare LF turned into CRLF (the SMTP wire form)."""
    return _BARE_LF.sub(b"\r\n", data)


def split_message(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Split a CRLF message into ``[(name, raw field incl. folding, no final CRLF)]`` and
    the body. A message without a blank line is all headers and an empty body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, body = (message[:-2] if message.endswith(b"\r\n") else message), b""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + b"\r\n" + line)
        elif line:
            name = line.split(b":", 1)[0].strip()
            fields.append((name, line))
    return fields, body


def relaxed_header(raw: bytes) -> bytes:
    """Relaxed form of one header field (without its trailing CRLF, RFC 6376 3.4.2)."""
    name, _, value = raw.partition(b":")
    value = _FOLD.sub(b"", value)
    value = _WSP_RUN.sub(b" ", value).strip(b" \t\r\n")
    return name.strip(b" \t").lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """Relaxed form of a CRLF body (RFC 6376 3.4.4): WSP runs to one SP, no WSP at line
    ends, no trailing empty lines; a non-empty body ends with exactly one CRLF."""
    if not body:
        return b""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = _WSP_RUN.sub(b" ", body)
    body = _TRAIL_WSP.sub(b"", body)
    body = _TRAIL_CRLF.sub(b"", body)
    return body + b"\r\n" if body else b""
