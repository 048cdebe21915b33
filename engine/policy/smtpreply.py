"""Parse an SMTP reply as it reaches us: basic code, enhanced status code, flat text.

Owns the textual forms a reply arrives in: single and multi-line replies
(``421-4.7.28 ...`` continuation lines), ``smtp;`` / ``Diagnostic-Code: smtp;`` prefixes of
DSNs, Exchange's ``Remote Server returned '550 5.1.1 ...'``, Exim's ``... : 550 ...``, and
Yahoo's ``[#4.16.1]`` enhanced codes. Pure string work; it never classifies.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["ParsedReply", "parse_reply"]

# "Diagnostic-Code: smtp; 550 ..." / "smtp;550 ..." / "X-Postfix; ..." (RFC 3464 section 2.3.6)
_PREFIX = re.compile(
    r"^\s*(?:diagnostic-code\s*:\s*)?(?:smtp|x-postfix|x-unix|x-local)\s*;\s*", re.IGNORECASE
)
_DIAG_ONLY = re.compile(r"^\s*diagnostic-code\s*:\s*", re.IGNORECASE)
# A line that starts with a reply code: "421-4.7.28 text", "550 5.1.1 text", "421,4.7.0 text".
_LINE_CODE = re.compile(
    r"^\s*([2-5]\d\d)(?:[-, ]|$)\s*(?:#?([2-5]\.\d{1,3}\.\d{1,3})(?![\d.]))?\s*"
)
# An enhanced status code standing alone (not part of an IP address or a longer dotted number).
_ENHANCED = re.compile(r"(?<![\d.])#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
# A basic code followed by an enhanced code of the same class, anywhere in the text.
_CODE_AND_ENHANCED = re.compile(
    r"(?<![\d.])([245])(\d\d)[\s-]+#?([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)"
)
# A basic code after a colon, semicolon, quote or "said:" (Exim, Exchange, Postfix DSN texts).
_ENHANCED_ONLY = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_CODE_AFTER = re.compile(
    r"(?:[:;'\"(\[]|said:|returned|reply:)\s*([245][0-5]\d)(?=[\s\-'\"]|$)", re.IGNORECASE
)


class ParsedReply(NamedTuple):
    """A reply taken apart: the codes found, the flat text, and how they were found.

    A named tuple (immutable, cheap to build: one is made per classified reply)."""

    code: int | None
    enhanced: str | None
    text: str
    reasons: tuple[str, ...]


def _valid_code(code: int | None) -> bool:
    return code is not None and 200 <= code <= 599


def parse_reply(text: str, code: int | None = None, enhanced: str | None = None) -> ParsedReply:
    """Take ``text`` apart; ``code`` / ``enhanced`` given by the caller win over the text.

    The enhanced code taken from the text is the first one of the basic code's class; when
    none has the right class the first one found is used (Gmail prints ``421 5.7.32``).
    """
    raw = text if isinstance(text, str) else str(text)
    # Fast path for the common shape: one line, no DSN prefix, "NNN X.Y.Z text" with the
    # enhanced code of the basic code's class. Same result as the general path (a property
    # test holds it to that); anything else falls through.
    if enhanced is None and "\n" not in raw and "\r" not in raw:
        line = raw
        note: tuple[str, ...] = ()
        m = _LINE_CODE.match(raw)
        if m is None:
            # (a line that starts with a code cannot start with a DSN prefix)
            head = raw[:40].lower()
            if ";" in head or "diagnostic" in head:
                line = _PREFIX.sub("", raw, count=1)
                if line == raw:
                    line = _DIAG_ONLY.sub("", raw, count=1)
                if line != raw:
                    note = ("stripped DSN prefix",)
                    m = _LINE_CODE.match(line)
        if m is not None:
            line_enh = m.group(2)
            if line_enh is not None:
                if code is None:
                    line_code = m.group(1)
                    if line_enh[0] == line_code[0]:
                        return ParsedReply(
                            int(line_code),
                            line_enh,
                            line[m.end() :].strip(),
                            (
                                *note,
                                f"parsed code {line_code} from text",
                                f"enhanced {line_enh} from text",
                            ),
                        )
                elif 200 <= code <= 599 and line_enh[0] == str(code)[0]:
                    return ParsedReply(
                        code,
                        line_enh,
                        line[m.end() :].strip(),
                        (*note, f"enhanced {line_enh} from text"),
                    )
    return _parse_general(raw, code, enhanced)


def _parse_general(raw: str, code: int | None, enhanced: str | None) -> ParsedReply:
    """Every shape ``parse_reply`` accepts (the fast path there is a shortcut of this)."""
    reasons: list[str] = []
    stripped = raw
    head = raw[:40].lower()
    if ";" in head or "diagnostic" in head:
        stripped = _PREFIX.sub("", raw, count=1)
        if stripped == raw:
            stripped = _DIAG_ONLY.sub("", raw, count=1)
        if stripped != raw:
            reasons.append("stripped DSN prefix")
    line_code: int | None = None
    line_enh: str | None = None
    if "\n" in stripped or "\r" in stripped:
        lines = [ln for ln in _NEWLINES.split(stripped) if ln.strip()]
        if len(lines) > 1:
            reasons.append(f"joined {len(lines)} lines")
    else:
        lines = [stripped]
    body_parts: list[str] = []
    for i, line in enumerate(lines):
        m = _LINE_CODE.match(line)
        if m:
            if i == 0:
                line_code = int(m.group(1))
                line_enh = m.group(2)
            body_parts.append(line[m.end() :].strip())
        else:
            body_parts.append(line.strip())
    body = (
        " ".join(p for p in body_parts if p)
        if len(body_parts) > 1
        else body_parts[0]
        if body_parts
        else ""
    )

    if code is not None and not _valid_code(code):
        reasons.append(f"ignored invalid code {code}")
        code = None
    if code is None:
        if line_code is not None and _valid_code(line_code):
            code = line_code
            reasons.append(f"parsed code {code} from text")
        else:
            m2 = _CODE_AND_ENHANCED.search(stripped)
            if m2 and m2.group(1) == m2.group(3):
                code = int(m2.group(1) + m2.group(2))
                reasons.append(f"found code {code} inside text")
            else:
                m3 = _CODE_AFTER.search(stripped)
                if m3:
                    code = int(m3.group(1))
                    reasons.append(f"found code {code} inside text")
    if enhanced is not None:
        enh = enhanced.strip().lstrip("#")
        if _ENHANCED_ONLY.fullmatch(enh):
            enhanced = enh
        else:
            reasons.append(f"ignored invalid enhanced code {enhanced!r}")
            enhanced = None
    if enhanced is None:
        want = str(code)[0] if code is not None else None
        if line_enh is not None and (want is None or line_enh[0] == want):
            enhanced = line_enh
        else:
            first_any: str | None = line_enh
            for m4 in _ENHANCED.finditer(stripped):
                found = f"{m4.group(1)}.{int(m4.group(2))}.{int(m4.group(3))}"
                if want is None or m4.group(1) == want:
                    enhanced = found
                    break
                if first_any is None:
                    first_any = found
            if enhanced is None and first_any is not None:
                enhanced = first_any
                reasons.append(f"enhanced {first_any} disagrees with class of {code}")
        if enhanced is not None:
            reasons.append(f"enhanced {enhanced} from text")
    return ParsedReply(code=code, enhanced=enhanced, text=body, reasons=tuple(reasons))
