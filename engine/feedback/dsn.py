"""Reading the machine-readable part of a DSN (RFC 3464, RFC 6533) into a ``DsnReport``.

Owns splitting a delivery-status body into its per-message and per-recipient fields,
leniently: case-insensitive names, folded values, missing blank lines between recipient
blocks, missing ``rfc822;`` prefixes, ``<addr>`` brackets, statuses with comments.
Must not look at MIME structure or at MTA prose (``plain.py`` reads that).
"""

from __future__ import annotations

import re

from engine.feedback.fields import (
    clean_address,
    find_status,
    normalise_status,
    squeeze,
    strip_comments,
    strip_type,
    unfold_fields,
)
from engine.feedback.types import ACTIONS, DsnRecipient

_FULL_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")

_MESSAGE_FIELDS = frozenset(
    {
        "reporting-mta",
        "dsn-gateway",
        "received-from-mta",
        "arrival-date",
        "original-envelope-id",
    }
)
_RECIPIENT_FIELDS = frozenset(
    {
        "original-recipient",
        "final-recipient",
        "action",
        "status",
        "remote-mta",
        "diagnostic-code",
        "last-attempt-date",
        "final-log-id",
        "will-retry-until",
        "x-actual-recipient",
        "x-display-name",
    }
)
#: Quick test that a text body holds DSN fields (for parts mis-typed as text/plain).
LOOKS_LIKE_DSN = re.compile(
    r"^(?:final-recipient|original-recipient)[ \t]*:.*?^(?:action|status)[ \t]*:",
    re.I | re.M | re.S,
)


def split_report(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields and one dict per recipient block (lower-case names).

    A new recipient starts at a blank line after recipient fields, or — when blank lines
    are missing — at a second ``Final-Recipient`` / ``Original-Recipient``.
    """
    message: dict[str, str] = {}
    recipients: list[dict[str, str]] = []
    cur: dict[str, str] = {}

    def close() -> None:
        nonlocal cur
        if cur:
            recipients.append(cur)
        cur = {}

    for item in unfold_fields(text):
        if item is None:
            if any(k in _RECIPIENT_FIELDS for k in cur):
                close()
            continue
        name, value = item
        if _starts_new_recipient(name, cur):
            close()
        if name in _MESSAGE_FIELDS and not cur:
            message.setdefault(name, value)
        elif name in _RECIPIENT_FIELDS or name.startswith("x-"):
            cur.setdefault(name, value)
        else:
            message.setdefault(name, value)
    close()
    return message, [r for r in recipients if _recipient_of(r)]


def _starts_new_recipient(name: str, cur: dict[str, str]) -> bool:
    """Whether field ``name`` opens a new recipient block (blank lines may be missing)."""
    if name == "final-recipient":
        return "final-recipient" in cur
    if name == "original-recipient":
        # After a complete block (recipient plus action/status) it opens the next one.
        done = "final-recipient" in cur and ("action" in cur or "status" in cur)
        return "original-recipient" in cur or done
    if name in ("action", "status"):
        return name in cur and "final-recipient" not in cur
    return False


def _recipient_of(block: dict[str, str]) -> str:
    for key in ("final-recipient", "x-actual-recipient", "original-recipient"):
        if block.get(key):
            addr = clean_address(block[key])
            if addr:
                return addr
    return ""


def normalise_action(value: str | None, status: str | None) -> str:
    """The action word in lower case; when absent or odd, inferred from the status class."""
    if value:
        word = strip_comments(value).lower().split(" ")[0].strip(";,.")
        for a in ACTIONS:
            if word.startswith(a[:5]):
                return a
        if word in ("failure", "fail", "bounced", "bounce", "error"):
            return "failed"
        if word in ("delay", "deferred", "defer", "warning"):
            return "delayed"
    if status and status[:1] == "4":
        return "delayed"
    if status and status[:1] == "2":
        return "delivered"
    return "failed"


def recipients_from(blocks: list[dict[str, str]]) -> list[DsnRecipient]:
    """Build ``DsnRecipient`` values from recipient field blocks."""
    out: list[DsnRecipient] = []
    for b in blocks:
        diag_raw = b.get("diagnostic-code")
        diagnostic = squeeze(strip_type(diag_raw)) if diag_raw else None
        status = normalise_status(b["status"]) if b.get("status") else None
        if not status or not _FULL_STATUS.fullmatch(status):
            # absent, odd or cut short ("5"): the diagnostic's code, else the class alone
            derived = find_status(diagnostic) if diagnostic else None
            if derived:
                status = derived
            elif status and status[:1] in "245":
                status = f"{status[:1]}.0.0"
            else:
                status = None
        action = normalise_action(b.get("action"), status)
        if not status:
            status = {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0")
        orig = b.get("original-recipient")
        remote = b.get("remote-mta")
        out.append(
            DsnRecipient(
                recipient=_recipient_of(b),
                action=action,
                status=status,
                diagnostic=diagnostic or None,
                original_recipient=clean_address(orig) if orig else None,
                remote_mta=mta_name(remote),
                last_attempt_date=squeeze(b["last-attempt-date"])
                if b.get("last-attempt-date")
                else None,
                will_retry_until=squeeze(b["will-retry-until"])
                if b.get("will-retry-until")
                else None,
            )
        )
    return out


def mta_name(value: str | None) -> str | None:
    """``dns; mx.example.com (comment)`` → ``mx.example.com``."""
    if not value:
        return None
    v = strip_comments(strip_type(value)).rstrip(".")
    return v or None
