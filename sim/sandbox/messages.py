"""What the sandbox reads from a message and the reports it writes back.

Owns ``message_facts`` (DKIM verification with dkimpy, only for messages that carry a
DKIM-Signature header and cached per message; SPF; Message-ID, From domain, link domains,
lane, read by a cheap header scan rather than ``email.parser``) and the builders of an RFC
5965 ARF complaint and an RFC 3464 DSN. Pure functions over bytes; no sockets of its own.

Authentication facts come from one of two places: the config's tables (``dkim_keys``,
``spf`` IP lists, ``dmarc``: a From domain has a record when it or its organizational
domain is listed), or - when the config names a DNS server - real lookups on that server
through ``sim.dns.auth.DnsAuth`` (DKIM key records, RFC 7208 SPF evaluation, RFC 7489
DMARC discovery). The model decides alignment.

Lane: taken from an ``X-Inboxlab-Lane`` header when present; otherwise mail with a
``List-Unsubscribe`` header counts as lifecycle and other mail as transactional.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from email.utils import formatdate, parseaddr
from functools import lru_cache
from typing import TYPE_CHECKING

import dkim

from sim.providers.domains import org_domain
from sim.providers.facts import Consequence, MessageFacts

if TYPE_CHECKING:
    from sim.dns.auth import DnsAuth

_LINK = re.compile(rb"https?://([A-Za-z0-9.-]+)", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A header line as the stdlib's feed parser recognises one: printable name, then a colon.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
_WANTED = frozenset({b"message-id", b"from", b"x-inboxlab-lane", b"list-unsubscribe",
                     b"dkim-signature"})
_DKIM_CACHE_SIZE = 4096
# sha-256 of the whole message -> (key records the verification looked up, result)
_dkim_cache: OrderedDict[bytes, tuple[tuple[tuple[str, str | None], ...], str | None]] = \
    OrderedDict()


def split_message(data: bytes) -> tuple[bytes, bytes]:
    m = _HEADER_END.search(data)
    return (data, b"") if m is None else (data[: m.start()], data[m.end():])


def scan_headers(head: bytes) -> dict[str, str]:
    """The first value of each header the sandbox reads (lower-case names), unfolded as the
    stdlib's compat32 parser leaves it (continuation lines kept, outer CR/LF stripped).

    A cheap line scan instead of ``email.parser`` on the per-message path; it stops at the
    first line that is neither a header nor a continuation, as that parser does.
    """
    found: dict[str, str] = {}
    current: list[bytes] | None = None
    parts: dict[str, list[bytes]] = {}
    for n, line in enumerate(head.split(b"\n")):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(b"\n" + line)
            continue
        m = _FIELD.match(line)
        if m is None:
            if n == 0 and line.startswith(b"From "):  # an mbox "From " line, as the parser
                continue
            if line.strip(b"\r"):
                break
            continue
        name = m.group(1).lower()
        if name in _WANTED and name.decode() not in parts:
            current = [line[m.end():].lstrip(b" \t")]
            parts[name.decode()] = current
        else:
            current = None
    for name, chunks in parts.items():
        found[name] = b"".join(chunks).rstrip(b"\r\n").decode("ascii", "surrogateescape")
    return found


def address_of(value: str) -> str:
    """The address in a From value (``parseaddr``'s answer, with a fast path for the
    common ``Name <local@domain>`` and bare ``local@domain`` forms)."""
    if '"' not in value and "(" not in value and "," not in value:
        i = value.rfind("<")
        if i >= 0:
            j = value.find(">", i)
            if j > i and value.find("<") == i:
                inner = value[i + 1: j].strip()
                if inner and " " not in inner and "\t" not in inner and "\r" not in inner:
                    return inner
        elif "<" not in value and ">" not in value:
            bare = value.strip()
            if bare and not any(c in bare for c in " \t\r\n;:[]\\"):
                return bare
    return parseaddr(value)[1]


@lru_cache(maxsize=4096)
def _from_domain(value: str) -> str:
    """The lower-case domain of the address in a From value ("" when it has none)."""
    addr = address_of(value)
    return addr.rsplit("@", 1)[1].lower() if "@" in addr else ""


Records = Mapping[str, str] | Callable[[str], str | None]


def _getter(keys: Records) -> Callable[[str], str | None]:
    return keys.get if isinstance(keys, Mapping) else keys


def _verify(data: bytes, keys: Records, looked_up: list[tuple[str, str | None]]) -> str | None:
    get = _getter(keys)

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes | None:
        text = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        record = get(text)
        looked_up.append((text, record))
        return record.encode("latin-1", "replace") if record is not None else None

    try:
        d = dkim.DKIM(data, minkey=1024)
        if d.verify(dnsfunc=dnsfunc):
            domain = d.domain
            return domain.decode().lower() if isinstance(domain, bytes) else str(domain).lower()
    except Exception:  # any malformed signature simply fails verification
        return None
    return None


def dkim_domain(data: bytes, keys: Records, *, signed: bool | None = None) -> str | None:
    """d= of the first DKIM signature that verifies against ``keys``, else None.

    ``keys`` maps ``selector._domainkey.domain`` to its key record, or is a function giving
    the record of a name (the DNS: ``DnsAuth.dkim_record``). ``signed`` tells whether the
    message has a DKIM-Signature header (None: look). Results are cached by the message's
    sha-256 together with the key records the verification read, so a resent message (same
    bytes, same records) is not verified twice; a changed record misses the cache.
    """
    if signed is None:
        signed = "dkim-signature" in scan_headers(split_message(data)[0])
    if not signed or (isinstance(keys, Mapping) and not keys):
        return None
    get = _getter(keys)
    digest = hashlib.sha256(data).digest()
    hit = _dkim_cache.get(digest)
    if hit is not None and all(get(name) == record for name, record in hit[0]):
        _dkim_cache.move_to_end(digest)
        return hit[1]
    looked_up: list[tuple[str, str | None]] = []
    result = _verify(data, keys, looked_up)
    _dkim_cache[digest] = (tuple(looked_up), result)
    if len(_dkim_cache) > _DKIM_CACHE_SIZE:
        _dkim_cache.popitem(last=False)
    return result


def spf_result(mail_from: str, source_ip: str, records: Mapping[str, tuple[str, ...]]) -> bool:
    """True when the MAIL FROM domain lists ``source_ip`` in the config's SPF records."""
    domain = mail_from.rsplit("@", 1)[1].lower() if "@" in mail_from else ""
    ips = records.get(domain)
    return ips is not None and source_ip in ips


