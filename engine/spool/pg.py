"""The scale-out spool: the same contract as ``engine.spool.store.Spool`` on PostgreSQL
(psycopg 3), for several engine nodes sharing one queue.

Owns every write to its schema (tables created on first use; the schema comes from the URL's
``?schema=NAME`` or the ``schema`` option, default ``public``). Same state table
(``engine.spool.states``), same events outbox written in the transaction of each state
change, idempotency keys unique per tenant, bodies stored once by hash. It does not decide
policy and does not talk SMTP or HTTP.

Rules for several nodes:
- Each ``PgSpool`` is a node (``node`` id; default host-pid-random) with a row in ``nodes``
  whose ``lease_until`` (database clock, so nodes' clocks may differ) it renews every
  ``lease / 3`` seconds from ``take_pending`` (or ``heartbeat()``): a node that stops
  stepping stops renewing.
- ``take_pending`` claims queued rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` and marks
  them ``scheduled`` with ``node`` = this node; a node holds at most ``max_held`` recipients
  in ``scheduled`` / ``in_flight`` / ``deferred`` so the queue is shared, not swallowed.
- Leaving a held state (``in_flight -> delivered``, ...) is allowed only to the holding node
  (a fence: a node whose lease was taken over gets ``StateError``, never a double send).
- A node whose lease expired is taken over by the next node's ``recover`` (run on open and,
  every ``lease / 3``, from ``take_pending``): in one transaction its recipients go back to
  ``queued`` -- except in-flight ones whose DATA had started, which become ambiguous dead
  letters exactly as SQLite crash recovery does -- and its ``nodes`` row is deleted; its
  heartbeat then finds no row and it stops (``StateError``: lease lost).
- ``close()`` releases this node's recipients the same way (clean shutdown: nothing waits
  for a lease to expire); ``close(release=False)`` leaves them as a crash would.

Outbox order (why ``seq`` is not an identity): an identity/BIGSERIAL is drawn at INSERT, so
a transaction can commit seq 7 while one holding seq 5 is still open; a reader at
``seq > 6`` would then skip 5 for ever. Writers here leave ``seq`` NULL and record their
transaction id (``txid xid8 = pg_current_xact_id()``). Readers (``events_after`` /
``publish``) first stamp, under a transaction-level advisory lock, every unstamped row whose
``txid`` is below ``pg_snapshot_xmin(pg_current_snapshot())`` -- the rows of transactions that
can no longer commit anything new -- in (txid, id) order with ``max(seq)+1, ...``. Stamps
are serialized and each stamp's rows are final, so a reader never sees a later row with a
lower seq: ``seq`` is monotonic and even gap-free. Chosen over an advisory lock taken by
every writer until its commit because that would serialize all commits of all nodes (and
their WAL flushes); stamping costs only readers, who poll anyway. (txid order keeps a
recipient's events in causal order: a transaction that starts after another committed gets
a higher xid.) A transaction left open anywhere in the cluster holds the horizon back:
events written after it wait until it ends.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.errors import ConfigError, InputError, StateError
from engine.events import Event
from engine.spool.states import check_transition
from engine.spool.store import (
    _EVENT_FIELDS,
    ACTIVE_STATES,
    Accepted,
    IdempotencyConflict,
    Job,
    Pending,
    _dumps,
)

HELD = ("scheduled", "in_flight", "deferred")  # states a node holds (in its scheduler)
_HELD_SQL = "('scheduled','in_flight','deferred')"
_STAMP_LOCK = 0x1B0C_5EA1  # advisory lock key of the outbox stamper
_SCHEMA_LOCK = 0x1B0C_5EA2  # advisory lock key of schema creation
_COPY_MIN = 16  # rows from which an insert goes through COPY
_STAMP_MAX = 100_000  # rows stamped per reader call
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NOW = "extract(epoch from clock_timestamp())"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS bodies (hash TEXT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, public_id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL, lane TEXT NOT NULL, campaign TEXT, idem_key TEXT NOT NULL,
  request_hash TEXT NOT NULL, sending_domain TEXT NOT NULL, mail_from TEXT NOT NULL,
  body_hash TEXT NOT NULL REFERENCES bodies(hash), created DOUBLE PRECISION NOT NULL,
  expires DOUBLE PRECISION, timezone TEXT, UNIQUE (tenant, idem_key));
ALTER TABLE messages ADD COLUMN IF NOT EXISTS timezone TEXT;
CREATE TABLE IF NOT EXISTS recipients (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id BIGINT NOT NULL REFERENCES messages(id), rcpt TEXT NOT NULL,
  domain TEXT NOT NULL, state TEXT NOT NULL, ambiguous BOOLEAN NOT NULL DEFAULT false,
  attempts INTEGER NOT NULL DEFAULT 0, next_at DOUBLE PRECISION,
  updated DOUBLE PRECISION NOT NULL, node TEXT);
CREATE INDEX IF NOT EXISTS recipients_queued ON recipients(id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS recipients_held ON recipients(node) WHERE state IN {_HELD_SQL};
CREATE INDEX IF NOT EXISTS recipients_message ON recipients(message_id);
CREATE INDEX IF NOT EXISTS recipients_state ON recipients(state);
CREATE TABLE IF NOT EXISTS attempts (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  recipient_id BIGINT NOT NULL REFERENCES recipients(id), n INTEGER NOT NULL,
  started DOUBLE PRECISION NOT NULL, pool TEXT, source_ip TEXT, mx_host TEXT,
  data_started BOOLEAN NOT NULL DEFAULT false, code INTEGER, response TEXT,
  finished DOUBLE PRECISION, node TEXT);
CREATE INDEX IF NOT EXISTS attempts_open ON attempts(recipient_id) WHERE finished IS NULL;
CREATE TABLE IF NOT EXISTS suppressions (
  tenant TEXT NOT NULL, address TEXT NOT NULL, reason TEXT, ts DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (tenant, address));
CREATE INDEX IF NOT EXISTS suppressions_address ON suppressions(address);
CREATE TABLE IF NOT EXISTS outbox (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(), seq BIGINT, tenant TEXT,
  event JSONB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_seq ON outbox(seq);
CREATE INDEX IF NOT EXISTS outbox_tenant_seq ON outbox(tenant, seq);
CREATE INDEX IF NOT EXISTS outbox_unstamped ON outbox(txid, id) WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS nodes (
  node TEXT PRIMARY KEY, lease_until DOUBLE PRECISION NOT NULL,
  started DOUBLE PRECISION NOT NULL, run_id TEXT);
"""

_JOB_SQL = ("SELECT r.id, m.public_id, m.tenant, m.lane, m.campaign, m.sending_domain,"
            " m.mail_from, r.rcpt, r.domain, r.attempts, b.data, m.created"
            " FROM recipients r JOIN messages m ON m.id=r.message_id"
            " JOIN bodies b ON b.hash=m.body_hash WHERE r.id = ANY(%s)")
