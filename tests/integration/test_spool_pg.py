"""The spool contract on both backends (SQLite ``Spool`` and PostgreSQL ``PgSpool``), and
what only the PostgreSQL spool has: several nodes, leases, takeover, fencing, and an outbox
whose ``seq`` never lets a reader skip a late-committing event.

PostgreSQL is a private cluster started by ``tests.integration.pg_server`` (each test gets
its own schema).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError, InputError, StateError
from engine.spool import IdempotencyConflict, Spool, open_spool
from engine.spool.pg import PgSpool, _Request, split_url
from tests.integration.pg_server import PgServer, pg_server, pg_url  # noqa: F401

pytestmark = pytest.mark.integration


class Clock:
    """A settable clock (event timestamps are the spool's clock, not the wall)."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class Backend:
    """Opens spools of one kind on one target and simulates a crash + restart."""

    def __init__(self, kind: str, target: str | Path) -> None:
        self.kind = kind
        self.target = target
        self.clock = Clock()
        self.opened: list[Any] = []

    def open(self, **kw: Any) -> Any:
        if self.kind == "pg":
            kw.setdefault("node", "n1")
        spool = open_spool(self.target, clock=self.clock, **kw)
        self.opened.append(spool)
        return spool

    def crash_reopen(self, spool: Any) -> Any:
        """Drop ``spool`` as a killed process would, then open it again (recovering)."""
        if self.kind == "pg":
            spool.close(release=False)
        else:
            spool.db.close()
        return self.open()

    def close_all(self) -> None:
        for s in self.opened:
            with contextlib.suppress(Exception):  # already closed by a "crash"
                s.close(release=False) if self.kind == "pg" else s.close()


@pytest.fixture(params=["sqlite", "pg"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    target = (request.getfixturevalue("pg_url") if request.param == "pg"
              else tmp_path / "spool.db")
    b = Backend(request.param, target)
    yield b
    b.close_all()


def _msg(spool: Any, key: str, rcpts: list[str], *, tenant: str = "acme",
         request: bytes | None = None, body: bytes = b"Subject: x\r\n\r\nhi\r\n",
         **kw: Any) -> Any:
    return spool.accept(tenant=tenant, idem_key=key, request=request or key.encode(),
                        lane="lifecycle", campaign="c1", sending_domain="news.acme.example",
                        mail_from="news@news.acme.example", recipients=rcpts, body=body, **kw)


def _events(spool: Any, after: int = 0, **kw: Any) -> list[tuple[str, str | None, str | None]]:
    return [(e.event, e.recipient, e.state) for e in spool.events_after(after, **kw)]


# -- the contract, on both backends ---------------------------------------------------------
def test_accept_idempotency_and_conflict(backend: Backend) -> None:
    s = backend.open()
    a = _msg(s, "k1", ["a@x.example", "b@y.example", " a@x.example"])
    assert a.created and a.public_id.startswith("m_")
    again = _msg(s, "k1", ["a@x.example"], request=b"k1")
    assert again.public_id == a.public_id and not again.created
    with pytest.raises(IdempotencyConflict):
        _msg(s, "k1", ["a@x.example"], request=b"another body")
    # keys are per tenant: the same key under another tenant is a new message
    other = _msg(s, "k1", ["a@x.example"], tenant="globex")
    assert other.created and other.public_id != a.public_id
    with pytest.raises(InputError):
        _msg(s, "k2", [])
    assert s.active() == 3  # duplicates within one message are one recipient
    with pytest.raises(InputError, match="full"):
        _msg(s, "k3", ["c@x.example"], max_active=3)
    assert s.active() == 3 and s.active_count() == 3
    got = s.message(a.public_id, "acme")
    assert [r["address"] for r in got["recipients"]] == ["a@x.example", "b@y.example"]
    assert all(r["state"] == "queued" for r in got["recipients"])
    assert s.message(a.public_id, "globex") is None


def test_accept_many_rolls_back_only_the_failing_request(backend: Backend) -> None:
    s = backend.open()
    _msg(s, "dup", ["a@x.example"])

    def req(key: str, rcpts: list[str], request: bytes | None = None) -> dict[str, Any]:
        return dict(tenant="acme", idem_key=key, request=request or key.encode(),
                    lane="lifecycle", campaign=None, sending_domain="news.acme.example",
                    mail_from="n@news.acme.example", recipients=rcpts, body=b"same body")

    out = s.accept_many([req("m1", ["p@x.example"]), req("dup", ["q@x.example"]),
                         req("m2", []), req("m3", ["r@x.example", "s@x.example"]),
                         req("m1", ["p@x.example"])])
    assert out[0].created and out[3].created and not out[1].created
    assert isinstance(out[2], InputError)
    assert not out[4].created and out[4].public_id == out[0].public_id
    twice = s.accept_many([req("g1", ["g@x.example"]), req("g1", ["g@x.example"])])
    assert twice[0].created and not twice[1].created
    assert twice[0].public_id == twice[1].public_id
    assert s.active() == 5
    assert [e[1] for e in _events(s) if e[0] == "enqueued"] == [
        "a@x.example", "p@x.example", "r@x.example", "s@x.example", "g@x.example"]
    full = s.accept_many([req("f1", ["f@x.example"]),
                          {**req("f2", ["h@x.example", "i@x.example"]), "max_active": 7}])
    assert full[0].created and isinstance(full[1], InputError) and s.active() == 6
    # a reused key with another body is that request's conflict, not the whole group's
    got = s.accept_many([req("m9", ["z@x.example"]),
                         req("dup", ["q@x.example"], b"changed")])
    assert isinstance(got[1], IdempotencyConflict) and got[0].created
    assert s.active() == 7


def test_delivery_transitions_and_events(backend: Backend) -> None:
    s = backend.open()
    a = _msg(s, "k1", ["a@x.example", "b@y.example", "c@z.example"])
    pend = s.take_pending()
    assert [p.rcpt for p in pend] == ["a@x.example", "b@y.example", "c@z.example"]
    assert all(p.public_id == a.public_id and p.lane == "lifecycle" for p in pend)
    assert s.take_pending() == []  # claimed: not handed out twice
    ids = [p.id for p in pend]
    assert {s.state(i) for i in ids} == {("scheduled", False)}
    s.start_attempts(ids, pool="tx-a", source_ip="127.0.0.2")
    jobs = s.jobs(ids)
    assert [j.attempts for j in jobs] == [1, 1, 1]
    assert jobs[0].body is jobs[1].body and jobs[0].body == b"Subject: x\r\n\r\nhi\r\n"
    with pytest.raises(StateError):
        s.jobs([ids[0], 999_999])
    backend.clock.t = 1_010.0
    s.finish_many([(ids[0], "delivered", "delivered", {"code": 250, "response": "ok",
                                                        "pool": "tx-a"}),
                   (ids[1], "deferred", "deferred", {"code": 451, "next_at": 1_100.0,
                                                     "reason": "try later"})],
                  data_started=[ids[2]], mx_host="mx.z.example")
    assert s.state(ids[0]) == ("delivered", False)
    assert s.state(ids[1]) == ("deferred", False)
    # an illegal move anywhere in a batch writes nothing of it
    with pytest.raises(StateError, match="illegal"):
        s.finish_many([(ids[2], "delivered", "delivered", {"code": 250}),
                       (ids[0], "deferred", "deferred", {})])
    assert s.state(ids[2]) == ("in_flight", False)
    s.finish(ids[2], "dead_lettered", event="ambiguous", ambiguous=True, reason="no reply")
    assert s.state(ids[2]) == ("dead_lettered", True)
    s.move(ids[1], "scheduled")
    s.start_attempts([ids[1]], pool="tx-a", source_ip="127.0.0.3")
    assert s.job(ids[1]).attempts == 2
    s.finish(ids[1], "bounced", event="bounced", code=550, response="5.1.1 no such user")
    with pytest.raises(StateError):
        s.move(ids[0], "queued")  # nothing leaves delivered
    assert s.active() == 0
    evs = s.events_after(0)
    assert [(e.event, e.recipient) for e in evs] == [
        ("enqueued", "a@x.example"), ("enqueued", "b@y.example"), ("enqueued", "c@z.example"),
        ("delivered", "a@x.example"), ("deferred", "b@y.example"),
        ("ambiguous", "c@z.example"), ("bounced", "b@y.example")]
    seqs = [e.seq for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    d = evs[3]
    assert (d.smtp_code, d.response, d.pool, d.ts, d.attempt, d.message_id) == (
        250, "ok", "tx-a", 1_010.0, 1, a.public_id)
    assert evs[-1].attempt == 2 and evs[-1].smtp_code == 550
    # events_after: a cursor, a limit, a tenant
    assert [e.seq for e in s.events_after(seqs[2], limit=2)] == seqs[3:5]
    assert s.events_after(seqs[-1]) == []
    assert s.events_after(0, tenant="globex") == []
    s.emit(tenant="globex", event="breaker", pool="tx-a", provider="gmail", state="open")
    g = s.events_after(0, tenant="globex")
    assert [(e.event, e.tenant, e.state) for e in g] == [("breaker", "globex", "open")]
    assert g[0].seq > seqs[-1]


def test_suppression(backend: Backend) -> None:
    s = backend.open()
    assert s.suppress("acme", " Ann@X.example ", "complaint")
    assert not s.suppress("acme", "ann@x.example", "complaint")
    assert s.suppress("*", "all@x.example", "bounce")
    assert s.suppress("globex", "u@x.example", "unsubscribe")
    assert s.is_suppressed("acme", "ANN@x.example")
    assert not s.is_suppressed("globex", "ann@x.example")
    assert s.is_suppressed("globex", "all@x.example")
    pairs = [("acme", "Ann@x.example"), ("globex", "ann@x.example"), ("acme", "all@x.example"),
             ("acme", "u@x.example"), ("globex", "u@x.example")]
    assert s.suppressed_among(pairs) == {("acme", "Ann@x.example"), ("acme", "all@x.example"),
                                         ("globex", "u@x.example")}
    assert s.suppressed_among([]) == set()
    assert [e[0] for e in _events(s)] == ["suppressed", "suppressed", "unsubscribe"]


def test_recover_after_a_crash_marks_data_started_ambiguous(backend: Backend) -> None:
    s = backend.open()
    _msg(s, "k1", [f"r{i}@x.example" for i in range(5)])
    ids = [p.id for p in s.take_pending()]
    s.start_attempts(ids[:3], pool="tx-a", source_ip="127.0.0.2")
    s.data_started([ids[0]], "mx.x.example")
    s.finish(ids[2], "deferred", event="deferred", code=451, next_at=5_000.0)
    # ids[0]: in flight, DATA started; ids[1]: in flight, not; ids[2]: deferred;
    # ids[3], ids[4]: scheduled
    s2 = backend.crash_reopen(s)
    assert s2.recovered == {"requeued": 4, "ambiguous": 1}
    assert s2.state(ids[0]) == ("dead_lettered", True)
    assert {s2.state(i) for i in ids[1:]} == {("queued", False)}
    again = {p.id: p for p in s2.take_pending()}
    assert sorted(again) == ids[1:]  # the ambiguous one is never handed out again
    assert again[ids[2]].next_at == 5_000.0 and again[ids[1]].next_at is None
    amb = [e for e in s2.events_after(0) if e.event == "ambiguous"]
    assert [(e.recipient, e.state) for e in amb] == [("r0@x.example", "dead_lettered")]
    # a second recovery finds nothing of its own to do
    s3 = backend.crash_reopen(s2)
    assert s3.recovered == {"requeued": 4, "ambiguous": 0}  # the scheduled ones again
    assert s3.state(ids[0]) == ("dead_lettered", True)


# -- PostgreSQL only: several nodes --------------------------------------------------------
def _pg(url: str, node: str, **kw: Any) -> PgSpool:
    return PgSpool(url, node=node, **kw)


@pytest.fixture
def pg_nodes(pg_url: str) -> Iterator[Callable[..., PgSpool]]:  # noqa: F811
    made: list[PgSpool] = []

    def make(node: str, **kw: Any) -> PgSpool:
        s = _pg(pg_url, node, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close(release=False)


def _fill(s: PgSpool, n: int, prefix: str = "k") -> None:
    reqs = [dict(tenant="acme", idem_key=f"{prefix}{i}", request=b"%d" % i, lane="lifecycle",
                 campaign=None, sending_domain="news.acme.example",
                 mail_from="n@news.acme.example", recipients=[f"r{i}@x.example"],
                 body=b"body") for i in range(n)]
    assert all(getattr(r, "created", False) for r in s.accept_many(reqs))


def test_two_nodes_claim_disjoint_rows_up_to_max_held(pg_nodes: Callable[..., PgSpool]
                                                      ) -> None:
    a = pg_nodes("a", max_held=150)
    b = pg_nodes("b", max_held=150)
    _fill(a, 400)
    got: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claim(name: str, s: PgSpool) -> None:
        barrier.wait()
        for _ in range(10):
            got[name] += [p.id for p in s.take_pending(limit=20)]

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got["a"]) == 150 and len(got["b"]) == 150  # each stops at max_held
    assert not set(got["a"]) & set(got["b"])
    held = {n["node"]: n["held"] for n in a.nodes()}
    assert held == {"a": 150, "b": 150}
    # one finishes work: it may claim again, the other may not
    a.start_attempts(got["a"][:50], pool="p", source_ip="127.0.0.2")
    a.finish_many([(i, "delivered", "delivered", {"code": 250}) for i in got["a"][:50]])
    assert len(a.take_pending()) == 50 and b.take_pending() == []


def test_fence_and_takeover_after_lease_expiry(pg_nodes: Callable[..., PgSpool]) -> None:
    a = pg_nodes("a", lease=0.6)
    b = pg_nodes("b", lease=0.6)
    _fill(a, 6)
    ids = [p.id for p in a.take_pending()]
    a.start_attempts(ids[:4], pool="p", source_ip="127.0.0.2")
    a.data_started(ids[:2], "mx.x.example")
    a.finish(ids[3], "deferred", event="deferred", code=451, next_at=9_999.0)
    with pytest.raises(StateError, match="held by node a"):  # b may not touch a's rows
        b.finish(ids[0], "delivered", event="delivered", code=250)
    assert b.recover() == {"requeued": 0, "ambiguous": 0}  # a is alive
    time.sleep(0.7)  # a stops heartbeating: its lease runs out
    b.heartbeat()
    assert b.take_pending() != []  # maintenance took a over, then claimed the rows
    assert b.taken_over == {"requeued": 4, "ambiguous": 2}
    assert [b.state(i) for i in ids] == [("dead_lettered", True)] * 2 + [("scheduled", False)] * 4
    assert {n["node"] for n in b.nodes()} == {"b"}
    # a comes back (a zombie): every write of a held row and its heartbeat are refused
    with pytest.raises(StateError):
        a.finish(ids[2], "delivered", event="delivered", code=250)
    with pytest.raises(StateError, match="lost its lease"):
        a.heartbeat()
    with pytest.raises(StateError):
        a.start_attempts([ids[4]], pool="p", source_ip="127.0.0.2")
    assert b.state(ids[2]) == ("scheduled", False)
    amb = [e.recipient for e in b.events_after(0) if e.event == "ambiguous"]
    assert amb == ["r0@x.example", "r1@x.example"]


def test_close_releases_claims_at_once(pg_nodes: Callable[..., PgSpool]) -> None:
    a = pg_nodes("a", lease=600)
    b = pg_nodes("b", lease=600)
    _fill(a, 10)
    ids = [p.id for p in a.take_pending()]
    a.start_attempts(ids[:1], pool="p", source_ip="127.0.0.2")
    assert b.take_pending() == []
    a.close()  # clean shutdown: no waiting for a 10-minute lease
    assert sorted(p.id for p in b.take_pending()) == sorted(ids)
    assert {n["node"] for n in b.nodes()} == {"b"}


def test_outbox_reader_never_skips_a_late_commit(pg_nodes: Callable[..., PgSpool]) -> None:
    a = pg_nodes("a")
    b = pg_nodes("b")
    reader = pg_nodes("reader")
    a.emit(event="automation", state="x", reason="first")
    assert [e.reason for e in reader.events_after(0)] == ["first"]
    cursor = reader.events_after(0)[-1].seq
    with a.tx() as db:  # a's transaction writes its event first and commits last
        a._emit(db, None, event="automation", state="x", reason="slow")
        b.emit(event="automation", state="x", reason="fast")  # committed, but after a's xid
        assert reader.events_after(cursor) == []  # held back, not skipped
    got = reader.events_after(cursor)
    assert [e.reason for e in got] == ["slow", "fast"]
    assert [e.seq for e in got] == [cursor + 1, cursor + 2]
    # a rolled-back transaction leaves no event and no gap
    with pytest.raises(RuntimeError), a.tx() as db:
        a._emit(db, None, event="automation", state="x", reason="never")
        raise RuntimeError
    b.emit(event="automation", state="x", reason="after")
    assert [(e.reason, e.seq) for e in reader.events_after(cursor + 2)] == [("after",
                                                                             cursor + 3)]


def test_concurrent_accept_of_one_key_on_two_nodes(pg_nodes: Callable[..., PgSpool]) -> None:
    a, b = pg_nodes("a"), pg_nodes("b")
    out: dict[str, Any] = {}
    with a.tx() as db:  # a's accept is open when b accepts the same key: b waits, then
        a._accept_group(db, 1.0, [_Request.of(
            tenant="acme", idem_key="same", request=b"r", lane="lifecycle", campaign=None,
            sending_domain="d", mail_from="m@d", recipients=["x@y.example"], body=b"b")])
        t = threading.Thread(target=lambda: out.update(b=_msg(b, "same", ["x@y.example"],
                                                                request=b"r")))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # ... blocked on a's uncommitted row
    t.join(10)
    assert not out["b"].created and b.active() == 1


def test_targets_and_bad_input(pg_server: PgServer, tmp_path: Path) -> None:  # noqa: F811
    assert isinstance(open_spool(tmp_path / "x.db"), Spool)
    assert split_url(pg_server.url + "?schema=Abc&connect_timeout=3") == (
        pg_server.url + "?connect_timeout=3", "abc")
    with pytest.raises(ConfigError, match="identifier"):
        open_spool(pg_server.url + "?schema=x;drop")
    with pytest.raises(ConfigError, match="cannot connect"):
        open_spool(f"postgresql://postgres:secret@127.0.0.1:{_closed_port()}/x",
                   connect_timeout=2)
    try:
        open_spool(f"postgresql://postgres:secret@127.0.0.1:{_closed_port()}/x")
    except ConfigError as exc:
        assert "secret" not in str(exc)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_recipient_time_zone_reaches_the_pending_rows(backend: Backend) -> None:
    s = backend.open()
    _msg(s, "tz", ["a@x.example", "b@x.example"], timezone="Asia/Tokyo")
    _msg(s, "none", ["c@x.example"])
    got = {p.rcpt: p.timezone for p in s.take_pending()}
    assert got == {"a@x.example": "Asia/Tokyo", "b@x.example": "Asia/Tokyo",
                   "c@x.example": None}
