"""Reading feedback reports (RFC 5965 ARF, RFC 6591 auth-failure) into ``ArfReport``.

Owns the machine-readable feedback fields: ``Feedback-Type`` and the fields around it,
with several ``Original-Rcpt-To`` becoming a list and several ``Reported-URI`` kept in
order. Also recognises complaint mails that are only "ARF-ish" (an attached original
and a complaint subject, as older feedback loops sent). Must not read MIME structure
beyond the parts it is handed, and must not do IO.
"""

from __future__ import annotations

import re

from engine.feedback.fields import clean_address, squeeze, strip_comments, unfold_fields
from engine.feedback.types import FEEDBACK_TYPES

#: Quick test that a text body holds feedback-report fields (mis-typed parts).
LOOKS_LIKE_ARF = re.compile(r"^feedback-type[ \t]*:", re.I | re.M)
#: Subjects and senders of complaint mails that carry no feedback-report part.
COMPLAINT_HINT = re.compile(
    r"complaint|abuse report|feedback loop|\bfbl\b|junk mail report|jmrp|spam report"
    r"|scomp|reported as spam|marked as spam",
    re.I,
)

_SINGLE = {
    "feedback-type": "feedback_type",
    "user-agent": "user_agent",
    "version": "version",
    "original-mail-from": "original_mail_from",
    "arrival-date": "arrival_date",
    "received-date": "arrival_date",
    "source-ip": "source_ip",
    "reported-domain": "reported_domain",
    "incidents": "incidents",
}


def feedback_type(value: str | None) -> str:
    """The feedback type in lower case; unknown tokens are kept, a missing one is ``other``."""
    if not value:
        return "other"
    v = strip_comments(value).lower().strip(" ;.")
    if v in FEEDBACK_TYPES:
        return v
    if v in ("auth-failure-report", "authfailure", "auth_failure", "dkim", "spf"):
        return "auth-failure"
    if v in ("spam", "complaint"):
        return "abuse"
    return v or "other"


def read_fields(text: str) -> dict[str, object]:
    """The report's fields: single ones by our names, lists for repeatable ones.

    Returns keys ``feedback_type``, ``user_agent``, ... plus ``original_rcpt_to`` and
    ``reported_uri`` as lists and ``extra`` (every other field, lower-case names).
    """
    out: dict[str, object] = {}
    rcpts: list[str] = []
    uris: list[str] = []
    extra: dict[str, str] = {}
    for item in unfold_fields(text):
        if item is None:
            continue
        name, value = item
        if name == "original-rcpt-to":
            addr = clean_address(value)
            if addr:
                rcpts.append(addr)
        elif name == "reported-uri":
            uri = value.strip().strip("<>")
            if uri:
                uris.append(uri)
        elif name in _SINGLE:
            key = _SINGLE[name]
            if key not in out:
                out[key] = value
        elif name == "authentication-results":
            out.setdefault("authentication_results", squeeze(value))
        else:
            extra.setdefault(name, squeeze(value))
    if "original_mail_from" in out:
        out["original_mail_from"] = clean_address(str(out["original_mail_from"])) or None
    if "source_ip" in out:
        out["source_ip"] = strip_comments(str(out["source_ip"])).strip("[]") or None
    if "reported_domain" in out:
        out["reported_domain"] = strip_comments(str(out["reported_domain"])).lower() or None
    if "incidents" in out:
        digits = re.match(r"\s*(\d+)", str(out["incidents"]))
        out["incidents"] = int(digits.group(1)) if digits else None
    for key in ("user_agent", "version", "arrival_date"):
        if key in out:
            out[key] = squeeze(str(out[key])) or None
    out["original_rcpt_to"] = rcpts
    out["reported_uri"] = uris
    out["extra"] = extra
    return out
