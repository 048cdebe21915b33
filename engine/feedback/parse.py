"""Entry point of feedback parsing: one message (bytes or str) in, one result out.

Owns the order in which a message is read: an ARF feedback-report part, then a DSN
delivery-status part (RFC 3464, RFC 6533 global), then the same fields in a mis-typed
text part, then plain-text bounce heuristics, then complaint mails without a report
part; anything else is ``Unknown`` with a reason. Also recovers the returned original's
Message-ID, Return-Path and To (our VERP address) when the report carries a copy.

Pure: stdlib ``email`` only; no sockets, files, clocks or randomness. Never raises on
any input — bad input becomes ``Unknown``.
"""

from __future__ import annotations

import email
import html
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from engine.feedback import arf, dsn, plain
from engine.feedback.fields import ADDRESS, clean_address
from engine.feedback.mime import (
    clean_message_id,
    embedded_headers,
    header,
    leaf_parts,
    message_id_in_text,
    part_text,
)
from engine.feedback.types import ArfReport, DsnReport, Feedback, Unknown

_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_ARF_TYPES = frozenset({"message/feedback-report"})
_ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
    }
)
_HEADER_LINE = re.compile(rb"^(?:From .*|[!-9;-~]+[ \t]*:.*)$")
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_TAGS = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]+>", re.I | re.S)
_BR = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.I)
_HEADER_PARSER = HeaderParser()
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


@dataclass(frozen=True, slots=True)
class _Original:
    message_id: str | None = None
    return_path: str | None = None
    to: str | None = None
    hotmail_rcpt: str | None = None


def parse(data: bytes | str) -> Feedback:
    """Parse one message. Returns a ``DsnReport``, an ``ArfReport`` or ``Unknown``.

    Never raises: empty input, binary data, text without mail headers and mail that
    is neither a bounce nor a feedback report all come back as ``Unknown(reason=...)``.
    """
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    reason = _not_mail(raw)
    if reason is not None:
        return Unknown(reason=reason)
    try:
        return _parse(raw.replace(b"\r\n", b"\n"))
    except (ValueError, LookupError, TypeError, AttributeError, IndexError) as exc:
        # The stdlib parser is lenient but not total on hostile input; never escalate.
        return Unknown(reason=f"unreadable message ({type(exc).__name__})")