def message_facts(
    data: bytes, *, mail_from: str, recipients: tuple[str, ...], source_ip: str,
    dkim_keys: Mapping[str, str], spf: Mapping[str, tuple[str, ...]], ref: str = "",
    dmarc: Mapping[str, str] | None = None, auth: DnsAuth | None = None, helo: str = "",
) -> MessageFacts:
    """What the models need to know of one message. With ``auth`` (the sandbox's config
    names a DNS server) DKIM keys, SPF and DMARC come from real lookups through it and the
    config's tables are not read; a failed lookup reads as "not authenticated"."""
    head, body = split_message(data)
    headers = scan_headers(head)
    lane = headers.get("x-inboxlab-lane", "").strip().lower()
    if lane not in ("transactional", "lifecycle", "prospecting"):
        lane = "lifecycle" if headers.get("list-unsubscribe") else "transactional"
    from_domain = _from_domain(headers.get("from", ""))
    scanned = body[:65536]
    links = tuple(dict.fromkeys(m.group(1).decode().lower().rstrip(".")
                                for m in _LINK.finditer(scanned))) if b"://" in scanned else ()
    spf_domain = mail_from.rsplit("@", 1)[1].lower() if "@" in mail_from else None
    signed = "dkim-signature" in headers
    if auth is not None:
        dkim_d, spf_pass, has_dmarc = _dns_auth(data, auth, mail_from, helo, source_ip,
                                                from_domain, signed)
    else:
        records = dmarc or {}
        # RFC 7489 §6.6.3: the From domain's record, else its organizational domain's.
        has_dmarc = bool(from_domain) and (from_domain in records
                                           or org_domain(from_domain) in records)
        dkim_d = dkim_domain(data, dkim_keys, signed=signed) if signed and dkim_keys else None
        spf_pass = spf_result(mail_from, source_ip, spf)
    return MessageFacts(
        mail_from=mail_from,
        recipients=recipients,
        message_id=headers.get("message-id", "").strip(),
        dkim_domain=dkim_d,
        spf_domain=spf_domain,
        spf_pass=spf_pass,
        from_domain=from_domain,
        dmarc_record=has_dmarc,
        link_domains=links[:16],
        lane=lane,
        size=len(data),
        ref=ref,
    )


