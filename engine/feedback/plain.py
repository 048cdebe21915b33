"""Heuristics for bounces with no delivery-status part: the prose real MTAs send.

Owns recognising a plain-text bounce or delay notice (qmail, Postfix, Exim, Sendmail,
old Gmail, Exchange / Office 365, Yahoo / AOL, Lotus Notes, gateways such as Mimecast)
and pulling recipients, actions and status codes out of it. Status is the enhanced code
quoted for the recipient, else one derived from its basic code (5xx → 5.0.0, 4xx →
4.0.0), else 5.0.0 / 4.0.0 by the notice's kind. Must not read MIME structure (the
caller hands in text) and must not do IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.feedback.fields import ADDRESS, CODE_PAIR, ENHANCED, find_status, squeeze
from engine.feedback.types import DsnRecipient

# Lines that start the returned copy of the original message; text after them is not
# part of the notice (it would feed us the original's addresses and numbers).
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*(?:"
    r"-+ ?Below this line is a copy of the message"  # qmail
    r"|-+ ?This is a copy of (?:the|your) message"  # exim
    r"|-+ ?(?:Original message|Unsent message follows|Message header follows"
    r"|Returned message|Original message follows|The header of the original message)"
    r"|-+ ?Original Message ?-+"
    r"|Original message headers:"  # exchange
    r"|Received: from .+"  # a pasted original without a marker
    r")",
    re.I | re.M,
)

_BOUNCE_PHRASES = (
    "qmail-send program",
    "this is the mail system at host",
    "mail delivery software",
    "following addresses had",
    "failed permanently",
    "delivery has failed to these recipients",
    "delivery is delayed to these recipients",
    "could not be delivered",
    "couldn't be delivered",
    "could not deliver",
    "was not delivered to",
    "cannot be reached",
    "unable to deliver",
    "undeliverable",
    "undelivered mail",
    "has not yet been delivered",
    "has been delayed",
    "did not reach some or all",
    "permanent error",
    "permanent fatal error",
    "delivery failed",
    "delivery failure",
    "wasn't able to deliver",
    "was not able to deliver",
    "message not delivered",
    "transcript of session follows",
    "the following recipient",
    "remote server returned",
    "diagnostic information for administrators",
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery status notification|failure notice|returned mail"
    r"|mail delivery fail|delivery fail|non.?remis|nondeliver|delayed mail|delivery delayed"
    r"|warning: could not send|mail system error|returned to sender|could not be delivered"
    r"|delivery notification|unzustellbar",
    re.I,
)
_DAEMON_FROM = re.compile(
    r"mailer-daemon|postmaster|mail delivery (?:sub)?system|mail ?delivery|microsoftexchange",
    re.I,
)
_DELAY_PHRASES = (
    "(delay)",
    "will keep trying",
    "will be retried",
    "will retry",
    "will continue to",
    "attempts will continue",
    "has not yet been delivered",
    "have not yet been delivered",
    "has been delayed",
    "delivery is delayed",
    "warning message only",
    "this is a warning only",
    "do not need to resend",
    "transient non-fatal",
    "still trying",
    "temporary failure",
)
_PERMANENT_PHRASES = (
    "failed permanently",
    "permanent error",
    "permanent fatal",
    "not going to try again",
    "giving up",
    "delivery has failed",
    "has been rejected",
    "permanent failure",
)
_DELAY_SUBJECT = re.compile(
    r"\(delay\)|delayed|warning: could not send|still being retried|delivery delayed", re.I
)

# A line that announces a list of recipients; the addresses follow on the next lines.
_TRIGGER = re.compile(
    r"(?:following address(?:\(es\)|es)?\s+(?:failed|had)"
    r"|following recipients?(?:\(s\))?\s+(?:failed|has|have|cannot|could|was|were)"
    r"|have not yet been delivered|has been delayed"
    r"|these recipients or groups"
    r"|was not delivered to|were not delivered to"
    r"|diagnostic information for administrators"
    r"|unable to deliver (?:your )?message to the following"
    r"|to the following address(?:es)?"
    r"|could not be delivered to (?:one or more|the following)"
    r"|delivery to the following recipients?"
    r"|cannot be reached"
    r"|following (?:recipients?|address(?:es)?)\s*:"
    r")[^\n]*$",
    re.I,
)
# Phrases that name the recipient inline.
_INLINE = re.compile(
    r"(?:your message to|could not be delivered to|couldn't be delivered to"
    r"|delivery to|not delivered to|undeliverable to|unable to deliver (?:your )?message to)"
    r"\s*:?\s*<?(" + ADDRESS.pattern + r")>?",
    re.I,
)
_ANGLE_LINE = re.compile(r"^[ \t]*<(" + ADDRESS.pattern + r")>(.*)$")
_ADDR_LINE = re.compile(r"^([ \t]*)['\"<]?(" + ADDRESS.pattern + r")['\">]?(.*)$")
_REPLY_LINE = re.compile(
    r"(?:^|\s)(?:#?[245]\d\d[ \t-]+#?[245]\.\d{1,3}\.\d{1,3}|#?[245]\.\d{1,3}\.\d{1,3}|"
    r"remote server returned|said:|[245]\d\d\s)",
    re.I,
)
_DIALECTS = (
    ("qmail", "qmail-send program"),
    ("postfix", "this is the mail system at host"),
    ("exim", "mail delivery software"),
    ("gmail", "google tried to deliver"),
    ("gmail", "delivery to the following recipient"),
    ("exchange", "diagnostic information for administrators"),
    ("exchange", "delivery has failed to these recipients"),
    ("exchange", "delivery is delayed to these recipients"),
    ("exchange", "did not reach some or all"),
    ("exchange", "remote server returned"),
    ("lotus", "domino"),
    ("lotus", "was not delivered to:"),
    ("yahoo", "message from yahoo"),
    ("yahoo", "sorry, we were unable to deliver your message"),
    ("mimecast", "mimecast"),
    ("proofpoint", "proofpoint"),
    ("sendmail", "transcript of session follows"),
    ("sendmail", "following addresses had"),
)


@dataclass(slots=True)
class _Block:
    address: str
    lines: list[str]


def split_original(text: str) -> tuple[str, str]:
    """(notice text, returned original text) split at the first copy marker."""
    m = _ORIGINAL_MARKER.search(text)
    if not m:
        return text, ""
    return text[: m.start()], text[m.end() :]


def looks_like_bounce(text: str, subject: str, sender: str, failed_header: bool) -> bool:
    """Whether a plain notice reads as a bounce or delay notice at all."""
    low = text.lower()
    if any(p in low for p in _BOUNCE_PHRASES):
        return True
    from_daemon = bool(_DAEMON_FROM.search(sender))
    return bool(_BOUNCE_SUBJECT.search(subject)) and (from_daemon or failed_header)


def is_delay(text: str, subject: str) -> bool:
    """A warning that delivery is still being attempted, not a final failure."""
    low = text.lower()
    if any(p in low for p in _PERMANENT_PHRASES):
        return False
    return any(p in low for p in _DELAY_PHRASES) or bool(_DELAY_SUBJECT.search(subject))


def dialect_of(text: str, sender: str) -> str:
    """A short name for the notice's style, used only for reporting."""
    low = text.lower() + "\n" + sender.lower()
    for name, phrase in _DIALECTS:
        if phrase in low:
            return name
    return "plain"