def _not_mail(raw: bytes) -> str | None:
    body = raw.lstrip(b" \t\r\n")
    if not body:
        return "empty input"
    head = body[:4096]
    if b"\x00" in head or len(_CONTROL.findall(head)) > max(8, len(head) // 50):
        return "binary data, not a mail message"
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    if not _HEADER_LINE.match(first):
        return "no mail headers at the start of the input"
    return None


def _parse(raw: bytes) -> Feedback:
    msg = email.message_from_bytes(raw.lstrip(b" \t\n"))
    if not msg.keys():
        return Unknown(reason="no mail headers at the start of the input")
    parts = leaf_parts(msg)
    types = [p.get_content_type() for p in parts]

    for p, t in zip(parts, types, strict=True):
        if t in _ARF_TYPES:
            return _arf_report(part_text(p), parts, types, "arf")
    dsn_texts = [part_text(p) for p, t in zip(parts, types, strict=True) if t in _DSN_TYPES]
    if dsn_texts:
        report = _dsn_report("\n\n".join(dsn_texts), parts, types)
        if report is not None:
            return report

    texts: list[tuple[str, str]] = []
    for p, t in zip(parts, types, strict=True):
        if p.is_multipart() or t in _ORIGINAL_TYPES:
            continue
        if t.startswith("text/") or t == "application/octet-stream" or p is msg:
            texts.append((t, part_text(p)))
    for _, text in texts:
        if arf.LOOKS_LIKE_ARF.search(text):
            return _arf_report(text, parts, types, "arf-text")
    for _, text in texts:
        if dsn.LOOKS_LIKE_DSN.search(text):
            report = _dsn_report(text, parts, types)
            if report is not None:
                return report

    human = _human_text(texts)
    subject = header(msg, "subject") or ""
    sender = header(msg, "from") or ""
    failed_hdr = [
        a.group(0) for a in ADDRESS.finditer(header(msg, "x-failed-recipients") or "")
    ]
    notice, pasted = plain.split_original(human)
    if plain.looks_like_bounce(notice, subject, sender, bool(failed_hdr)):
        exclude = {a.group(0).lower() for a in ADDRESS.finditer(sender)}
        exclude |= {a.group(0).lower() for a in ADDRESS.finditer(header(msg, "to") or "")}
        rcpts = plain.recipients(
            notice,
            delayed=plain.is_delay(notice, subject),
            failed_header=failed_hdr,
            exclude=exclude,
        )
        if rcpts:
            orig = _original(parts, types, pasted)
            return DsnReport(
                recipients=tuple(rcpts),
                dialect=plain.dialect_of(notice, sender),
                reporting_mta=_reporting_host(notice),
                original_message_id=orig.message_id,
                original_return_path=orig.return_path,
                original_to=orig.to,
            )
        return Unknown(reason="reads like a bounce but names no recipient")

    complaint = _complaint(msg, parts, types, subject, sender)
    if complaint is not None:
        return complaint
    return Unknown(reason="not a delivery status notification or feedback report")


def _dsn_report(text: str, parts: list[Message], types: list[str]) -> DsnReport | None:
    per_message, blocks = dsn.split_report(text)
    rcpts = dsn.recipients_from(blocks)
    if not rcpts:
        return None
    orig = _original(parts, types, "")
    return DsnReport(
        recipients=tuple(rcpts),
        dialect="rfc3464",
        reporting_mta=dsn.mta_name(per_message.get("reporting-mta")),
        received_from_mta=dsn.mta_name(per_message.get("received-from-mta")),
        arrival_date=per_message.get("arrival-date"),
        original_envelope_id=per_message.get("original-envelope-id"),
        original_message_id=orig.message_id,
        original_return_path=orig.return_path,
        original_to=orig.to,
    )


def _arf_report(text: str, parts: list[Message], types: list[str], dialect: str) -> ArfReport:
    f = arf.read_fields(text)
    orig = _original(parts, types, "")
    rcpts = f["original_rcpt_to"]
    assert isinstance(rcpts, list)
    uris = f["reported_uri"]
    assert isinstance(uris, list)
    extra = f["extra"]
    assert isinstance(extra, dict)
    incidents = f.get("incidents")
    return ArfReport(
        feedback_type=arf.feedback_type(_opt(f.get("feedback_type"))),
        user_agent=_opt(f.get("user_agent")),
        version=_opt(f.get("version")),
        original_mail_from=_opt(f.get("original_mail_from")),
        original_rcpt_to=_one_or_many(rcpts),
        arrival_date=_opt(f.get("arrival_date")),
        source_ip=_opt(f.get("source_ip")),
        reported_domain=_opt(f.get("reported_domain")),
        reported_uri=tuple(str(u) for u in uris),
        authentication_results=_opt(f.get("authentication_results")),
        incidents=incidents if isinstance(incidents, int) else None,
        original_message_id=orig.message_id,
        original_return_path=orig.return_path,
        original_to=orig.to,
        dialect=dialect,
        extra={str(k): str(v) for k, v in extra.items()},
    )


def _complaint(
    msg: Message, parts: list[Message], types: list[str], subject: str, sender: str
) -> ArfReport | None:
    """An "ARF-ish" complaint: an attached original plus complaint words, no report part."""
    if not any(t in _ORIGINAL_TYPES for t in types):
        return None
    orig = _original(parts, types, "")
    hint = f"{subject}\n{sender}\n{header(msg, 'user-agent') or ''}"
    if not (arf.COMPLAINT_HINT.search(hint) or orig.hotmail_rcpt):
        return None
    rcpt = orig.hotmail_rcpt or orig.to
    ip = _IPV4.search(subject)
    return ArfReport(
        feedback_type="abuse",
        source_ip=ip.group(0) if ip else None,
        user_agent=header(msg, "user-agent") or header(msg, "x-mailer"),
        original_mail_from=orig.return_path,
        original_rcpt_to=rcpt,
        original_message_id=orig.message_id,
        original_return_path=orig.return_path,
        original_to=orig.to,
        dialect="complaint-attachment",
    )


def _original(parts: list[Message], types: list[str], pasted: str) -> _Original:
    for p, t in zip(parts, types, strict=True):
        if t in _ORIGINAL_TYPES:
            h = embedded_headers(p)
            if h is not None:
                return _from_headers(h)
    if pasted:
        rest = pasted.split("\n", 1)[1] if "\n" in pasted else ""
        text = rest.lstrip("\n")
        h = _HEADER_PARSER.parsestr(text)
        got = _from_headers(h)
        if got.message_id is None:
            got = _Original(message_id=message_id_in_text(text), return_path=got.return_path,
                            to=got.to, hotmail_rcpt=got.hotmail_rcpt)
        return got
    return _Original()


def _from_headers(h: Message) -> _Original:
    rp = header(h, "return-path")
    to = header(h, "to")
    hm = header(h, "x-hmxmroriginalrecipient")
    return _Original(
        message_id=clean_message_id(header(h, "message-id")),
        return_path=clean_address(rp) or None if rp else None,
        to=clean_address(to) or None if to else None,
        hotmail_rcpt=clean_address(hm) or None if hm else None,
    )


def _human_text(texts: list[tuple[str, str]]) -> str:
    plain_parts = [t for ctype, t in texts if ctype != "text/html"]
    if plain_parts:
        return "\n".join(plain_parts)
    html_parts = [t for ctype, t in texts if ctype == "text/html"]
    return "\n".join(html.unescape(_TAGS.sub("", _BR.sub("\n", t))) for t in html_parts)


def _reporting_host(notice: str) -> str | None:
    m = re.search(r"mail system at host ([^\s.]+(?:\.[^\s.]+)*)", notice, re.I)
    if m:
        return m.group(1)
    m = re.search(r"^Generating server:\s*(\S+)", notice, re.I | re.M)
    if m:
        return m.group(1)
    m = re.search(r"^Reporting-MTA:\s*(?:dns;\s*)?(\S+)", notice, re.I | re.M)
    return m.group(1) if m else None


def _opt(v: object) -> str | None:
    return str(v) if v is not None and str(v) != "" else None


def _one_or_many(values: list[str]) -> str | list[str] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)
