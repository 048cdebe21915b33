"""The durable spool: SQLite (WAL, ``synchronous=NORMAL``) holding messages, bodies,
recipients, attempts, suppressions and the ``outbox`` of events.

Owns every write to the spool database. Each state change and its event are written in
ONE transaction (so nothing is lost and nothing emitted twice); transitions are checked
against ``engine.spool.states``. Crash recovery runs on open. It does not decide policy
(that is ``engine.policy``) and does not talk SMTP or HTTP.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.errors import InputError, StateError
from engine.events import Event
from engine.spool.states import check_transition

# the states that count against the intake budget (``max_active``)
ACTIVE_STATES = frozenset({"queued", "scheduled", "in_flight", "deferred"})
_EVENT_FIELDS = tuple(f.name for f in fields(Event) if f.name != "seq")

# what ``finish_many`` reads per recipient: its state, then what its event carries
_EVENT_COLUMNS = ("r.state, m.tenant, m.public_id, r.rcpt, m.sending_domain, m.lane, "
                  "m.campaign, r.attempts, m.created")

_MARK = "UPDATE attempts SET data_started=1, mx_host=? WHERE finished IS NULL AND recipient_id=?"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bodies (hash TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY, public_id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  lane TEXT NOT NULL, campaign TEXT, idem_key TEXT NOT NULL, request_hash TEXT NOT NULL,
  sending_domain TEXT NOT NULL, mail_from TEXT NOT NULL, body_hash TEXT NOT NULL
    REFERENCES bodies(hash),
  created REAL NOT NULL, expires REAL, timezone TEXT, UNIQUE (tenant, idem_key));
CREATE TABLE IF NOT EXISTS recipients (
  id INTEGER PRIMARY KEY, message_id INTEGER NOT NULL REFERENCES messages(id),
  rcpt TEXT NOT NULL, domain TEXT NOT NULL, state TEXT NOT NULL,
  ambiguous INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  next_at REAL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS recipients_state ON recipients(state);
CREATE TABLE IF NOT EXISTS attempts (
  id INTEGER PRIMARY KEY, recipient_id INTEGER NOT NULL REFERENCES recipients(id),
  n INTEGER NOT NULL, started REAL NOT NULL, pool TEXT, source_ip TEXT, mx_host TEXT,
  data_started INTEGER NOT NULL DEFAULT 0, code INTEGER, response TEXT, finished REAL);
CREATE INDEX IF NOT EXISTS attempts_open ON attempts(recipient_id) WHERE finished IS NULL;
CREATE TABLE IF NOT EXISTS suppressions (
  tenant TEXT NOT NULL, address TEXT NOT NULL, reason TEXT, ts REAL NOT NULL,
  PRIMARY KEY (tenant, address));
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT, event TEXT NOT NULL);
"""


_dumps = json.JSONEncoder(separators=(",", ":")).encode
_CHUNK = 500  # ids per ``IN (...)`` query (SQLite's default variable limit is far above)


