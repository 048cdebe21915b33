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
``Signal`` goes to ``on_signal``, which the runner wires to ``Scheduler.feedback``.
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
from engine.spool import Spool

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound_seen (digest TEXT PRIMARY KEY, ts REAL NOT NULL,
  outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_message ON outbox(json_extract(event, '$.message_id'));
"""
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

    def __init__(self, spool: Spool, secret: bytes, *, config: LabConfig | None = None,
                 on_signal: Callable[[Signal], Any] | None = None) -> None:
        self.spool = spool
        self.secret = secret
        self.config = config
        self.on_signal = on_signal
        self.stats: Counter[str] = Counter()
        with spool.tx() as db:
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)

    # -- mapping ----------------------------------------------------------------------------
    def _rid_by_verp(self, public_id: str, h: str) -> int | None:
        with self.spool._lock:
            rows = self.spool.db.execute(
                "SELECT r.id, r.rcpt FROM recipients r JOIN messages m ON m.id=r.message_id "
                "WHERE m.public_id=?", (public_id,)).fetchall()
        return next((rid for rid, rcpt in rows if rcpt_hash(rcpt) == h), None)

    def _rid_by_msgid(self, msgid: str) -> int | None:
        m = _MSGID.search(msgid)
        if m is None:
            return None
        with self.spool._lock:
            row = self.spool.db.execute(
                "SELECT r.id FROM recipients r JOIN messages m ON m.id=r.message_id "
                "WHERE m.public_id=? AND r.id=?", (m.group(1).lower(), int(m.group(2)))
            ).fetchone()
        return None if row is None else int(row[0])

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
        with self.spool._lock:
            db = self.spool.db
            row = db.execute("SELECT pool FROM attempts WHERE recipient_id=? AND pool IS NOT "
                             "NULL ORDER BY id DESC LIMIT 1", (rid,)).fetchone()
            pid, rcpt = db.execute("SELECT m.public_id, r.rcpt FROM recipients r JOIN messages"
                                   " m ON m.id=r.message_id WHERE r.id=?", (rid,)).fetchone()
            prov = db.execute(
                "SELECT json_extract(event, '$.provider') FROM outbox WHERE "
                "json_extract(event, '$.message_id')=? AND json_extract(event, '$.recipient')=?"
                " AND json_extract(event, '$.provider') IS NOT NULL ORDER BY seq DESC LIMIT 1",
                (pid, rcpt)).fetchone()
        return (row[0] if row else None), (prov[0] if prov else None)

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
        with self.spool._lock:
            if self.spool.db.execute("SELECT 1 FROM inbound_seen WHERE digest=?",
                                     (digest,)).fetchone():
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
        now = self.spool.clock()
        reason = "bounce" if kind == "bounced" else "complaint"
        with self.spool.tx() as db:
            db.execute("INSERT INTO inbound_seen VALUES (?,?,?)", (digest, now, kind))
            self.spool._emit_for(db, rid, kind, now, reason=why or reason, pool=pool,
                                 provider=provider, detail={"dialect": fb.dialect})
            cur = db.execute("INSERT OR IGNORE INTO suppressions VALUES (?,?,?,?)",
                             (owner, job.rcpt.strip().lower(), reason, now))
            if cur.rowcount:
                self.spool._emit(db, job.tenant, event="suppressed", recipient=job.rcpt,
                                 reason=reason, ts=now)
        signal = None
        if pool is not None and provider is not None:
            signal = Signal(kind="complaint" if kind == "complaint" else "bounce", pool=pool,
                            provider=provider, reason=why[:200])
        else:
            self.stats["no_route"] += 1
        return Outcome(kind, job.public_id, job.rcpt, signal, why)

    def _seen(self, digest: str, out: Outcome) -> Outcome:
        with self.spool.tx() as db:
            db.execute("INSERT OR IGNORE INTO inbound_seen VALUES (?,?,?)",
                       (digest, self.spool.clock(), out.status))
        return out