# what ``finish_many`` / ``_move`` read per recipient: its state, then what its event carries
_EVENT_COLUMNS = ("r.state, m.tenant, m.public_id, r.rcpt, m.sending_domain, m.lane, "
                  "m.campaign, r.attempts, m.created")
_CLOSE = ("UPDATE attempts a SET code=u.code, response=u.response, finished=%s FROM"
          " unnest(%s::bigint[], %s::int[], %s::text[]) AS u(rid, code, response)"
          " WHERE a.recipient_id=u.rid AND a.finished IS NULL")
_MOVE = ("UPDATE recipients r SET state=u.state, next_at=u.next_at, updated=%s,"
         " ambiguous = r.ambiguous OR u.amb, node = u.node FROM unnest(%s::bigint[],"
         " %s::text[], %s::float8[], %s::bool[], %s::text[]) AS u(id, state, next_at, amb, node)"
         " WHERE r.id=u.id")
_MARK = ("UPDATE attempts SET data_started=true, mx_host=%s WHERE finished IS NULL AND"
         " recipient_id = ANY(%s)")


def split_url(url: str, schema: str | None = None) -> tuple[str, str]:
    """(libpq URL without our ``schema`` parameter, schema name). Raises ``ConfigError`` for
    a schema name that is not a plain identifier."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    found = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    name = schema or (found[-1] if found else "public")
    if not _IDENT.fullmatch(name):
        raise ConfigError(redact(url), "schema", f"{name!r} is not a plain SQL identifier")
    return urlunsplit(parts._replace(query=urlencode(rest))), name.lower()


def redact(url: str) -> str:
    """``url`` without its password (for logs and status lines)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class _Request:
    """One ``accept`` request, checked for its keywords and hashed."""

    tenant: str
    idem_key: str
    rhash: str
    bhash: str
    body: bytes
    rcpts: list[str]
    lane: str
    campaign: str | None
    sending_domain: str
    mail_from: str
    expires: float | None
    max_active: int | None
    timezone: str | None = None

    @classmethod
    def of(cls, *, tenant: str, idem_key: str, request: bytes, lane: str,
           campaign: str | None, sending_domain: str, mail_from: str,
           recipients: Iterable[str], body: bytes, expires: float | None = None,
           max_active: int | None = None, timezone: str | None = None) -> _Request:
        return cls(tenant, idem_key, hashlib.sha256(request).hexdigest(),
                   hashlib.sha256(body).hexdigest(), body,
                   list(dict.fromkeys(r.strip() for r in recipients)), lane, campaign,
                   sending_domain, mail_from, expires, max_active, timezone)


