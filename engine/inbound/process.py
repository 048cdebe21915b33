"""Turn one received bounce or feedback report into spool events, suppressions and a Signal.

Owns the mapping of a report to (message, recipient): first the VERP envelope address the
report was sent to or quotes (``bounces+<id>.<rcpt-hash>.<mac>@...``, HMAC-checked by
``engine.delivery.message.parse_verp``: forged ones are ignored and counted), then our own
``Message-ID: <id.rid@domain>``. A permanent DSN writes ``bounced``, an ARF ``abuse``
report writes ``complaint``; both add the recipient to the tenant's suppression list in the
same spool transaction, and a report seen before (same bytes) changes nothing. The
recipient's spool state is not moved (an asynchronous bounce follows a 250, so the row is
usually ``delivered``, which is terminal). It must not parse MIME itself
(``engine.feedback``), speak SMTP (``engine.inbound.server``) or decide policy: the
``Signal`` goes to ``on_signal``, which the runner wires to ``Scheduler.feedback``. It
writes no SQL: the spool's named methods (``recipients_of``, ``route_of``, ``report_seen``,
``record_report``, ...) do, on SQLite or PostgreSQL alike -- so a report received by one
engine node suppresses the recipient for every node of a shared spool.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config import LabConfig
from engine.delivery.message import parse_verp, rcpt_hash
from engine.errors import InputError
from engine.feedback import ArfReport, DsnReport, parse
from engine.policy.scheduler import Signal

_MSGID = re.compile(r"<?(m_[0-9a-f]{24})\.(\d+)@[^>\s]+>?", re.I)
#: ARF feedback types that are complaints (RFC 5965 section 7.3: "abuse" is unsolicited
#: mail; "fraud" and "virus" are reports against the message too).
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus"})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one received message did: ``bounced``, ``complaint``, ``delayed``, ``ignored``,
    ``unknown``, ``unmatched``, ``forged`` or ``duplicate``; ``signal`` if one was sent."""

    status: str
    message_id: str | None = None
    recipient: str | None = None
    signal: Signal | None = None
    reason: str = ""


def feedback_domains(config: LabConfig, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """The domains the receiver accepts mail for: every sending domain's Return-Path
    domain (the sending domain itself when none is set), plus ``extra`` (FBL addresses)."""
    out = {(m.return_path or d).lower() for d, m in config.domains.items()}
    return frozenset(out | {e.lower().rstrip(".") for e in extra})


class FeedbackProcessor:
    """Apply received reports to one spool. ``stats`` counts every outcome."""

    def __init__(self, spool: Any, secret: bytes, *, config: LabConfig | None = None,
                 on_signal: Callable[[Signal], Any] | None = None) -> None:
        """``spool``: a ``Spool`` or a ``PgSpool``."""
        self.spool = spool
        self.secret = secret
        self.config = config
        self.on_signal = on_signal
        self.stats: Counter[str] = Counter()
        spool.prepare_side_tables()

    # -- mapping ----------------------------------------------------------------------------
    def _rid_by_verp(self, public_id: str, h: str) -> int | None:
        rows = self.spool.recipients_of(public_id)
        return next((rid for rid, rcpt in rows if rcpt_hash(rcpt) == h), None)

    def _rid_by_msgid(self, msgid: str) -> int | None:
        m = _MSGID.search(msgid)
        if m is None:
            return None
        want = int(m.group(2))
        rows = self.spool.recipients_of(m.group(1).lower())
        return next((rid for rid, _ in rows if rid == want), None)

    def locate(self, addresses: list[str], message_id: str | None) -> tuple[int | None, bool]:
        """(recipient id or None, whether a forged VERP address was seen)."""
        forged = False
        for addr in addresses:
            if not addr or not addr.strip().strip("<>").lower().startswith("bounces+"):
                continue
            try:
                public_id, h = parse_verp(self.secret, addr)
            except InputError as exc:
                forged = forged or "forged" in str(exc)
                continue
            rid = self._rid_by_verp(public_id, h)
            if rid is not None:
                return rid, forged
        if message_id:
            return self._rid_by_msgid(message_id), forged
        return None, forged

    def route_of(self, rid: int) -> tuple[str | None, str | None]:
        """(pool, provider) that carried recipient ``rid`` last, from its attempts/events."""
        pool, provider = self.spool.route_of(rid)
        return pool, provider

    # -- processing -------------------------------------------------------------------------
    def process(self, raw: bytes, rcpt_tos: list[str] | tuple[str, ...] = ()) -> Outcome:
        """Apply one received message (its bytes and envelope recipients). Never raises for
        bad input: every outcome is returned and counted in ``stats``."""
        out = self._process(raw, list(rcpt_tos))
        self.stats[out.status] += 1
        self.stats["received"] += 1
        if out.signal is not None and self.on_signal is not None:
            self.on_signal(out.signal)
        return out

    def _process(self, raw: bytes, rcpt_tos: list[str]) -> Outcome:
        digest = hashlib.sha256(raw).hexdigest()
        if self.spool.report_seen(digest):
            return Outcome("duplicate", reason="this report was received before")
        fb = parse(raw)
        if isinstance(fb, DsnReport):
            failed = [r for r in fb.recipients if r.permanent]
            kind, why = "bounced", "; ".join(
                f"{r.status} {r.diagnostic or ''}".strip() for r in failed)[:500]
            if not failed:
                return self._seen(digest, Outcome("delayed", reason="no permanent recipient"))
        elif isinstance(fb, ArfReport):
            if fb.feedback_type.lower() not in COMPLAINT_TYPES:
                return self._seen(digest, Outcome(
                    "ignored", reason=f"feedback type {fb.feedback_type}"))
            kind, why = "complaint", f"ARF {fb.feedback_type} from {fb.user_agent or '?'}"
        else:
            return Outcome("unknown", reason=fb.reason)
        rid, forged = self.locate([*rcpt_tos, fb.original_return_path or ""],
                                  fb.original_message_id)
        if rid is None:
            self.stats["forged_tokens"] += int(forged)
            return Outcome("forged" if forged else "unmatched",
                           reason="forged VERP address" if forged else "no message of ours")
        pool, provider = self.route_of(rid)
        job = self.spool.job(rid)
        scope = self.config.tenants[job.tenant].suppression_scope if (
            self.config and job.tenant in self.config.tenants) else "tenant"
        owner = "*" if scope == "global" else job.tenant
        reason = "bounce" if kind == "bounced" else "complaint"
        if not self.spool.record_report(digest, rid, kind, reason=why or reason,
                                        suppress_as=reason, owner=owner,
                                        fields={"pool": pool, "provider": provider,
                                                "detail": {"dialect": fb.dialect}}):
            return Outcome("duplicate", reason="this report was received before")
        signal = None
        if pool is not None and provider is not None:
            signal = Signal(kind="complaint" if kind == "complaint" else "bounce", pool=pool,
                            provider=provider, reason=why[:200])
        else:
            self.stats["no_route"] += 1
        return Outcome(kind, job.public_id, job.rcpt, signal, why)

    def _seen(self, digest: str, out: Outcome) -> Outcome:
        self.spool.mark_report(digest, out.status)
        return out