def _clean(addr: str) -> str:
    return addr.rstrip(".-").strip()


def _angle_blocks(lines: list[str]) -> list[_Block]:
    out: list[_Block] = []
    cur: _Block | None = None
    for line in lines:
        m = _ANGLE_LINE.match(line)
        if m:
            cur = _Block(_clean(m.group(1)), [m.group(2).lstrip(":").strip()])
            out.append(cur)
            continue
        if cur is None:
            continue
        if not line.strip():
            cur = None
            continue
        cur.lines.append(line.strip())
    return out


def _trigger_blocks(lines: list[str]) -> list[_Block]:
    out: list[_Block] = []
    i = 0
    n = len(lines)
    while i < n:
        if not _TRIGGER.search(lines[i]):
            i += 1
            continue
        i += 1
        cur: _Block | None = None
        indent = 0
        seen_blank = False
        skipped = 0
        while i < n:
            line = lines[i]
            if _TRIGGER.search(line):
                break
            if not line.strip():
                seen_blank = cur is not None or seen_blank
                i += 1
                continue
            m = _ADDR_LINE.match(line)
            if m and not _REPLY_LINE.match(line.strip()):
                cur = _Block(_clean(m.group(2)), [])
                rest = re.sub(r"^<mailto:[^>]*>", "", m.group(3).strip()).strip()
                if rest and not rest.lower().startswith("on "):
                    cur.lines.append(rest.lstrip(":").strip())
                indent = len(m.group(1).expandtabs())
                out.append(cur)
                seen_blank = False
            elif cur is None:
                skipped += 1
                if skipped > 6:
                    break
            else:
                deeper = len(line) - len(line.lstrip()) > indent
                if seen_blank and not deeper and not _REPLY_LINE.search(line):
                    break
                cur.lines.append(line.strip())
            i += 1
    return out


