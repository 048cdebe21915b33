"""Low-level text helpers for feedback parsing: field blocks, addresses, status codes.

Owns reading ``Name: value`` blocks (RFC 3464 / RFC 5965 report bodies) leniently —
case-insensitive names, folded lines, missing blank lines — and normalising the values
inside them (address-type prefixes, comments, enhanced status codes). Must not know
about MIME structure or any MTA's prose; no IO, clocks or randomness.
"""

from __future__ import annotations

import re

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_TYPE_PREFIX = re.compile(r"^\s*([A-Za-z][A-Za-z0-9.+-]*)\s*;\s*")
_XTEXT_UTF8 = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_WS = re.compile(r"\s+")

#: An enhanced status code (RFC 3463) not part of a longer dotted number (an IP address).
ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
#: A basic reply code followed by its enhanced code ("550 5.1.1", "550-5.1.1", "#550 5.1.1").
CODE_PAIR = re.compile(
    r"(?<![\d.])([245]\d\d)[ \t-]+#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)"
)
#: A basic SMTP reply code where a reply would start.
BASIC = re.compile(r"(?:^|[\s:'\"(#\[])([245][0-5]\d)(?=[\s\-]|$)", re.MULTILINE)
#: A mailbox address, lenient on purpose (real bounces quote odd ones).
ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\u0080-\uffff]+@"
    r"[A-Za-z0-9\u0080-\uffff](?:[A-Za-z0-9\-\u0080-\uffff]*)(?:\.[A-Za-z0-9\-\u0080-\uffff]+)+"
)


def unfold_fields(text: str) -> list[tuple[str, str] | None]:
    """Read ``Name: value`` lines into (lower-case name, unfolded value) pairs.

    A blank line is returned as ``None`` so callers can see block boundaries; lines that
    are neither a field, a continuation nor blank are skipped.
    """
    out: list[tuple[str, str] | None] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if not line.strip():
            if out and out[-1] is not None:
                out.append(None)
            continue
        if line[0] in " \t":
            last = out[-1] if out else None
            if last is not None:
                out[-1] = (last[0], f"{last[1]} {line.strip()}".strip())
            continue
        m = _FIELD.match(line)
        if m:
            out.append((m.group(1).lower(), m.group(2).strip()))
    return out


def strip_comments(value: str) -> str:
    """Remove RFC 5322 comments ``( ... )`` (nested ones too) and squeeze whitespace."""
    prev = None
    while prev != value:
        prev = value
        value = _COMMENT.sub(" ", value)
    return squeeze(value)


def squeeze(value: str) -> str:
    """Collapse runs of whitespace into one space and trim."""
    return _WS.sub(" ", value).strip()


def strip_type(value: str) -> str:
    """Drop an address-, MTA- or diagnostic-type prefix: ``rfc822;``, ``dns;``, ``smtp;``."""
    m = _TYPE_PREFIX.match(value)
    if m:
        value = value[m.end() :]
    return value.strip()


def clean_address(value: str) -> str:
    """Normalise an address field: type prefix, comments, ``<>`` brackets, ``mailto:``.

    ``utf-8`` typed addresses (RFC 6533) have their ``\\x{HEX}`` escapes decoded.
    """
    utf8 = value.strip().lower().startswith("utf-8")
    v = strip_comments(strip_type(value))
    if utf8:
        v = _XTEXT_UTF8.sub(lambda m: chr(int(m.group(1), 16)), v)
    m = re.search(r"<([^<>]*)>", v)
    if m and m.group(1).strip():
        v = m.group(1)
    v = v.strip().strip("<>\"'").strip()
    if v.lower().startswith("mailto:"):
        v = v[7:]
    return v.rstrip(".;,")


def find_status(text: str, *, delayed: bool = False) -> str | None:
    """The enhanced status code quoted in ``text``, or one derived from its basic code.

    Prefers a ``550 5.1.1`` pair, then a lone enhanced code, then a basic code (5xx →
    5.0.0, 4xx → 4.0.0, 2xx → 2.0.0). Returns None when the text holds no code.
    """
    m = CODE_PAIR.search(text)
    if m:
        return f"{m.group(2)}.{m.group(3)}.{m.group(4)}"
    m = ENHANCED.search(text)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    b = BASIC.search(text)
    if b:
        return f"{b.group(1)[0]}.0.0"
    return None


def normalise_status(value: str) -> str:
    """A ``Status:`` field value without comments; the bare code when one is there."""
    v = strip_comments(value)
    m = ENHANCED.search(v)
    if m and v.startswith(m.group(0)):
        return m.group(0)
    derived = find_status(v)
    return derived if derived is not None else v


def first_address(text: str) -> str | None:
    """The first mailbox address in ``text``, trailing punctuation removed."""
    m = ADDRESS.search(text)
    return m.group(0).rstrip(".-") if m else None
