"""A fast path for ``engine.delivery.message.build_base``: the same bytes, without the
``email`` package, for the plain case (text only, short ASCII headers, short ASCII lines).

Owns ``fast_base`` and nothing else. It answers ONLY inputs where the ``email`` package
(policy SMTP, ``set_content``) provably writes nothing but ``Name: value`` lines and a 7bit
body — simple addresses and names, unstructured values of safe characters that need no
folding or encoding, text lines of at most 78 printable ASCII characters — and returns
``None`` for anything else, so the caller falls back to ``build_base`` (HTML, non-ASCII,
long lines, quoting, folding). A property test checks byte equality with ``build_base``.
The header-injection (CR/LF) and reserved-header checks stay where they are: pydantic in
the request path, and ``build_base`` (which also refuses the lane header) for fallbacks.
"""

from __future__ import annotations

import re

from engine.delivery.message import LANE_HEADER

# what the email package renders verbatim (no quoting, encoding, folding or re-spacing)
_ADDR = re.compile(r"[A-Za-z0-9+_-]+(?:\.[A-Za-z0-9+_-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_NAME = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*")
_VALUE = re.compile(r"[A-Za-z0-9.,!'()/:_#&%+-]+(?: [A-Za-z0-9.,!'()/:_#&%+-]+)*")
_TEXT = re.compile(r"[\x20-\x7e\n]*")
_MAX_LINE = 78  # policy SMTP's max_line_length: longer lines would be folded or encoded
_TAIL = (b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
         b"MIME-Version: 1.0\r\n\r\n")


def _line(name: str, value: str, pattern: re.Pattern[str]) -> str | None:
    line = f"{name}: {value}"
    if len(line) > _MAX_LINE or not pattern.fullmatch(value):
        return None
    return line


def fast_base(*, from_addr: str, from_name: str | None, subject: str, text: str,
              html: str | None = None, reply_to: str | None = None,
              headers: dict[str, str] | None = None) -> bytes | None:
    """``build_base(...)``'s bytes for the plain case, or ``None`` (then call it)."""
    if html is not None or not _TEXT.fullmatch(text):
        return None
    if from_name and not _NAME.fullmatch(from_name):
        return None
    sender = _line("From", from_addr, _ADDR)
    if sender is not None and from_name:
        sender = f"From: {from_name} <{from_addr}>"
        if len(sender) > _MAX_LINE:
            return None
    lines: list[str | None] = [sender, _line("Subject", subject, _VALUE)]
    if reply_to:
        lines.append(_line("Reply-To", reply_to, _ADDR))
    for name, value in (headers or {}).items():
        if (name.lower() == LANE_HEADER.lower() or not re.fullmatch(r"[A-Za-z0-9-]{1,64}", name)
                or name.lower() in _STRUCTURED):
            return None
        lines.append(_line(name, value, _VALUE))
    if any(line is None for line in lines):
        return None
    body = text.split("\n")
    if body and body[-1] == "":
        body.pop()  # str.splitlines drops the empty string after a final newline
    if any(len(b) > _MAX_LINE for b in body):
        return None
    head = "".join(f"{line}\r\n" for line in lines).encode("ascii")
    return head + _TAIL + "".join(f"{b}\r\n" for b in body).encode("ascii") if body else \
        head + _TAIL + b"\r\n"


# headers the email package parses as structured (addresses, dates, MIME parameters):
# they may be re-rendered, so they always take the slow path
_STRUCTURED = frozenset({
    "from", "to", "cc", "bcc", "sender", "reply-to", "resent-from", "resent-to",
    "resent-cc", "resent-bcc", "resent-sender", "date", "resent-date", "orig-date",
    "message-id", "mime-version", "content-type", "content-disposition",
    "content-transfer-encoding", "subject"})