def _inline_blocks(text: str) -> list[_Block]:
    return [_Block(_clean(m.group(1)), []) for m in _INLINE.finditer(text)]


def _has_code(line: str) -> bool:
    return bool(
        CODE_PAIR.search(line) or ENHANCED.search(line) or re.match(r"^#?[245]\d\d[\s-]", line)
    )


def _tidy(line: str) -> str:
    m = re.match(r"^\(\s*reason:\s*(.*?)\)?$", line, re.I)
    if m:
        return m.group(1)
    return line.strip().strip("#").strip().lstrip(".:; ").strip()


def _code_line(text: str, *, follow: int = 0) -> str | None:
    """The first line quoting a reply code, with up to ``follow`` continuation lines."""
    lines = [line.strip() for line in text.splitlines()]
    for i, s in enumerate(lines):
        if _has_code(s):
            out = [s]
            for nxt in lines[i + 1 : i + 1 + follow]:
                if not nxt or _has_code(nxt) or _STOP_FOLLOW.match(nxt):
                    break
                out.append(nxt)
            return _tidy(" ".join(out))
    return None


_STOP_FOLLOW = re.compile(r"(?:giving up|i'm not going|delay reason|host \S+ \[|---)", re.I)


def _reason_after_because(text: str) -> str | None:
    m = re.search(
        r"^\s*(?:because|reason|technical details of (?:\w+ )?failure)\s*:\s*\n?\s*(\S[^\n]*)",
        text,
        re.I | re.M,
    )
    return squeeze(m.group(1)) if m else None


def recipients(
    notice: str, *, delayed: bool, failed_header: list[str], exclude: set[str]
) -> list[DsnRecipient]:
    """Recipients named by a plain notice, one per address, with action and status."""
    lines = notice.splitlines()
    blocks: dict[str, _Block] = {}
    order: list[str] = []
    for b in _angle_blocks(lines) + _trigger_blocks(lines) + _inline_blocks(notice):
        key = b.address.lower()
        if key in exclude or "@" not in key:
            continue
        if key not in blocks:
            blocks[key] = _Block(b.address, [])
            order.append(key)
        have = blocks[key].lines
        have.extend(line for line in b.lines if line and line not in have)
    for addr in failed_header:
        key = addr.lower()
        if key not in blocks:
            blocks[key] = _Block(addr, [])
            order.append(key)
    if not order:
        return []
    own = {k: find_status("\n".join(blocks[k].lines)) for k in order}
    shared = len(order) == 1 or not any(own.values())
    whole_code = find_status("\n".join(_code_candidates(lines))) if shared else None
    fallback_diag = (_code_line(notice) or _reason_after_because(notice)) if shared else None
    action = "delayed" if delayed else "failed"
    out: list[DsnRecipient] = []
    for key in order:
        b = blocks[key]
        text = "\n".join(b.lines)
        status = own[key] or whole_code
        first = _tidy(b.lines[0]) if b.lines else None
        diag_src = _code_line(text, follow=2) or first or fallback_diag
        if status is None:
            status = "4.0.0" if delayed else "5.0.0"
        out.append(
            DsnRecipient(
                recipient=b.address,
                action=action,
                status=status,
                diagnostic=squeeze(diag_src) if diag_src else None,
            )
        )
    return out


def _code_candidates(lines: list[str]) -> list[str]:
    """Lines likely to hold a quoted reply (avoids dates and sizes in prose)."""
    return [line for line in lines if _REPLY_LINE.search(line) or ENHANCED.search(line)]
