"""Dead letters and replay, on the spool database through ``Spool``'s connection.

Owns reading failed recipients (``dead_lettered``, ``expired``, ``bounced``) with their
reasons and full attempt history -- redacted in listings (no body, recipient masked) -- and
replay: matching recipients move ``-> replayed -> queued`` in ONE transaction with their
events, optionally with a new ``not_before`` (kept as the recipient's ``next_at``, which the
runner hands to the core) and a requested pool (kept in ``replays``). A replay is keyed by
tenant + filter + constraints: each recipient is replayed at most once per key, so a second
identical request does nothing. It adds the ``replays`` table and must not change the
spool's own tables or states (``engine.spool.store`` / ``states`` own those).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from engine.errors import InputError
from engine.spool.store import Spool

FAILED = ("dead_lettered", "expired", "bounced")
_SCHEMA = """CREATE TABLE IF NOT EXISTS replays (
  key TEXT NOT NULL, recipient_id INTEGER NOT NULL, ts REAL NOT NULL, pool TEXT,
  not_before REAL, PRIMARY KEY (key, recipient_id))"""
_TERMINAL_EVENTS = ("dead_lettered", "expired", "bounced", "ambiguous")


def mask(address: str) -> str:
    """``ann@example.net`` -> ``a**@example.net`` (the domain stays: it is what operators
    filter on)."""
    local, at, domain = address.partition("@")
    if not at:
        return "*" * len(address)
    return (local[:1] + "*" * max(2, len(local) - 1)) + "@" + domain


@dataclass(frozen=True, slots=True)
class Filter:
    """Which failed recipients an operation covers (None: any)."""

    tenant: str | None = None
    campaign: str | None = None
    provider: str | None = None
    reason: str | None = None  # a case-insensitive substring of the reason
    state: str | None = None  # one of FAILED
    message_id: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in FAILED:
            raise InputError(f"state must be one of {', '.join(FAILED)}, got {self.state!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One failed recipient, redacted for listing (``recipient`` is masked)."""

    id: int
    message_id: str
    tenant: str
    campaign: str | None
    lane: str
    recipient: str
    state: str
    ambiguous: bool
    attempts: int
    provider: str | None
    pool: str | None
    reason: str | None
    updated: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did: recipient ids moved back to queued, and ids matched but already
    replayed under the same key."""

    key: str
    replayed: tuple[int, ...]
    already: tuple[int, ...]


class DeadLetters:
    """Dead-letter queries and replay on one open ``Spool``."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        with spool.tx() as db:
            db.execute(_SCHEMA)

    def _rows(self, f: Filter, limit: int, rid: int | None = None) -> list[DeadLetter]:
        q = ("SELECT r.id, m.public_id, m.tenant, m.campaign, m.lane, r.rcpt, r.state,"
             " r.ambiguous, r.attempts, r.updated FROM recipients r JOIN messages m ON"
             " m.id=r.message_id WHERE r.state IN ('dead_lettered','expired','bounced')")
        args: list[Any] = []
        for col, val in (("m.tenant", f.tenant), ("m.campaign", f.campaign),
                         ("r.state", f.state), ("m.public_id", f.message_id), ("r.id", rid)):
            if val is not None:
                q += f" AND {col}=?"
                args.append(val)
        q += " ORDER BY r.id"
        out: list[DeadLetter] = []
        with self.spool._lock:
            db = self.spool.db
            for row in db.execute(q, args).fetchall():
                rid_, pid, tenant, campaign, lane, rcpt, state, amb, n, upd = row
                evs = db.execute(
                    "SELECT json_extract(event,'$.event'), json_extract(event,'$.reason'),"
                    " json_extract(event,'$.provider'), json_extract(event,'$.pool'),"
                    " json_extract(event,'$.response') FROM outbox WHERE"
                    " json_extract(event,'$.message_id')=? AND"
                    " json_extract(event,'$.recipient')=? ORDER BY seq DESC",
                    (pid, rcpt)).fetchall()
                term = next((e for e in evs if e[0] in _TERMINAL_EVENTS), None)
                reason = (term[1] or term[4]) if term else None
                provider = next((e[2] for e in evs if e[2]), None)
                pool = next((e[3] for e in evs if e[3]), None)
                if pool is None:
                    p = db.execute("SELECT pool FROM attempts WHERE recipient_id=? ORDER BY id"
                                   " DESC LIMIT 1", (rid_,)).fetchone()
                    pool = p[0] if p else None
                if f.provider is not None and provider != f.provider:
                    continue
                if f.reason is not None and f.reason.lower() not in (reason or "").lower():
                    continue
                out.append(DeadLetter(rid_, pid, tenant, campaign, lane, rcpt, state,
                                      bool(amb), n, provider, pool, reason, upd))
                if len(out) >= limit:
                    break
        return out

    def list(self, f: Filter = Filter(), *, limit: int = 1000) -> list[DeadLetter]:
        """Failed recipients matching ``f``, oldest first, recipients masked."""
        from dataclasses import replace

        return [replace(d, recipient=mask(d.recipient)) for d in self._rows(f, limit)]

    def show(self, rid: int, *, tenant: str | None = None) -> dict[str, Any]:
        """One failed recipient with its full attempt history (the body is never shown:
        only its size and hash). Raises ``InputError`` if it is not a dead letter."""
        rows = self._rows(Filter(tenant=tenant), 1, rid=rid)
        if not rows:
            raise InputError(f"no dead letter with id {rid}"
                             + (f" for tenant {tenant}" if tenant else ""))
        with self.spool._lock:
            db = self.spool.db
            atts = db.execute("SELECT n, started, finished, pool, source_ip, mx_host, "
                              "data_started, code, response FROM attempts WHERE recipient_id=?"
                              " ORDER BY id", (rid,)).fetchall()
            size, bhash = db.execute(
                "SELECT length(b.data), b.hash FROM recipients r JOIN messages m ON "
                "m.id=r.message_id JOIN bodies b ON b.hash=m.body_hash WHERE r.id=?",
                (rid,)).fetchone()
            reps = db.execute("SELECT key, ts, pool, not_before FROM replays WHERE "
                              "recipient_id=? ORDER BY ts", (rid,)).fetchall()
        out = rows[0].as_dict()
        out["body"] = {"bytes": size, "sha256": bhash, "redacted": True}
        out["attempt_history"] = [
            dict(zip(("n", "started", "finished", "pool", "source_ip", "mx_host",
                      "data_started", "code", "response"), a, strict=True)) for a in atts]
        out["replays"] = [dict(zip(("key", "ts", "pool", "not_before"), r, strict=True))
                          for r in reps]
        return out

    def replay(self, f: Filter, *, pool: str | None = None, not_before: float | None = None,
               limit: int = 100_000) -> ReplayResult:
        """Requeue every matching failed recipient once per (filter, constraints) key."""
        key = hashlib.sha256(json.dumps(
            {"filter": asdict(f), "pool": pool, "not_before": not_before},
            sort_keys=True).encode()).hexdigest()[:32]
        matched = self._rows(f, limit)
        done: list[int] = []
        already: list[int] = []
        now = self.spool.clock()
        with self.spool.tx() as db:
            for d in matched:
                if db.execute("SELECT 1 FROM replays WHERE key=? AND recipient_id=?",
                              (key, d.id)).fetchone():
                    already.append(d.id)
                    continue
                state = db.execute("SELECT state FROM recipients WHERE id=?",
                                   (d.id,)).fetchone()[0]
                if state != d.state:  # changed since it was read: leave it alone
                    continue
                self.spool._move(db, d.id, "replayed", now)
                self.spool._emit_for(db, d.id, "replayed", now, state="replayed",
                                     reason=f"replay {key}" + (f" pool={pool}" if pool else ""),
                                     pool=pool)
                self.spool._move(db, d.id, "queued", now, next_at=not_before)
                db.execute("INSERT INTO replays VALUES (?,?,?,?,?)",
                           (key, d.id, now, pool, not_before))
                done.append(d.id)
        return ReplayResult(key, tuple(done), tuple(already))

    def requested_pool(self, rid: int) -> str | None:
        """The pool the latest replay of ``rid`` asked for (None: no constraint)."""
        with self.spool._lock:
            row = self.spool.db.execute("SELECT pool FROM replays WHERE recipient_id=? ORDER "
                                        "BY ts DESC LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None