class PgSpool:
    """One node's handle on a PostgreSQL spool. Thread-safe through one lock (one
    connection); several processes / hosts may open the same spool, each as its own node."""

    def __init__(self, url: str, *, schema: str | None = None, run_id: str = "",
                 source: str = "live", clock: Callable[[], float] = time.time,
                 recover: bool = True, node: str | None = None, lease: float = 30.0,
                 max_held: int = 5_000, connect_timeout: float = 10.0) -> None:
        """``lease``: seconds a node's claims outlive its last heartbeat. ``node``: a stable
        id (a restart under the same id takes its old claims back at once; two live
        processes must never share one). Raises ``ConfigError`` if the server cannot be
        reached or the schema is not an identifier."""
        import psycopg

        self.url, self.schema = split_url(url, schema)
        self.run_id = run_id
        self.source = source
        self.clock = clock
        self.node = node or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease = float(lease)
        self.max_held = int(max_held)
        self.path = None  # no file: ``url`` says where the spool is
        self._lock = threading.RLock()
        try:
            self.db = psycopg.connect(self.url, autocommit=True,
                                      connect_timeout=max(1, int(connect_timeout)))
        except psycopg.Error as exc:
            why = " ".join(str(exc).split())  # one line, whatever libpq says
            raise ConfigError(redact(url), "spool", f"cannot connect: {why}") from exc
        self._create_schema()
        self._register()
        self._beat = self._scan = time.monotonic()
        self._active_at = -1e9
        self._active_base = 0
        self._delta = 0  # live-recipient change of the open transaction
        self._local = 0  # ... of this node's committed writes since ``_active_base``
        self.recovered: dict[str, int] = {}
        self.taken_over: dict[str, int] = {"requeued": 0, "ambiguous": 0}
        if recover:
            self.recovered = self.recover(_include_self=True)

    # -- connection, schema, node ----------------------------------------------------------
    def _create_schema(self) -> None:
        with self._lock, self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self.db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            self.db.execute(f'SET search_path TO "{self.schema}"')
            self.db.execute(SCHEMA)
        # SET inside a committed transaction stays for the session
        self.db.execute(f'SET search_path TO "{self.schema}"')

    def _register(self) -> None:
        with self._lock, self.db.transaction():
            self.db.execute(
                f"INSERT INTO nodes VALUES (%s, {_NOW} + %s, {_NOW}, %s) ON CONFLICT (node)"
                f" DO UPDATE SET lease_until = EXCLUDED.lease_until, started = EXCLUDED.started,"
                " run_id = EXCLUDED.run_id", (self.node, self.lease, self.run_id))

    def close(self, *, release: bool = True) -> None:
        """Close the connection. ``release``: first hand this node's recipients back
        (``recover`` rules: queued, or ambiguous if DATA had started) and drop its lease."""
        with self._lock:
            if self.db.closed:
                return
            if release:
                try:
                    self._recover(nodes=[self.node], own=True)
                    self.db.execute("DELETE FROM nodes WHERE node=%s", (self.node,))
                finally:
                    self.db.close()
            else:
                self.db.close()

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """One transaction on this node's connection (a ``psycopg.Connection``: PostgreSQL
        SQL, ``%s`` placeholders). Commits on exit, rolls back on error."""
        with self._lock:
            self._delta = 0
            try:
                with self.db.transaction():
                    yield self.db
            except BaseException:
                self._delta = 0
                raise
            self._local += self._delta
            self._delta = 0

    def heartbeat(self) -> None:
        """Renew this node's lease. Raises ``StateError`` if it was taken over (the node
        must stop: its recipients belong to another node now)."""
        with self._lock:
            row = self.db.execute(f"UPDATE nodes SET lease_until = {_NOW} + %s WHERE node=%s"
                                  " RETURNING 1", (self.lease, self.node)).fetchone()
            self._beat = time.monotonic()
        if row is None:
            raise StateError(f"spool node {self.node} lost its lease: another node took over "
                             "its recipients; restart it")

    def _maintain(self) -> None:
        """Every ``lease / 3``: heartbeat, then take over nodes whose lease expired."""
        if time.monotonic() - self._beat >= self.lease / 3:
            self.heartbeat()
        if time.monotonic() - self._scan < self.lease / 3:
            return
        self._scan = time.monotonic()
        with self._lock:
            dead = self.db.execute(f"SELECT 1 FROM nodes WHERE lease_until < {_NOW} LIMIT 1"
                                   ).fetchone()
        if dead is not None:
            got = self.recover()
            for k, v in got.items():
                self.taken_over[k] = self.taken_over.get(k, 0) + v

    def nodes(self) -> list[dict[str, Any]]:
        """The registered nodes: id, seconds their lease has left (negative: expired), and
        how many recipients each holds."""
        with self._lock:
            rows = self.db.execute(
                f"SELECT n.node, n.lease_until - {_NOW}, n.run_id, (SELECT count(*) FROM"
                f" recipients r WHERE r.node = n.node AND r.state IN {_HELD_SQL})"
                " FROM nodes n ORDER BY n.node").fetchall()
        return [{"node": n, "lease_left": float(left), "run_id": rid, "held": int(held)}
                for n, left, rid, held in rows]

    # -- events -----------------------------------------------------------------------------
    def _event_row(self, tenant: str | None, **fields: Any) -> tuple[str | None, str]:
        """The outbox row of one event (checked on construction by ``Event``)."""
        fields.setdefault("ts", self.clock())
        ev = Event(source=self.source, run_id=self.run_id, tenant=tenant, **fields)
        data = {k: v for k in _EVENT_FIELDS if (v := getattr(ev, k)) is not None}
        return tenant, _dumps(data)

    def _insert_events(self, db: Any, rows: list[tuple[str | None, str]]) -> None:
        self._copy(db, "outbox (tenant, event)", rows)

    def _emit(self, db: Any, tenant: str | None, **fields: Any) -> None:
        self._insert_events(db, [self._event_row(tenant, **fields)])

    def emit(self, *, tenant: str | None = None, **fields: Any) -> None:
        """Write one event that changes no recipient (breaker, automation, ...)."""
        with self.tx() as db:
            self._emit(db, tenant, **fields)

    def publish(self) -> int:
        """Give outbox rows of finished transactions their ``seq`` (see the module doc);
        returns how many were stamped. ``events_after`` calls it first."""
        with self.tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_STAMP_LOCK,))
            ids = [r[0] for r in db.execute(
                "SELECT id FROM outbox WHERE seq IS NULL AND txid <"
                " pg_snapshot_xmin(pg_current_snapshot()) ORDER BY txid, id LIMIT %s",
                (_STAMP_MAX,))]
            if not ids:
                return 0
            top = db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
            db.execute("UPDATE outbox o SET seq = u.seq FROM unnest(%s::bigint[],"
                       " %s::bigint[]) AS u(id, seq) WHERE o.id = u.id",
                       (ids, list(range(top + 1, top + 1 + len(ids)))))
            return len(ids)

    def events_after(self, after: int, *, tenant: str | None = None,
                     limit: int = 1000) -> list[Event]:
        """Outbox events with ``seq > after`` (of one tenant when given), oldest first."""
        self.publish()
        q = "SELECT seq, event FROM outbox WHERE seq > %s"
        args: list[Any] = [after]
        if tenant is not None:
            q += " AND tenant = %s"
            args.append(tenant)
        q += " ORDER BY seq LIMIT %s"
        args.append(limit)
        with self._lock:
            rows = self.db.execute(q, args).fetchall()
        return [Event(seq=seq, **data) for seq, data in rows]

    # -- intake -----------------------------------------------------------------------------
    def accept(self, *, tenant: str, idem_key: str, request: bytes, lane: str,
               campaign: str | None, sending_domain: str, mail_from: str,
               recipients: Iterable[str], body: bytes, expires: float | None = None,
               max_active: int | None = None, timezone: str | None = None) -> Accepted:
        """Store one message and its recipients durably (committed before returning).

        Same tenant + ``idem_key`` + same ``request`` bytes returns the first id (also when
        another node accepted it); another request under that key raises
        ``IdempotencyConflict``; more than ``max_active`` live recipients raises
        ``InputError`` (the caller answers 429). ``timezone``: the recipients' IANA zone.
        """
        got = self.accept_many([dict(
            tenant=tenant, idem_key=idem_key, request=request, lane=lane, campaign=campaign,
            sending_domain=sending_domain, mail_from=mail_from, recipients=recipients,
            body=body, expires=expires, max_active=max_active, timezone=timezone)])[0]
        if isinstance(got, Exception):
            raise got
        return got

    def accept_many(self, requests: list[dict[str, Any]]
                    ) -> list[Accepted | InputError | IdempotencyConflict]:
        """Group commit: ``accept`` each request (the keyword arguments of ``accept``) in ONE
        transaction of a few set-based statements. Each request gets its own result: an
        ``Accepted``, or the ``InputError`` / ``IdempotencyConflict`` it raised (nothing of it
        written). Requests are taken in order (a key repeated in the group answers as a
        replay of its first use). Nothing is visible or durable before this returns. A
        deadlock with another node accepting the same keys is retried (3 tries)."""
        import psycopg

        reqs = [_Request.of(**kw) for kw in requests]  # TypeError: bad keywords
        for attempt in range(3):
            now = self.clock()
            try:
                with self.tx() as db:
                    return self._accept_group(db, now, reqs)
            except (psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _accept_group(self, db: Any, now: float, reqs: list[_Request]
                      ) -> list[Accepted | InputError | IdempotencyConflict]:
        out: list[Accepted | InputError | IdempotencyConflict | None] = [None] * len(reqs)
        keys = sorted({(r.tenant, r.idem_key) for r in reqs})
        seen: dict[tuple[str, str], tuple[str, str]] = {
            (t, k): (pid, h) for t, k, pid, h in db.execute(
                "SELECT m.tenant, m.idem_key, m.public_id, m.request_hash FROM messages m JOIN"
                " unnest(%s::text[], %s::text[]) AS u(t, k) ON m.tenant=u.t AND m.idem_key=u.k",
                ([t for t, _ in keys], [k for _, k in keys]))} if keys else {}
        new: list[tuple[int, _Request, str]] = []
        for i, r in enumerate(reqs):
            if not r.rcpts:
                out[i] = InputError("a message needs at least one recipient")
                continue
            found = seen.get((r.tenant, r.idem_key))
            if found is not None:
                out[i] = (Accepted(found[0], False) if found[1] == r.rhash else
                          IdempotencyConflict(f"Idempotency-Key {r.idem_key!r} was used with"
                                              " another request"))
                continue
            if r.max_active is not None and \
                    self.active_count() + self._delta + len(r.rcpts) > r.max_active:
                out[i] = InputError("spool is full")
                continue
            public_id = "m_" + secrets.token_hex(12)
            seen[(r.tenant, r.idem_key)] = (public_id, r.rhash)
            new.append((i, r, public_id))
            self._delta += len(r.rcpts)
        if new:
            self._insert_new(db, now, new, out)
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]

    def _insert_new(self, db: Any, now: float, new: list[tuple[int, _Request, str]],
                    out: list[Any]) -> None:
        bodies = {r.bhash: r.body for _, r, _ in new}
        order = sorted(bodies)  # one lock order for every node: no deadlock on bodies
        db.execute("INSERT INTO bodies SELECT * FROM unnest(%s::text[], %s::bytea[])"
                   " ON CONFLICT DO NOTHING", (order, [bodies[h] for h in order]))
        cols = list(zip(*[(pid, r.tenant, r.lane, r.campaign, r.idem_key, r.rhash,
                           r.sending_domain, r.mail_from, r.bhash, now, r.expires, r.timezone)
                          for _, r, pid in new], strict=True))
        ids = {(t, k): mid for mid, t, k in db.execute(
            "INSERT INTO messages (public_id, tenant, lane, campaign, idem_key, request_hash,"
            " sending_domain, mail_from, body_hash, created, expires, timezone) SELECT u.p,"
            " u.t, u.l, u.c, u.k, u.h, u.s, u.f, u.b, u.n, u.e, u.z FROM unnest(%s::text[],"
            " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[]) WITH ORDINALITY"
            " AS u(p, t, l, c, k, h, s, f, b, n, e, z, o) ORDER BY u.o"
            " ON CONFLICT (tenant, idem_key) DO NOTHING RETURNING id, tenant, idem_key",
            [list(c) for c in cols])}
        rcpt_rows: list[tuple[Any, ...]] = []
        events: list[tuple[str | None, str]] = []
        lost: list[tuple[int, _Request]] = []
        for i, r, public_id in new:
            mid = ids.get((r.tenant, r.idem_key))
            if mid is None:  # another node committed this key meanwhile (ON CONFLICT waited)
                lost.append((i, r))
                self._delta -= len(r.rcpts)
                continue
            out[i] = Accepted(public_id, True)
            for rcpt in r.rcpts:
                rcpt_rows.append((mid, rcpt, rcpt.rsplit("@", 1)[-1].lower(), "queued", now))
                events.append(self._event_row(
                    r.tenant, event="enqueued", message_id=public_id, recipient=rcpt,
                    sending_domain=r.sending_domain, lane=r.lane, campaign=r.campaign,
                    state="queued", enqueued_ts=now, ts=now))
        self._copy(db, "recipients (message_id, rcpt, domain, state, updated)", rcpt_rows)
        self._insert_events(db, events)
        for i, r in lost:
            row = db.execute("SELECT public_id, request_hash FROM messages WHERE tenant=%s AND"
                             " idem_key=%s", (r.tenant, r.idem_key)).fetchone()
            if row is None:
                raise StateError(f"Idempotency-Key {r.idem_key!r}: conflicting row vanished")
            out[i] = (Accepted(row[0], False) if row[1] == r.rhash else IdempotencyConflict(
                f"Idempotency-Key {r.idem_key!r} was used with another request"))

    @staticmethod
    def _copy(db: Any, target: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` into ``target`` ("table (columns)"): one multi-row INSERT for a
        few rows, ``COPY ... FROM STDIN`` for more (several times faster per row, but a
        round trip dearer to start)."""
        if not rows:
            return
        if len(rows) < _COPY_MIN:
            one = "(" + ",".join(["%s"] * len(rows[0])) + ")"
            db.execute(f"INSERT INTO {target} VALUES " + ",".join([one] * len(rows)),
                       [v for row in rows for v in row])
            return
        with db.cursor() as cur, cur.copy(f"COPY {target} FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    def active(self) -> int:
        """Live recipients (queued, scheduled, in flight, deferred) of all nodes."""
        with self._lock:
            row = self.db.execute("SELECT count(*) FROM recipients WHERE state IN "
                                  "('queued','scheduled','in_flight','deferred')").fetchone()
        return int(row[0]) if row else 0

    def active_count(self) -> int:
        """Live recipients for the intake budget: the database count (re-read at most once a
        second) plus this node's own writes since. Other nodes' writes show within ~1 s."""
        if time.monotonic() - self._active_at > 1.0:
            with self._lock:
                base = self.active()
                self._active_base, self._local = base, 0
                self._active_at = time.monotonic()
        return self._active_base + self._local

    def message(self, public_id: str, tenant: str) -> dict[str, Any] | None:
        """A message and its recipients' states, or None (unknown or another tenant's)."""
        with self._lock:
            row = self.db.execute("SELECT id, lane, campaign, sending_domain, created FROM "
                                  "messages WHERE public_id=%s AND tenant=%s",
                                  (public_id, tenant)).fetchone()
            if row is None:
                return None
            rcpts = self.db.execute("SELECT rcpt, state, ambiguous, attempts FROM recipients"
                                    " WHERE message_id=%s ORDER BY id", (row[0],)).fetchall()
        return {"id": public_id, "lane": row[1], "campaign": row[2], "sending_domain": row[3],
                "created": row[4],
                "recipients": [{"address": r, "state": s, "ambiguous": bool(a), "attempts": n}
                               for r, s, a, n in rcpts]}

    # -- suppression ------------------------------------------------------------------------
    def suppress(self, tenant: str, address: str, reason: str) -> bool:
        """Add ``address`` to ``tenant``'s suppression list; True if it was new."""
        address = address.strip().lower()
        with self.tx() as db:
            cur = db.execute("INSERT INTO suppressions VALUES (%s,%s,%s,%s) ON CONFLICT DO"
                             " NOTHING", (tenant, address, reason, self.clock()))
            if cur.rowcount:
                self._emit(db, tenant, event="unsubscribe" if reason == "unsubscribe"
                           else "suppressed", recipient=address, reason=reason)
            return bool(cur.rowcount)

    def is_suppressed(self, tenant: str, address: str) -> bool:
        """True when ``address`` is on ``tenant``'s (or the global ``*``) suppression list."""
        with self._lock:
            row = self.db.execute("SELECT 1 FROM suppressions WHERE address=%s AND tenant IN"
                                  " (%s, '*')", (address.strip().lower(), tenant)).fetchone()
        return row is not None

    def suppressed_among(self, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (tenant, address) pairs of ``pairs`` that ``is_suppressed`` (one query)."""
        wanted = {(t, a.strip().lower()): (t, a) for t, a in pairs}
        if not wanted:
            return set()
        addrs = sorted({a for _, a in wanted})
        with self._lock:
            found = {(t, a) for t, a in self.db.execute(
                "SELECT tenant, address FROM suppressions WHERE address = ANY(%s)", (addrs,))}
        return {orig for (t, a), orig in wanted.items()
                if (t, a) in found or ("*", a) in found}

    # -- delivery side ----------------------------------------------------------------------
    def take_pending(self, limit: int = 10_000) -> list[Pending]:
        """Claim queued recipients for this node (up to ``limit`` and to ``max_held`` held in
        all), oldest first, moved to ``scheduled`` in one transaction. Rows another node is
        claiming right now are skipped, not waited for. Also renews this node's lease and
        takes over expired nodes' recipients (every ``lease / 3``)."""
        self._maintain()
        with self.tx() as db:
            held = db.execute(f"SELECT count(*) FROM recipients WHERE node=%s AND state IN"
                              f" {_HELD_SQL}", (self.node,)).fetchone()[0]
            n = min(limit, self.max_held - int(held))
            if n <= 0:
                return []
            rows = db.execute(
                "WITH c AS (SELECT id FROM recipients WHERE state='queued' ORDER BY id"
                " LIMIT %s FOR UPDATE SKIP LOCKED)"
                " UPDATE recipients r SET state='scheduled', node=%s FROM c, messages m"
                " WHERE r.id=c.id AND m.id=r.message_id RETURNING r.id, m.lane, m.tenant,"
                " m.sending_domain, r.domain, r.next_at, m.expires, r.rcpt, m.public_id,"
                " m.timezone",
                (n, self.node)).fetchall()
        rows.sort(key=lambda r: r[0])
        return [Pending(*r) for r in rows]

    def job(self, rid: int) -> Job:
        """The sendable form of recipient ``rid``. Raises ``StateError`` if unknown."""
        return self.jobs([rid])[0]

    def jobs(self, rids: Iterable[int]) -> list[Job]:
        """``job`` for each of ``rids`` in order, in one query (recipients of one body share
        one ``bytes`` object). Raises ``StateError`` if one is unknown."""
        ids = list(rids)
        found: dict[int, Job] = {}
        bodies: dict[bytes, bytes] = {}
        with self._lock:
            rows = self.db.execute(_JOB_SQL, (ids,)).fetchall()
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
            row = self.db.execute("SELECT state, ambiguous FROM recipients WHERE id=%s",
                                  (rid,)).fetchone()
        if row is None:
            raise StateError(f"unknown recipient {rid}")
        return row[0], bool(row[1])

    def _rows(self, db: Any, ids: list[int], columns: str) -> dict[int, tuple[Any, ...]]:
        """(node, ``columns``...) of each id, rows locked in id order (no deadlock with a
        node taking over) -- ``recipients r JOIN messages m``."""
        return {r[0]: r[1:] for r in db.execute(
            f"SELECT r.id, r.node, {columns} FROM recipients r JOIN messages m ON"
            " m.id=r.message_id WHERE r.id = ANY(%s) ORDER BY r.id FOR UPDATE OF r",
            (sorted(set(ids)),))}

    def _fence(self, rid: int, old: str, node: str | None) -> None:
        """Only the holding node may move a recipient out of a held state."""
        if old in HELD and node != self.node:
            raise StateError(f"recipient {rid} ({old}) is held by node {node}, not "
                             f"{self.node}: this node's lease was lost or it never claimed it")

    def start_attempts(self, ids: Iterable[int], *, pool: str, source_ip: str) -> None:
        """Mark recipients ``in_flight`` and open an attempt row each (one transaction).
        Raises ``StateError`` (nothing written) for an unknown id, an illegal move or a
        recipient this node does not hold."""
        ids = list(ids)
        now = self.clock()
        with self.tx() as db:
            rows = self._rows(db, ids, "r.state, r.attempts")
            ns: list[int] = []
            for rid in ids:
                row = rows.get(rid)
                if row is None:
                    raise StateError(f"unknown recipient {rid}")
                node, state, attempts = row
                self._fence(rid, state, node)
                check_transition(state, "in_flight")
                self._delta += 1 - (state in ACTIVE_STATES)
                rows[rid] = (node, "in_flight", attempts + 1)
                ns.append(attempts + 1)
            if not ids:
                return
            db.execute("UPDATE recipients SET state='in_flight', next_at=NULL, updated=%s,"
                       " attempts=attempts+1, node=%s WHERE id = ANY(%s)", (now, self.node, ids))
            self._copy(db, "attempts (recipient_id, n, started, pool, source_ip, node)",
                       [(rid, n, now, pool, source_ip, self.node)
                        for rid, n in zip(ids, ns, strict=True)])

    def data_started(self, rids: Iterable[int], mx_host: str) -> None:
        """Record that DATA is about to complete for these recipients' open attempts: after a
        crash they are ambiguous, never silently resent."""
        with self.tx() as db:
            db.execute(_MARK, (mx_host, list(rids)))

    def finish(self, rid: int, new_state: str, *, event: str | None, code: int | None = None,
               response: str | None = None, next_at: float | None = None,
               ambiguous: bool = False, **fields: Any) -> None:
        """Close the open attempt, move the recipient, emit its event: one transaction."""
        self.finish_many([(rid, new_state, event, {
            "code": code, "response": response, "next_at": next_at, "ambiguous": ambiguous,
            **fields})])

    def finish_many(self, items: list[tuple[int, str, str | None, dict[str, Any]]], *,
                    data_started: Iterable[int] = (), mx_host: str | None = None) -> None:
        """``finish`` each (rid, new_state, event, fields) in ONE transaction, in order; an
        illegal move (or one of a recipient another node holds) raises ``StateError`` and
        writes nothing. ``data_started``/``mx_host``: what ``data_started`` writes, in the
        same transaction after the outcomes."""
        marks = list(data_started)
        if not items and not marks:
            return
        now = self.clock()
        with self.tx() as db:
            rows = self._rows(db, [it[0] for it in items], _EVENT_COLUMNS)
            c_ids: list[int] = []
            c_code: list[int | None] = []
            c_resp: list[str | None] = []
            moves: dict[int, tuple[str, float | None, bool, str | None]] = {}
            events: list[tuple[str | None, str]] = []
            for rid, new_state, event, fields in items:
                row = rows.get(rid)
                if row is None:
                    raise StateError(f"unknown recipient {rid}")
                node, old = row[0], row[1]
                self._fence(rid, old, node)
                check_transition(old, new_state)
                self._delta += (new_state in ACTIVE_STATES) - (old in ACTIVE_STATES)
                owner = self.node if new_state in HELD else None
                rows[rid] = (owner, new_state, *row[2:])
                fields = dict(fields)
                code, response = fields.pop("code", None), fields.pop("response", None)
                next_at = fields.pop("next_at", None)
                amb = bool(fields.pop("ambiguous", False))
                c_ids.append(rid)
                c_code.append(code)
                c_resp.append(response)
                prev = moves.get(rid)
                moves[rid] = (new_state, next_at, amb or (prev is not None and prev[2]), owner)
                if event is not None:
                    tenant, public_id, rcpt, sdom, lane, campaign, attempts, created = row[2:]
                    events.append(self._event_row(
                        tenant, event=event, ts=now, message_id=public_id, recipient=rcpt,
                        sending_domain=sdom, lane=lane, campaign=campaign, attempt=attempts,
                        enqueued_ts=created, smtp_code=code, response=response,
                        state=new_state, **{k: v for k, v in fields.items() if v is not None}))
            if c_ids:
                self._close_attempts(db, now, c_ids, c_code, c_resp)
                self._apply_moves(db, now, moves)
            self._insert_events(db, events)
            if marks:
                db.execute(_MARK, (mx_host, marks))

    @staticmethod
    def _close_attempts(db: Any, now: float, ids: list[int], codes: list[int | None],
                        responses: list[str | None]) -> None:
        # a recipient closed twice in one batch: its first outcome closes the attempt (as
        # the one-by-one UPDATEs would), so keep the first of each id
        first: dict[int, int] = {}
        for k, rid in enumerate(ids):
            first.setdefault(rid, k)
        keep = sorted(first.values())
        db.execute(_CLOSE, (now, [ids[k] for k in keep], [codes[k] for k in keep],
                            [responses[k] for k in keep]))

    @staticmethod
    def _apply_moves(db: Any, now: float,
                     moves: dict[int, tuple[str, float | None, bool, str | None]]) -> None:
        ids = list(moves)
        db.execute(_MOVE, (now, ids, [moves[i][0] for i in ids], [moves[i][1] for i in ids],
                           [moves[i][2] for i in ids], [moves[i][3] for i in ids]))

    def _move(self, db: Any, rid: int, new: str, now: float, next_at: float | None = None,
              ambiguous: bool = False) -> None:
        row = self._rows(db, [rid], "r.state").get(rid)
        if row is None:
            raise StateError(f"unknown recipient {rid}")
        node, old = row
        self._fence(rid, old, node)
        check_transition(old, new)
        self._delta += (new in ACTIVE_STATES) - (old in ACTIVE_STATES)
        self._apply_moves(db, now, {rid: (new, next_at, ambiguous,
                                          self.node if new in HELD else None)})

    def _emit_for(self, db: Any, rid: int, event: str, now: float, **fields: Any) -> None:
        row = db.execute(
            "SELECT m.tenant, m.public_id, r.rcpt, m.sending_domain, m.lane, m.campaign,"
            " r.attempts, m.created FROM recipients r JOIN messages m ON m.id=r.message_id"
            " WHERE r.id=%s", (rid,)).fetchone()
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
    def recover(self, *, _include_self: bool = False) -> dict[str, int]:
        """Take over the recipients of nodes whose lease expired (and, on open, this node id's
        previous run): scheduled/deferred/in-flight -> queued, except in-flight ones whose
        DATA was under way, which become ambiguous dead letters. Returns counts."""
        with self._lock:
            dead = [r[0] for r in self.db.execute(
                f"SELECT node FROM nodes WHERE lease_until < {_NOW} AND node <> %s",
                (self.node,))]
        return self._recover(nodes=dead + ([self.node] if _include_self else []),
                             orphans=True, own=_include_self)

    def _recover(self, *, nodes: list[str], orphans: bool = False,
                 own: bool = False) -> dict[str, int]:
        now = self.clock()
        counts = {"requeued": 0, "ambiguous": 0}
        with self.tx() as db:
            others = [n for n in nodes if n != self.node]
            # lock the dead nodes' rows (one recoverer per dead node; a node whose heartbeat
            # holds its row right now is alive and skipped) and re-check expiry under lock
            locked = [r[0] for r in db.execute(
                f"SELECT node FROM nodes WHERE node = ANY(%s) AND lease_until < {_NOW}"
                " ORDER BY node FOR UPDATE SKIP LOCKED", (others,))] if others else []
            take = locked + ([self.node] if own else [])
            cond = "r.node = ANY(%s)"
            if orphans:  # held rows of no registered node (e.g. left by a fenced zombie)
                cond += " OR r.node IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE" \
                        " n.node = r.node)"
            rows = db.execute(
                "SELECT r.id, r.state, r.next_at, coalesce((SELECT bool_or(a.data_started)"
                " FROM attempts a WHERE a.recipient_id=r.id AND a.finished IS NULL), false)"
                f" FROM recipients r WHERE r.state IN {_HELD_SQL} AND ({cond})"
                " ORDER BY r.id FOR UPDATE OF r SKIP LOCKED", (take,)).fetchall()
            amb = [rid for rid, state, _, ds in rows if state == "in_flight" and ds]
            cut = [rid for rid, state, _, ds in rows if state == "in_flight" and not ds]
            if amb:
                db.execute("UPDATE attempts SET finished=%s, response=%s WHERE recipient_id ="
                           " ANY(%s) AND finished IS NULL",
                           (now, "no reply: engine stopped", amb))
            if cut:
                db.execute("UPDATE attempts SET finished=%s, response=%s WHERE recipient_id ="
                           " ANY(%s) AND finished IS NULL", (now, "interrupted before DATA", cut))
            moves: dict[int, tuple[str, float | None, bool, str | None]] = {}
            for rid, state, next_at, ds in rows:
                if state == "in_flight" and ds:
                    check_transition(state, "dead_lettered")
                    moves[rid] = ("dead_lettered", None, True, None)
                    self._delta -= 1
                else:
                    check_transition(state, "queued")
                    moves[rid] = ("queued", next_at if state == "deferred" else None, False,
                                  None)
            if moves:
                self._apply_moves(db, now, moves)
            for rid in amb:
                self._emit_for(db, rid, "ambiguous", now, state="dead_lettered",
                               reason="DATA completed without a reply before a crash: "
                               "possible duplicate, not resent")
            if locked:
                db.execute("DELETE FROM nodes WHERE node = ANY(%s)", (locked,))
            counts["ambiguous"] = len(amb)
            counts["requeued"] = len(rows) - len(amb)
        return counts

    # -- what the engine's other parts keep in the spool --------------------------------------
    # The same named methods as ``Spool``'s (dead-letter replays, received reports, webhook
    # cursors, serve's status), in PostgreSQL SQL; safe with several nodes on one schema.

    def prepare_side_tables(self) -> None:
        """Create the ``replays``, ``inbound_seen`` and ``webhook_cursors`` tables (and the
        outbox index by message id and recipient) if missing. Idempotent; nodes starting
        together are serialized by the schema lock."""
        with self.tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(_SIDE_SCHEMA)

    def location(self) -> str:
        """Where this spool is, for status lines: the URL without its password, and the
        schema."""
        url = redact(self.url)
        return url + ("&" if "?" in url else "?") + f"schema={self.schema}"

    def open_attempts(self) -> int:
        """Attempts this node started and has not finished (what its clean stop must leave
        at 0; other nodes' sends are theirs)."""
        with self._lock:
            row = self.db.execute("SELECT count(*) FROM attempts WHERE finished IS NULL AND"
                                  " node=%s", (self.node,)).fetchone()
        return int(row[0]) if row else 0

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
                q += f" AND {col}=%s"
                args.append(val)
        with self._lock:
            return [tuple(r) for r in self.db.execute(q + " ORDER BY r.id", args)]

    def recipient_events(self, public_id: str, rcpt: str) -> list[tuple[Any, ...]]:
        """(event, reason, provider, pool, response) of one recipient's outbox events,
        newest first (insertion order: rows not stamped with a ``seq`` yet count too)."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT event->>'event', event->>'reason', event->>'provider', event->>'pool',"
                " event->>'response' FROM outbox WHERE event->>'message_id'=%s AND"
                " event->>'recipient'=%s ORDER BY id DESC", (public_id, rcpt))]

    def last_pool(self, rid: int) -> str | None:
        """The pool of recipient ``rid``'s latest attempt that had one."""
        with self._lock:
            row = self.db.execute("SELECT pool FROM attempts WHERE recipient_id=%s AND pool IS"
                                  " NOT NULL ORDER BY id DESC LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None

    def route_of(self, rid: int) -> tuple[str | None, str | None]:
        """(pool, provider) that carried recipient ``rid`` last, from its attempts and its
        newest event naming a provider. Raises ``StateError`` if ``rid`` is unknown."""
        with self._lock:
            row = self.db.execute("SELECT m.public_id, r.rcpt FROM recipients r JOIN messages"
                                  " m ON m.id=r.message_id WHERE r.id=%s", (rid,)).fetchone()
            if row is None:
                raise StateError(f"unknown recipient {rid}")
            prov = self.db.execute(
                "SELECT event->>'provider' FROM outbox WHERE event->>'message_id'=%s AND"
                " event->>'recipient'=%s AND event->>'provider' IS NOT NULL ORDER BY id DESC"
                " LIMIT 1", (row[0], row[1])).fetchone()
        return self.last_pool(rid), (prov[0] if prov else None)

    def attempt_history(self, rid: int) -> list[tuple[Any, ...]]:
        """(n, started, finished, pool, source_ip, mx_host, data_started 0/1, code,
        response) of each attempt of ``rid``, oldest first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT n, started, finished, pool, source_ip, mx_host, data_started::int,"
                " code, response FROM attempts WHERE recipient_id=%s ORDER BY id", (rid,))]

    def body_digest(self, rid: int) -> tuple[int, str] | None:
        """(size in bytes, sha256 hex) of recipient ``rid``'s body, or None if unknown."""
        with self._lock:
            row = self.db.execute(
                "SELECT octet_length(b.data), b.hash FROM recipients r JOIN messages m ON "
                "m.id=r.message_id JOIN bodies b ON b.hash=m.body_hash WHERE r.id=%s",
                (rid,)).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def replays_of(self, rid: int) -> list[tuple[Any, ...]]:
        """(key, ts, pool, not_before) of each replay of ``rid``, oldest first."""
        with self._lock:
            return [tuple(r) for r in self.db.execute(
                "SELECT key, ts, pool, not_before FROM replays WHERE recipient_id=%s ORDER BY"
                " ts", (rid,))]

    def requested_pool(self, rid: int) -> str | None:
        """The pool the latest replay of ``rid`` asked for (None: no constraint)."""
        with self._lock:
            row = self.db.execute("SELECT pool FROM replays WHERE recipient_id=%s ORDER BY ts"
                                  " DESC LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None

    def replay_failed(self, key: str, items: Iterable[tuple[int, str]], *,
                      pool: str | None = None, not_before: float | None = None,
                      reason: str = "") -> tuple[list[int], list[int]]:
        """In ONE transaction, move each (rid, state it was read in) ``-> replayed ->
        queued`` with its ``replayed`` event and a ``replays`` row under ``key``. Skips a
        recipient replayed under ``key`` before (returned second) or no longer in that
        state (left alone). The recipients' rows are locked first, so two replays racing
        (from two nodes or the CLI) replay each recipient once. Returns (replayed ids,
        already replayed ids)."""
        wanted = list(items)
        done: list[int] = []
        already: list[int] = []
        now = self.clock()
        with self.tx() as db:
            rows = self._rows(db, [rid for rid, _ in wanted], "r.state")
            seen = {r[0] for r in db.execute(
                "SELECT recipient_id FROM replays WHERE key=%s AND recipient_id = ANY(%s)",
                (key, [rid for rid, _ in wanted]))}
            for rid, state in wanted:
                if rid in seen:
                    already.append(rid)
                    continue
                row = rows.get(rid)
                if row is None or row[1] != state:  # changed since it was read
                    continue
                self._move(db, rid, "replayed", now)
                self._emit_for(db, rid, "replayed", now, state="replayed", reason=reason,
                               pool=pool)
                self._move(db, rid, "queued", now, next_at=not_before)
                db.execute("INSERT INTO replays VALUES (%s,%s,%s,%s,%s)",
                           (key, rid, now, pool, not_before))
                seen.add(rid)
                done.append(rid)
        return done, already

    def recipients_of(self, public_id: str) -> list[tuple[int, str]]:
        """(recipient id, address) of each recipient of message ``public_id``."""
        with self._lock:
            return [(int(r), str(a)) for r, a in self.db.execute(
                "SELECT r.id, r.rcpt FROM recipients r JOIN messages m ON m.id=r.message_id "
                "WHERE m.public_id=%s ORDER BY r.id", (public_id,))]

    def report_seen(self, digest: str) -> bool:
        """True when a received report with this digest was recorded before (by any
        node)."""
        with self._lock:
            return self.db.execute("SELECT 1 FROM inbound_seen WHERE digest=%s",
                                   (digest,)).fetchone() is not None

    def mark_report(self, digest: str, outcome: str) -> None:
        """Record a received report that changed nothing (a second one is a duplicate)."""
        with self.tx() as db:
            db.execute("INSERT INTO inbound_seen VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                       (digest, self.clock(), outcome))

    def record_report(self, digest: str, rid: int, kind: str, *, reason: str,
                      suppress_as: str, owner: str, fields: dict[str, Any]) -> bool:
        """ONE transaction: record report ``digest`` as ``kind``, write recipient ``rid``'s
        ``kind`` event (``reason`` and ``fields``), and put its address on ``owner``'s
        suppression list (``suppress_as``: the suppression reason) with a ``suppressed``
        event if it was new. False (nothing written) if ``digest`` was recorded before --
        also when another node records the same report at the same moment."""
        now = self.clock()
        with self.tx() as db:
            if db.execute("INSERT INTO inbound_seen VALUES (%s,%s,%s) ON CONFLICT DO NOTHING"
                          " RETURNING 1", (digest, now, kind)).fetchone() is None:
                return False
            self._emit_for(db, rid, kind, now, reason=reason, **fields)
            tenant, rcpt = db.execute("SELECT m.tenant, r.rcpt FROM recipients r JOIN "
                                      "messages m ON m.id=r.message_id WHERE r.id=%s",
                                      (rid,)).fetchone()
            cur = db.execute("INSERT INTO suppressions VALUES (%s,%s,%s,%s) ON CONFLICT DO"
                             " NOTHING", (owner, rcpt.strip().lower(), suppress_as, now))
            if cur.rowcount:
                self._emit(db, tenant, event="suppressed", recipient=rcpt, reason=suppress_as,
                           ts=now)
        return True

    def webhook_open(self, endpoints: Iterable[tuple[str, str]]) -> None:
        """Make a cursor row (at the start) for each (endpoint key, tenant) lacking one."""
        rows = sorted(set(endpoints))
        if not rows:
            return
        with self.tx() as db:
            db.execute("INSERT INTO webhook_cursors (endpoint, tenant) SELECT * FROM"
                       " unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING",
                       ([k for k, _ in rows], [t for _, t in rows]))

    def webhook_cursor(self, key: str) -> tuple[int, int, int, float, str | None]:
        """(outbox_seq, stream_seq, failures, next_at, last_error) of endpoint ``key``.
        Raises ``StateError`` for an endpoint without a cursor."""
        with self._lock:
            row = self.db.execute("SELECT outbox_seq, stream_seq, failures, next_at, last_error"
                                  " FROM webhook_cursors WHERE endpoint=%s", (key,)).fetchone()
        if row is None:
            raise StateError(f"no webhook cursor for {key!r}")
        return int(row[0]), int(row[1]), int(row[2]), float(row[3]), row[4]

    def webhook_claim(self, key: str) -> bool:
        """True when this node may deliver endpoint ``key`` now: it holds (or takes) the
        endpoint's claim, leased for ``lease`` seconds on the database clock and renewed by
        each call. One node delivers an endpoint at a time, so its stream stays in order;
        a node that stops renewing is replaced once its claim expires."""
        with self._lock:
            row = self.db.execute(
                f"UPDATE webhook_cursors SET owner=%s, owner_until={_NOW} + %s WHERE"
                f" endpoint=%s AND (owner IS NULL OR owner=%s OR owner_until < {_NOW})"
                " RETURNING 1", (self.node, self.lease, key, self.node)).fetchone()
        return row is not None

    def webhook_release(self) -> None:
        """Give up this node's webhook claims (another node takes them at once)."""
        with self._lock:
            self.db.execute("UPDATE webhook_cursors SET owner=NULL, owner_until=NULL WHERE"
                            " owner=%s", (self.node,))

    def webhook_advance(self, key: str, *, from_seq: int, to_seq: int, to_stream: int) -> int:
        """After a 2xx: move endpoint ``key``'s cursor from outbox seq ``from_seq`` to
        ``to_seq`` / ``to_stream`` and clear its failures, in one transaction. Returns the
        events it advanced by (0, nothing written, if the cursor is no longer at
        ``from_seq`` or another node holds the endpoint now)."""
        now = self.clock()
        with self.tx() as db:
            row = db.execute("SELECT outbox_seq, stream_seq, owner FROM webhook_cursors WHERE"
                             " endpoint=%s FOR UPDATE", (key,)).fetchone()
            if row is None or int(row[0]) != from_seq or row[2] not in (None, self.node):
                return 0
            db.execute("UPDATE webhook_cursors SET outbox_seq=%s, stream_seq=%s, failures=0,"
                       " next_at=0, last_error=NULL, updated=%s WHERE endpoint=%s",
                       (to_seq, to_stream, now, key))
        return to_stream - int(row[1])

    def webhook_fail(self, key: str, error: str, delay: Callable[[int], float]) -> int:
        """Count one more failure of endpoint ``key`` and set its next attempt to now +
        ``delay(failures)``; returns the failure count."""
        now = self.clock()
        with self.tx() as db:
            row = db.execute("SELECT failures FROM webhook_cursors WHERE endpoint=%s FOR"
                             " UPDATE", (key,)).fetchone()
            fails = (int(row[0]) if row else 0) + 1
            db.execute("UPDATE webhook_cursors SET failures=%s, next_at=%s, last_error=%s,"
                       " updated=%s WHERE endpoint=%s",
                       (fails, now + delay(fails), error, now, key))
        return fails

    def stream_name(self) -> str:
        """A stable name of this spool's event stream for readers that keep a position
        (the warehouse ledger): derived from the cluster (its system identifier, else the
        server's host and port), the database and the schema -- never from the user or
        password, so the same spool reached by another URL keeps its name."""
        import psycopg

        info = self.db.info
        with self._lock:
            try:
                row = self.db.execute("SELECT system_identifier FROM pg_control_system()"
                                      ).fetchone()
                cluster = f"cluster {row[0]}" if row else ""
            except psycopg.Error:  # not allowed for this role: fall back to the address
                cluster = ""
        where = f"{cluster or f'{info.host}:{info.port}'}/{info.dbname}/{self.schema}"
        return "pgspool-" + hashlib.sha256(where.encode()).hexdigest()[:16]


_SIDE_SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
  key TEXT NOT NULL, recipient_id BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, pool TEXT,
  not_before DOUBLE PRECISION, PRIMARY KEY (key, recipient_id));
CREATE TABLE IF NOT EXISTS inbound_seen (digest TEXT PRIMARY KEY,
  ts DOUBLE PRECISION NOT NULL, outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_message ON outbox ((event->>'message_id'),
  (event->>'recipient'));
CREATE TABLE IF NOT EXISTS webhook_cursors (
  endpoint TEXT PRIMARY KEY, tenant TEXT NOT NULL, outbox_seq BIGINT NOT NULL DEFAULT 0,
  stream_seq BIGINT NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
  next_at DOUBLE PRECISION NOT NULL DEFAULT 0, last_error TEXT, updated DOUBLE PRECISION,
  owner TEXT, owner_until DOUBLE PRECISION);
"""