def _dns_auth(data: bytes, auth: DnsAuth, mail_from: str, helo: str, source_ip: str,
              from_domain: str, signed: bool) -> tuple[str | None, bool, bool]:
    """(DKIM d= that verified, SPF passed, a DMARC record applies) from real DNS."""
    from engine.errors import InputError
    from sim.dns.auth import DnsUnavailable

    try:
        spf_pass = auth.spf(mail_from, helo, source_ip) == "pass"
    except InputError:  # a source address SPF cannot read (not an IP) fails it
        spf_pass = False
    try:
        has_dmarc = bool(from_domain) and auth.dmarc(from_domain) is not None
    except DnsUnavailable:
        has_dmarc = False
    dkim_d = dkim_domain(data, auth.dkim_record, signed=True) if signed else None
    return dkim_d, spf_pass, has_dmarc


def _boundary() -> str:
    return f"=_inboxlab_{uuid.uuid4().hex}"


def _headers_only(original: bytes) -> bytes:
    head, _ = split_message(original)
    return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def build_arf(c: Consequence, original: bytes, *, reporter: str, to: str, provider_host: str) -> bytes:
    """An RFC 5965 abuse report (multipart/report; report-type=feedback-report)."""
    b = _boundary()
    date = formatdate(time.time(), usegmt=True)
    report = (
        "Feedback-Type: abuse\r\n"
        "User-Agent: inboxlab-sandbox/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{c.mail_from}>\r\n"
        f"Original-Rcpt-To: <{c.recipient}>\r\n"
        f"Arrival-Date: {formatdate(c.at, usegmt=True)}\r\n"
        f"Reporting-MTA: dns; {provider_host}\r\n"
        f"Source-IP: {c.source_ip}\r\n"
        + (f"Reported-Domain: {c.dkim_domain}\r\n" if c.dkim_domain else "")
    )
    parts = [
        f"From: <{reporter}>\r\nTo: <{to}>\r\nDate: {date}\r\n"
        f"Subject: Abuse report for a message from {c.mail_from}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{provider_host}>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{b}"\r\n\r\n'
        "This is a multi-part message in MIME format.\r\n\r\n",
        f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is an email abuse report for a message received from IP {c.source_ip}.\r\n\r\n",
        f"--{b}\r\nContent-Type: message/feedback-report\r\n\r\n{report}\r\n",
        f"--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n",
    ]
    return "".join(parts).encode() + _headers_only(original) + f"\r\n--{b}--\r\n".encode()


def build_dsn(c: Consequence, original: bytes, *, reporter: str, to: str, provider_host: str) -> bytes:
    """An RFC 3464 delivery status notification for a failed recipient."""
    b = _boundary()
    date = formatdate(time.time(), usegmt=True)
    code = c.text.split(" ", 1)[0] if c.text else "550"
    status = c.status or "5.0.0"
    parts = [
        f"From: Mail Delivery Subsystem <{reporter}>\r\nTo: <{to}>\r\nDate: {date}\r\n"
        "Subject: Delivery Status Notification (Failure)\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{provider_host}>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{b}"\r\n\r\n',
        f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"Your message to {c.recipient} could not be delivered.\r\n\r\n{c.text}\r\n\r\n",
        f"--{b}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {provider_host}\r\n"
        f"Arrival-Date: {formatdate(c.at, usegmt=True)}\r\n\r\n"
        f"Final-Recipient: rfc822; {c.recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; {provider_host}\r\n"
        f"Diagnostic-Code: smtp; {c.text or code}\r\n"
        f"Last-Attempt-Date: {date}\r\n\r\n",
        f"--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n",
    ]
    return "".join(parts).encode() + _headers_only(original) + f"\r\n--{b}--\r\n".encode()