class IdempotencyConflict(StateError):
    """The Idempotency-Key was used before with another request body."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """The result of ``Spool.accept``: the public id and whether it was new."""

    public_id: str
    created: bool


@dataclass(frozen=True, slots=True)
class Pending:
    """A recipient the policy core should hold (``next_at``: not before, for retries)."""

    id: int
    lane: str
    tenant: str
    sending_domain: str
    domain: str
    next_at: float | None
    expires: float | None
    rcpt: str = ""
    public_id: str = ""
    timezone: str | None = None  # the recipients' IANA zone (send windows), None: unknown


@dataclass(frozen=True, slots=True)
class Job:
    """Everything the delivery side needs to send one recipient."""

    id: int
    public_id: str
    tenant: str
    lane: str
    campaign: str | None
    sending_domain: str
    mail_from: str
    rcpt: str
    domain: str
    attempts: int
    body: bytes
    created: float


class Spool:
    """One spool database. Thread-safe through one lock; meant for one engine process."""

    def __init__(self, path: str | Path, *, run_id: str = "", source: str = "live",
                 clock: Callable[[], float] = time.time, recover: bool = True) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.source = source
        self.clock = clock
        self._lock = threading.RLock()
        self.db = sqlite3.connect(str(self.path), isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        # spools made before the column existed (their messages have no known time zone)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(messages)")}
        if "timezone" not in columns:
            self.db.execute("ALTER TABLE messages ADD COLUMN timezone TEXT")
        # live recipients, kept by ``_move`` / ``_accept`` so the intake budget check is
        # O(1); ``_delta`` is the change of the open transaction, applied on COMMIT only
        self._delta = 0
        self._active_n = self._active(self.db)
        self.recovered: dict[str, int] = {}
        if recover:
            self.recovered = self.recover()

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            self._delta = 0
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                self._delta = 0
                raise
            self.db.execute("COMMIT")
            self._active_n += self._delta
            self._delta = 0

    # -- events -----------------------------------------------------------------------------
    def _emit(self, db: sqlite3.Connection, tenant: str | None, **fields: Any) -> None:
        db.execute("INSERT INTO outbox (tenant, event) VALUES (?, ?)",
                   self._event_row(tenant, **fields))

    def _event_row(self, tenant: str | None, **fields: Any) -> tuple[str | None, str]:
        """The outbox row of one event (checked on construction by ``Event``)."""
        fields.setdefault("ts", self.clock())
        ev = Event(source=self.source, run_id=self.run_id, tenant=tenant, **fields)
        data = {k: v for k in _EVENT_FIELDS if (v := getattr(ev, k)) is not None}
        return tenant, _dumps(data)

    def emit(self, *, tenant: str | None = None, **fields: Any) -> None:
        """Write one event that changes no recipient (breaker, automation, ...)."""
        with self.tx() as db:
            self._emit(db, tenant, **fields)

    def events_after(self, after: int, *, tenant: str | None = None,
                     limit: int = 1000) -> list[Event]:
        """Outbox events with ``seq > after`` (of one tenant when given), oldest first."""
        q = "SELECT seq, event FROM outbox WHERE seq > ?"
        args: list[Any] = [after]
        if tenant is not None:
            q += " AND tenant = ?"
            args.append(tenant)
        q += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self.db.execute(q, args).fetchall()
        return [Event(seq=seq, **json.loads(data)) for seq, data in rows]

    # -- intake -----------------------------------------------------------------------------
    def accept(self, *, tenant: str, idem_key: str, request: bytes, lane: str,
               campaign: str | None, sending_domain: str, mail_from: str,
               recipients: Iterable[str], body: bytes, expires: float | None = None,
               max_active: int | None = None, timezone: str | None = None) -> Accepted:
        """Store one message and its recipients durably (committed before returning).

        Same tenant + ``idem_key`` + same ``request`` bytes returns the first id; another
        request under that key raises ``IdempotencyConflict``; more than ``max_active``
        live recipients in the spool raises ``InputError`` (the caller answers 429).
        ``timezone``: the recipients' IANA zone, for lanes with a send window.
        """
        with self.tx() as db:
            return self._accept(db, self.clock(), tenant=tenant, idem_key=idem_key,
                                request=request, lane=lane, campaign=campaign,
                                sending_domain=sending_domain, mail_from=mail_from,
                                recipients=recipients, body=body, expires=expires,
                                max_active=max_active, timezone=timezone)

    def accept_many(self, requests: list[dict[str, Any]]
                    ) -> list[Accepted | InputError | IdempotencyConflict]:
        """Group commit: ``accept`` each request (the keyword arguments of ``accept``) in ONE
        transaction and one fsync. Each request gets its own result: an ``Accepted``, or the
        ``InputError`` / ``IdempotencyConflict`` it raised, which rolls back only that
        request (a savepoint each). Nothing is visible or durable before this returns."""
        out: list[Accepted | InputError | IdempotencyConflict] = []
        now = self.clock()
        with self.tx() as db:
            for kw in requests:
                db.execute("SAVEPOINT one")
                delta = self._delta
                try:
                    out.append(self._accept(db, now, **kw))
                except (InputError, IdempotencyConflict) as exc:
                    db.execute("ROLLBACK TO one")
                    self._delta = delta
                    out.append(exc)
                db.execute("RELEASE one")
        return out

    def _accept(self, db: sqlite3.Connection, now: float, *, tenant: str, idem_key: str,
                request: bytes, lane: str, campaign: str | None, sending_domain: str,
                mail_from: str, recipients: Iterable[str], body: bytes,
                expires: float | None = None, max_active: int | None = None,
                timezone: str | None = None) -> Accepted:
        rhash = hashlib.sha256(request).hexdigest()
        bhash = hashlib.sha256(body).hexdigest()
        rcpts = list(dict.fromkeys(r.strip() for r in recipients))
        if not rcpts:
            raise InputError("a message needs at least one recipient")
        row = db.execute("SELECT public_id, request_hash FROM messages WHERE tenant=? AND "
                         "idem_key=?", (tenant, idem_key)).fetchone()
        if row is not None:
            if row[1] != rhash:
                raise IdempotencyConflict(
                    f"Idempotency-Key {idem_key!r} was used with another request")
            return Accepted(row[0], False)
        if max_active is not None and self._active_n + self._delta + len(rcpts) > max_active:
            raise InputError("spool is full")
        db.execute("INSERT OR IGNORE INTO bodies VALUES (?, ?)", (bhash, body))
        public_id = "m_" + secrets.token_hex(12)
        cur = db.execute(
            "INSERT INTO messages (public_id, tenant, lane, campaign, idem_key, request_hash,"
            " sending_domain, mail_from, body_hash, created, expires, timezone)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (public_id, tenant, lane, campaign, idem_key, rhash, sending_domain, mail_from,
             bhash, now, expires, timezone))
        mid = cur.lastrowid
        self._delta += len(rcpts)
        for rcpt in rcpts:
            domain = rcpt.rsplit("@", 1)[-1].lower()
            db.execute("INSERT INTO recipients (message_id, rcpt, domain, state, updated)"
                       " VALUES (?,?,?,?,?)", (mid, rcpt, domain, "queued", now))
            self._emit(db, tenant, event="enqueued", message_id=public_id, recipient=rcpt,
                       sending_domain=sending_domain, lane=lane, campaign=campaign,
                       state="queued", enqueued_ts=now, ts=now)
        return Accepted(public_id, True)

    @staticmethod
    def _active(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT count(*) FROM recipients WHERE state IN "
                              "('queued','scheduled','in_flight','deferred')").fetchone()[0])

    def active(self) -> int:
        """Live recipients (queued, scheduled, in flight, deferred), counted in the database."""
        with self._lock:
            return self._active(self.db)

    def active_count(self) -> int:
        """Live recipients as kept by this process's writes: O(1), what the intake budget
        checks. Equals ``active()`` unless another process writes the same spool."""
        return self._active_n

    def message(self, public_id: str, tenant: str) -> dict[str, Any] | None:
        """A message and its recipients' states, or None (unknown or another tenant's)."""
        with self._lock:
            row = self.db.execute("SELECT id, lane, campaign, sending_domain, created FROM "
                                  "messages WHERE public_id=? AND tenant=?",
                                  (public_id, tenant)).fetchone()
            if row is None:
                return None
            rcpts = self.db.execute("SELECT rcpt, state, ambiguous, attempts FROM recipients "
                                    "WHERE message_id=? ORDER BY id", (row[0],)).fetchall()
        return {"id": public_id, "lane": row[1], "campaign": row[2], "sending_domain": row[3],
                "created": row[4],
                "recipients": [{"address": r, "state": s, "ambiguous": bool(a), "attempts": n}
                               for r, s, a, n in rcpts]}

    # -- suppression ------------------------------------------------------------------------
    def suppress(self, tenant: str, address: str, reason: str) -> bool:
        """Add ``address`` to ``tenant``'s suppression list; True if it was new."""
        address = address.strip().lower()
        with self.tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO suppressions VALUES (?,?,?,?)",
                             (tenant, address, reason, self.clock()))
            if cur.rowcount:
                self._emit(db, tenant, event="unsubscribe" if reason == "unsubscribe"
                           else "suppressed", recipient=address, reason=reason)
            return bool(cur.rowcount)

    def is_suppressed(self, tenant: str, address: str) -> bool:
        """True when ``address`` is on ``tenant``'s (or the global ``*``) suppression list."""
        with self._lock:
            row = self.db.execute("SELECT 1 FROM suppressions WHERE address=? AND tenant IN "
                                  "(?, '*')", (address.strip().lower(), tenant)).fetchone()
        return row is not None

    def suppressed_among(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (tenant, address) pairs of ``pairs`` that ``is_suppressed`` (in few queries)."""
        wanted = {(t, a.strip().lower()): (t, a) for t, a in pairs}
        found: set[tuple[str, str]] = set()
        addrs = sorted({a for _, a in wanted})
        with self._lock:
            for lo in range(0, len(addrs), _CHUNK):
                chunk = addrs[lo:lo + _CHUNK]
                for tenant, address in self.db.execute(
                        "SELECT tenant, address FROM suppressions WHERE address IN "
                        f"({','.join('?' * len(chunk))})", chunk):
                    found.add((tenant, address))
        return {orig for (t, a), orig in wanted.items()
                if (t, a) in found or ("*", a) in found}

    # -- delivery side ----------------------------------------------------------------------
    def take_pending(self, limit: int = 10_000) -> list[Pending]:
        """Queued recipients (up to ``limit``), moved to ``scheduled`` in one transaction."""
        with self.tx() as db:
            rows = db.execute(
                "SELECT r.id, m.lane, m.tenant, m.sending_domain, r.domain, r.next_at, m.expires,"
                " r.rcpt, m.public_id, m.timezone FROM recipients r JOIN messages m"
                " ON m.id = r.message_id WHERE r.state='queued' ORDER BY r.id LIMIT ?",
                (limit,)).fetchall()
            db.executemany("UPDATE recipients SET state='scheduled' WHERE id=?",
                           [(r[0],) for r in rows])
        return [Pending(*r) for r in rows]

    def job(self, rid: int) -> Job:
        """The sendable form of recipient ``rid``. Raises ``StateError`` if unknown."""
        with self._lock:
            row = self.db.execute(
                "SELECT r.id, m.public_id, m.tenant, m.lane, m.campaign, m.sending_domain,"
                " m.mail_from, r.rcpt, r.domain, r.attempts, b.data, m.created"
                " FROM recipients r JOIN messages m ON m.id=r.message_id"
                " JOIN bodies b ON b.hash=m.body_hash WHERE r.id=?", (rid,)).fetchone()
        if row is None:
            raise StateError(f"unknown recipient {rid}")
        return Job(*row)

    def jobs(self, rids: Iterable[int]) -> list[Job]:
        """``job`` for each of ``rids`` in order, in a few queries (recipients of one body
        share one ``bytes`` object). Raises ``StateError`` if one is unknown."""
        ids = list(rids)
        found: dict[int, Job] = {}
        bodies: dict[bytes, bytes] = {}
        with self._lock:
            for lo in range(0, len(ids), 500):
                chunk = ids[lo:lo + 500]
                rows = self.db.execute(
                    "SELECT r.id, m.public_id, m.tenant, m.lane, m.campaign, m.sending_domain,"
                    " m.mail_from, r.rcpt, r.domain, r.attempts, b.data, m.created"
                    " FROM recipients r JOIN messages m ON m.id=r.message_id"
                    " JOIN bodies b ON b.hash=m.body_hash WHERE r.id IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for row in rows:
                    body = bodies.setdefault(row[10], row[10])
                    found[row[0]] = Job(*row[:10], body, row[11])  # type: ignore[call-arg]
        missing = [i for i in ids if i not in found]
        if missing:
            raise StateError(f"unknown recipient {missing[0]}")
        return [found[i] for i in ids]

    def state(self, rid: int) -> tuple[str, bool]:
        """(state, ambiguous) of recipient ``rid``."""
        with self._lock:
            row = self.db.execute("SELECT state, ambiguous FROM recipients WHERE id=?",
                                  (rid,)).fetchone()
        if row is None:
            raise StateError(f"unknown recipient {rid}")
        return row[0], bool(row[1])

    def start_attempts(self, ids: Iterable[int], *, pool: str, source_ip: str) -> None:
        """Mark recipients ``in_flight`` and open an attempt row each (one transaction).
        Raises ``StateError`` (nothing written) for an unknown id or an illegal move."""
        ids = list(ids)
        now = self.clock()
        with self.tx() as db:
            rows = self._rows(db, ids, "r.state, r.attempts")
            moves: list[tuple[float, int]] = []
            opened: list[tuple[int, int, float, str, str]] = []
            for rid in ids:
                row = rows.get(rid)
                if row is None:
                    raise StateError(f"unknown recipient {rid}")
                check_transition(row[0], "in_flight")
                self._delta += 1 - (row[0] in ACTIVE_STATES)
                rows[rid] = ("in_flight", row[1] + 1)
                moves.append((now, rid))
                opened.append((rid, row[1] + 1, now, pool, source_ip))
            db.executemany("UPDATE recipients SET state='in_flight', next_at=NULL, updated=?,"
                           " attempts=attempts+1 WHERE id=?", moves)
            db.executemany("INSERT INTO attempts (recipient_id, n, started, pool, source_ip)"
                           " VALUES (?,?,?,?,?)", opened)

    @staticmethod
    def _rows(db: sqlite3.Connection, ids: list[int], columns: str
              ) -> dict[int, tuple[Any, ...]]:
        """``columns`` (of ``recipients r JOIN messages m``) for each id, in few queries."""
        out: dict[int, tuple[Any, ...]] = {}
        for lo in range(0, len(ids), _CHUNK):
            chunk = ids[lo:lo + _CHUNK]
            for row in db.execute(
                    f"SELECT r.id, {columns} FROM recipients r JOIN messages m ON "
                    f"m.id=r.message_id WHERE r.id IN ({','.join('?' * len(chunk))})", chunk):
                out[row[0]] = row[1:]
        return out

    def data_started(self, rids: Iterable[int], mx_host: str) -> None:
        """Record that DATA is about to complete for these recipients' open attempts: after a
        crash they are ambiguous, never silently resent."""
        with self.tx() as db:
            db.executemany(_MARK, [(mx_host, r) for r in rids])

    def finish(self, rid: int, new_state: str, *, event: str | None, code: int | None = None,
               response: str | None = None, next_at: float | None = None,
               ambiguous: bool = False, **fields: Any) -> None:
        """Close the open attempt, move the recipient, emit its event: one transaction."""
        now = self.clock()
        with self.tx() as db:
            db.execute("UPDATE attempts SET code=?, response=?, finished=? WHERE "
                       "recipient_id=? AND finished IS NULL", (code, response, now, rid))
            self._move(db, rid, new_state, now, next_at=next_at, ambiguous=ambiguous)
            if event is not None:
                self._emit_for(db, rid, event, now, smtp_code=code, response=response,
                               state=new_state, **fields)

    def finish_many(self, items: list[tuple[int, str, str | None, dict[str, Any]]], *,
                    data_started: Iterable[int] = (), mx_host: str | None = None) -> None:
        """``finish`` each (rid, new_state, event, fields) in ONE transaction (the runner
        batches the outcomes of a dispatch: one commit instead of one per recipient). The
        same rows, checks and events as ``finish`` one by one, in order; an illegal move
        raises ``StateError`` and writes nothing. ``data_started``/``mx_host``: what
        ``data_started`` writes, in the same transaction after the outcomes."""
        marks = [(mx_host, r) for r in data_started]
        if not items and not marks:
            return
        now = self.clock()
        with self.tx() as db:
            rows = self._rows(db, [it[0] for it in items], _EVENT_COLUMNS)
            closes: list[tuple[Any, Any, float, int]] = []
            moves: list[tuple[str, Any, float, int, int]] = []
            events: list[tuple[str | None, str]] = []
            for rid, new_state, event, fields in items:
                row = rows.get(rid)
                if row is None:
                    raise StateError(f"unknown recipient {rid}")
                old = row[0]
                check_transition(old, new_state)
                self._delta += (new_state in ACTIVE_STATES) - (old in ACTIVE_STATES)
                rows[rid] = (new_state, *row[1:])
                fields = dict(fields)
                code, response = fields.pop("code", None), fields.pop("response", None)
                next_at = fields.pop("next_at", None)
                ambiguous = int(bool(fields.pop("ambiguous", False)))
                closes.append((code, response, now, rid))
                moves.append((new_state, next_at, now, ambiguous, rid))
                if event is not None:
                    tenant, public_id, rcpt, sdom, lane, campaign, attempts, created = row[1:]
                    events.append(self._event_row(
                        tenant, event=event, ts=now, message_id=public_id, recipient=rcpt,
                        sending_domain=sdom, lane=lane, campaign=campaign, attempt=attempts,
                        enqueued_ts=created, smtp_code=code, response=response,
                        state=new_state, **{k: v for k, v in fields.items() if v is not None}))
            db.executemany("UPDATE attempts SET code=?, response=?, finished=? WHERE "
                           "recipient_id=? AND finished IS NULL", closes)
            db.executemany("UPDATE recipients SET state=?, next_at=?, updated=?, ambiguous=max("
                           "ambiguous, ?) WHERE id=?", moves)
            db.executemany("INSERT INTO outbox (tenant, event) VALUES (?, ?)", events)
            if marks:
                db.executemany(_MARK, marks)

    def _move(self, db: sqlite3.Connection, rid: int, new: str, now: float,
              next_at: float | None = None, ambiguous: bool = False) -> None:
        row = db.execute("SELECT state FROM recipients WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise StateError(f"unknown recipient {rid}")
        check_transition(row[0], new)
        self._delta += (new in ACTIVE_STATES) - (row[0] in ACTIVE_STATES)
        db.execute("UPDATE recipients SET state=?, next_at=?, updated=?, ambiguous=max("
                   "ambiguous, ?) WHERE id=?", (new, next_at, now, int(ambiguous), rid))

    def _emit_for(self, db: sqlite3.Connection, rid: int, event: str, now: float,
                  **fields: Any) -> None:
        row = db.execute(
            "SELECT m.tenant, m.public_id, r.rcpt, m.sending_domain, m.lane, m.campaign,"
            " r.attempts, m.created FROM recipients r JOIN messages m ON m.id=r.message_id"
            " WHERE r.id=?", (rid,)).fetchone()
        tenant, public_id, rcpt, sdom, lane, campaign, attempts, created = row
        self._emit(db, tenant, event=event, ts=now, message_id=public_id, recipient=rcpt,
                   sending_domain=sdom, lane=lane, campaign=campaign, attempt=attempts,
                   enqueued_ts=created, **{k: v for k, v in fields.items() if v is not None})

    def move(self, rid: int, new_state: str, *, event: str | None = None,
             next_at: float | None = None, **fields: Any) -> None:
        """Move a recipient (checked) and emit its event, in one transaction."""
        now = self.clock()
        with self.tx() as db:
            self._move(db, rid, new_state, now, next_at=next_at)
            if event is not None:
                self._emit_for(db, rid, event, now, state=new_state, **fields)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Crash recovery: scheduled/deferred/in-flight -> queued, except in-flight ones whose
        DATA was under way, which become ambiguous dead letters. Returns counts."""
        now = self.clock()
        counts = {"requeued": 0, "ambiguous": 0}
        with self.tx() as db:
            rows = db.execute("SELECT r.id, r.state, a.data_started FROM recipients r LEFT JOIN "
                              "attempts a ON a.recipient_id=r.id AND a.finished IS NULL WHERE "
                              "r.state IN ('scheduled','deferred','in_flight')").fetchall()
            for rid, state, data_started in rows:
                if state == "in_flight" and data_started:
                    db.execute("UPDATE attempts SET finished=?, response=? WHERE recipient_id=?"
                               " AND finished IS NULL", (now, "no reply: engine stopped", rid))
                    self._move(db, rid, "dead_lettered", now, ambiguous=True)
                    self._emit_for(db, rid, "ambiguous", now, state="dead_lettered",
                                   reason="DATA completed without a reply before a crash: "
                                   "possible duplicate, not resent")
                    counts["ambiguous"] += 1
                    continue
                if state == "in_flight":
                    db.execute("UPDATE attempts SET finished=?, response=? WHERE recipient_id=?"
                               " AND finished IS NULL", (now, "interrupted before DATA", rid))
                next_at = None
                if state == "deferred":
                    next_at = db.execute("SELECT next_at FROM recipients WHERE id=?",
                                         (rid,)).fetchone()[0]
                self._move(db, rid, "queued", now, next_at=next_at)
                counts["requeued"] += 1
        return counts

    # -- what the engine's other parts keep in the spool --------------------------------------
    # Dead-letter replays (``engine.spool.dlq``), received reports (``engine.inbound``),
    # webhook cursors (``engine.webhooks``) and serve's status: the same named methods on
    # ``PgSpool``, so those callers never write SQL of either backend.

    def prepare_side_tables(self) -> None:
        """Create the ``replays``, ``inbound_seen`` and ``webhook_cursors`` tables (and the
        outbox index by message id) if missing. Idempotent."""
        with self.tx() as db:
            for stmt in _SIDE_SCHEMA.strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)

    def location(self) -> str:
        """Where this spool is, for status lines (the file path)."""
        return str(self.path)

    def open_attempts(self) -> int:
        """Attempts started and not finished (what a clean stop must leave at 0)."""
        with self._lock:
            return int(self.db.execute("SELECT count(*) FROM attempts WHERE finished IS NULL"
                                       ).fetchone()[0])

    def failed_recipients(self, *, tenant: str | None = None, campaign: str | None = None,
                          state: str | None = None, message_id: str | None = None,
                          rid: int | None = None) -> list[tuple[Any, ...]]:
        """Recipients in ``dead_lettered`` / ``expired`` / ``bounced`` matching the given
        columns, by id: (id, public_id, tenant, campaign, lane, rcpt, state, ambiguous,
        attempts, updated)."""
        q = ("SELECT r.id, m.public_id, m.tenant, m.campaign, m.lane, r.rcpt, r.state,"
             " r.ambiguous, r.attempts, r.updated FROM recipients r JOIN messages m ON"
             " m.id=r.message_id WHERE r.state IN ('dead_lettered','expired','bounced')")
        args: list[Any] = []
        for col, val in (("m.tenant", tenant), ("m.campaign", campaign), ("r.state", state),
                         ("m.public_id", message_id), ("r.id", rid)):
            if val is not None:
                q += f" AND {col}=?"
                args.append(val)
        with self._lock:
            return [tuple(r) for r in self.db.execute(q + " ORDER BY r.id", args)]

    def recipient_events(self, public_id: str, rcpt: str) -> list[tuple[Any, ...]]:
        """(event, reason, provider, pool, response) of one recipient's outbox events,
        newest first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT json_extract(event,'$.event'), json_extract(event,'$.reason'),"
                " json_extract(event,'$.provider'), json_extract(event,'$.pool'),"
                " json_extract(event,'$.response') FROM outbox WHERE"
                " json_extract(event,'$.message_id')=? AND"
                " json_extract(event,'$.recipient')=? ORDER BY seq DESC", (public_id, rcpt))]

    def last_pool(self, rid: int) -> str | None:
        """The pool of recipient ``rid``'s latest attempt that had one."""
        with self._lock:
            row = self.db.execute("SELECT pool FROM attempts WHERE recipient_id=? AND pool IS"
                                  " NOT NULL ORDER BY id DESC LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None

    def route_of(self, rid: int) -> tuple[str | None, str | None]:
        """(pool, provider) that carried recipient ``rid`` last, from its attempts and its
        newest event naming a provider. Raises ``StateError`` if ``rid`` is unknown."""
        with self._lock:
            row = self.db.execute("SELECT m.public_id, r.rcpt FROM recipients r JOIN messages"
                                  " m ON m.id=r.message_id WHERE r.id=?", (rid,)).fetchone()
            if row is None:
                raise StateError(f"unknown recipient {rid}")
            prov = self.db.execute(
                "SELECT json_extract(event, '$.provider') FROM outbox WHERE "
                "json_extract(event, '$.message_id')=? AND json_extract(event, '$.recipient')=?"
                " AND json_extract(event, '$.provider') IS NOT NULL ORDER BY seq DESC LIMIT 1",
                (row[0], row[1])).fetchone()
        return self.last_pool(rid), (prov[0] if prov else None)

    def attempt_history(self, rid: int) -> list[tuple[Any, ...]]:
        """(n, started, finished, pool, source_ip, mx_host, data_started 0/1, code,
        response) of each attempt of ``rid``, oldest first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT n, started, finished, pool, source_ip, mx_host, data_started, code,"
                " response FROM attempts WHERE recipient_id=? ORDER BY id", (rid,))]

    def body_digest(self, rid: int) -> tuple[int, str] | None:
        """(size in bytes, sha256 hex) of recipient ``rid``'s body, or None if unknown."""
        with self._lock:
            row = self.db.execute(
                "SELECT length(b.data), b.hash FROM recipients r JOIN messages m ON "
                "m.id=r.message_id JOIN bodies b ON b.hash=m.body_hash WHERE r.id=?",
                (rid,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def replays_of(self, rid: int) -> list[tuple[Any, ...]]:
        """(key, ts, pool, not_before) of each replay of ``rid``, oldest first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT key, ts, pool, not_before FROM replays WHERE recipient_id=? ORDER BY ts",
                (rid,))]

    def requested_pool(self, rid: int) -> str | None:
        """The pool the latest replay of ``rid`` asked for (None: no constraint)."""
        with self._lock:
            row = self.db.execute("SELECT pool FROM replays WHERE recipient_id=? ORDER BY ts"
                                  " DESC LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None

    def replay_failed(self, key: str, items: Iterable[tuple[int, str]], *,
                      pool: str | None = None, not_before: float | None = None,
                      reason: str = "") -> tuple[list[int], list[int]]:
        """In ONE transaction, move each (rid, state it was read in) ``-> replayed ->
        queued`` with its ``replayed`` event and a ``replays`` row under ``key``. Skips a
        recipient replayed under ``key`` before (returned second) or no longer in that
        state (left alone). Returns (replayed ids, already replayed ids)."""
        done: list[int] = []
        already: list[int] = []
        now = self.clock()
        with self.tx() as db:
            for rid, seen in items:
                if db.execute("SELECT 1 FROM replays WHERE key=? AND recipient_id=?",
                              (key, rid)).fetchone():
                    already.append(rid)
                    continue
                row = db.execute("SELECT state FROM recipients WHERE id=?", (rid,)).fetchone()
                if row is None or row[0] != seen:  # changed since it was read
                    continue
                self._move(db, rid, "replayed", now)
                self._emit_for(db, rid, "replayed", now, state="replayed", reason=reason,
                               pool=pool)
                self._move(db, rid, "queued", now, next_at=not_before)
                db.execute("INSERT INTO replays VALUES (?,?,?,?,?)",
                           (key, rid, now, pool, not_before))
                done.append(rid)
        return done, already

    def recipients_of(self, public_id: str) -> list[tuple[int, str]]:
        """(recipient id, address) of each recipient of message ``public_id``."""
        with self._lock:
            return [(int(r), str(a)) for r, a in self.db.execute(
                "SELECT r.id, r.rcpt FROM recipients r JOIN messages m ON m.id=r.message_id "
                "WHERE m.public_id=? ORDER BY r.id", (public_id,))]

    def report_seen(self, digest: str) -> bool:
        """True when a received report with this digest was recorded before."""
        with self._lock:
            return self.db.execute("SELECT 1 FROM inbound_seen WHERE digest=?",
                                   (digest,)).fetchone() is not None

    def mark_report(self, digest: str, outcome: str) -> None:
        """Record a received report that changed nothing (a second one is a duplicate)."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO inbound_seen VALUES (?,?,?)",
                       (digest, self.clock(), outcome))

    def record_report(self, digest: str, rid: int, kind: str, *, reason: str,
                      suppress_as: str, owner: str, fields: dict[str, Any]) -> bool:
        """ONE transaction: record report ``digest`` as ``kind``, write recipient ``rid``'s
        ``kind`` event (``reason`` and ``fields``), and put its address on ``owner``'s
        suppression list (``suppress_as``: the suppression reason) with a ``suppressed``
        event if it was new. False (nothing written) if ``digest`` was recorded before."""
        now = self.clock()
        with self.tx() as db:
            if db.execute("INSERT OR IGNORE INTO inbound_seen VALUES (?,?,?)",
                          (digest, now, kind)).rowcount == 0:
                return False
            self._emit_for(db, rid, kind, now, reason=reason, **fields)
            tenant, rcpt = db.execute("SELECT m.tenant, r.rcpt FROM recipients r JOIN "
                                      "messages m ON m.id=r.message_id WHERE r.id=?",
                                      (rid,)).fetchone()
            cur = db.execute("INSERT OR IGNORE INTO suppressions VALUES (?,?,?,?)",
                             (owner, rcpt.strip().lower(), suppress_as, now))
            if cur.rowcount:
                self._emit(db, tenant, event="suppressed", recipient=rcpt, reason=suppress_as,
                           ts=now)
        return True

    def webhook_open(self, endpoints: Iterable[tuple[str, str]]) -> None:
        """Make a cursor row (at the start) for each (endpoint key, tenant) lacking one."""
        with self.tx() as db:
            db.executemany("INSERT OR IGNORE INTO webhook_cursors (endpoint, tenant) VALUES"
                           " (?, ?)", list(endpoints))

    def webhook_cursor(self, key: str) -> tuple[int, int, int, float, str | None]:
        """(outbox_seq, stream_seq, failures, next_at, last_error) of endpoint ``key``.
        Raises ``StateError`` for an endpoint without a cursor."""
        with self._lock:
            row = self.db.execute("SELECT outbox_seq, stream_seq, failures, next_at, last_error"
                                  " FROM webhook_cursors WHERE endpoint=?", (key,)).fetchone()
        if row is None:
            raise StateError(f"no webhook cursor for {key!r}")
        return int(row[0]), int(row[1]), int(row[2]), float(row[3]), row[4]

    def webhook_claim(self, key: str) -> bool:
        """True when this engine may deliver endpoint ``key`` now. One process owns a
        SQLite spool, so always True here (``PgSpool``: one node at a time, leased)."""
        return True

    def webhook_release(self) -> None:
        """Give up this engine's webhook claims (nothing to do on SQLite)."""

    def webhook_advance(self, key: str, *, from_seq: int, to_seq: int, to_stream: int) -> int:
        """After a 2xx: move endpoint ``key``'s cursor from outbox seq ``from_seq`` to
        ``to_seq`` / ``to_stream`` and clear its failures, in one transaction. Returns the
        events it advanced by (0, nothing written, if the cursor is no longer at
        ``from_seq``)."""
        now = self.clock()
        with self.tx() as db:
            row = db.execute("SELECT outbox_seq, stream_seq FROM webhook_cursors WHERE"
                             " endpoint=?", (key,)).fetchone()
            if row is None or int(row[0]) != from_seq:
                return 0
            db.execute("UPDATE webhook_cursors SET outbox_seq=?, stream_seq=?, failures=0,"
                       " next_at=0, last_error=NULL, updated=? WHERE endpoint=?",
                       (to_seq, to_stream, now, key))
        return to_stream - int(row[1])

    def webhook_fail(self, key: str, error: str, delay: Callable[[int], float]) -> int:
        """Count one more failure of endpoint ``key`` and set its next attempt to now +
        ``delay(failures)``; returns the failure count."""
        now = self.clock()
        with self.tx() as db:
            row = db.execute("SELECT failures FROM webhook_cursors WHERE endpoint=?",
                             (key,)).fetchone()
            fails = (int(row[0]) if row else 0) + 1
            db.execute("UPDATE webhook_cursors SET failures=?, next_at=?, last_error=?, "
                       "updated=? WHERE endpoint=?", (fails, now + delay(fails), error, now, key))
        return fails


_SIDE_SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
  key TEXT NOT NULL, recipient_id INTEGER NOT NULL, ts REAL NOT NULL, pool TEXT,
  not_before REAL, PRIMARY KEY (key, recipient_id));
CREATE TABLE IF NOT EXISTS inbound_seen (digest TEXT PRIMARY KEY, ts REAL NOT NULL,
  outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_message ON outbox(json_extract(event, '$.message_id'));
CREATE TABLE IF NOT EXISTS webhook_cursors (
  endpoint TEXT PRIMARY KEY, tenant TEXT NOT NULL, outbox_seq INTEGER NOT NULL DEFAULT 0,
  stream_seq INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
  next_at REAL NOT NULL DEFAULT 0, last_error TEXT, updated REAL)
"""
