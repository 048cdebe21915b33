"""The spool: state table row by row, idempotency, events in the same transaction, recovery."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import StateError
from engine.events import EVENT_NAMES
from engine.spool import STATES, TRANSITIONS, IdempotencyConflict, Spool, check_transition


@pytest.mark.parametrize("old", STATES)
@pytest.mark.parametrize("new", STATES)
def test_state_table_row_by_row(old: str, new: str) -> None:
    if new in TRANSITIONS[old]:  # type: ignore[index]
        check_transition(old, new)
    else:
        with pytest.raises(StateError, match="illegal"):
            check_transition(old, new)


def test_terminal_states_are_final() -> None:
    assert TRANSITIONS["delivered"] == frozenset()
    assert TRANSITIONS["suppressed"] == frozenset()
    with pytest.raises(StateError):
        check_transition("bogus", "queued")


def _accept(sp: Spool, key: str = "k", body: bytes = b"B", request: bytes = b"R",
            to: tuple[str, ...] = ("a@x.test", "b@y.test")) -> str:
    return sp.accept(tenant="t", idem_key=key, request=request, lane="transactional",
                     campaign=None, sending_domain="d.test", mail_from="s@d.test",
                     recipients=to, body=body).public_id


def test_accept_idempotent_and_body_stored_once(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    first = _accept(sp)
    assert _accept(sp) == first
    with pytest.raises(IdempotencyConflict):
        _accept(sp, request=b"other")
    _accept(sp, key="k2")  # same body under another key
    assert sp.db.execute("SELECT count(*) FROM bodies").fetchone()[0] == 1
    assert sp.db.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    evs = sp.events_after(0, tenant="t")
    assert [e.event for e in evs] == ["enqueued"] * 4
    assert [e.seq for e in evs] == sorted(e.seq for e in evs)
    assert sp.events_after(0, tenant="other") == []


def test_illegal_move_writes_nothing(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    _accept(sp)
    rid = sp.take_pending()[0].id
    before = len(sp.events_after(0))
    with pytest.raises(StateError):
        sp.finish(rid, "delivered", event="delivered")  # scheduled -> delivered is illegal
    assert sp.state(rid) == ("scheduled", False)
    assert len(sp.events_after(0)) == before  # the event rolled back with the state


def test_crash_recovery(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sp = Spool(path)
    _accept(sp, to=("a@x.test", "b@x.test", "c@x.test", "d@x.test"))
    a, b, c, d = (p.id for p in sp.take_pending())
    sp.start_attempts([a, b, c], pool="p", source_ip="127.0.0.2")
    sp.data_started([b], "mx.x.test")  # b: DATA under way when the engine died
    sp.finish(c, "deferred", event="deferred", next_at=123.0, code=451)
    sp.db.close()  # crash: no clean shutdown of anything in flight

    sp2 = Spool(path)
    assert sp2.recovered == {"requeued": 3, "ambiguous": 1}
    assert sp2.state(a) == ("queued", False)  # before DATA: safe to resend
    assert sp2.state(b) == ("dead_lettered", True)  # possible duplicate: not resent
    assert sp2.state(c) == ("queued", False)
    assert sp2.state(d) == ("queued", False)
    pend = {p.id: p for p in sp2.take_pending()}
    assert set(pend) == {a, c, d}
    assert pend[c].next_at == 123.0  # the retry time survives the restart
    assert "ambiguous" in [e.event for e in sp2.events_after(0)]


def test_suppression_and_budget(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    assert sp.suppress("t", "A@X.test", "unsubscribe") is True
    assert sp.suppress("t", "a@x.test", "unsubscribe") is False
    assert sp.is_suppressed("t", "a@x.test") and not sp.is_suppressed("u", "a@x.test")
    from engine.errors import InputError

    _accept(sp)
    with pytest.raises(InputError, match="full"):
        sp.accept(tenant="t", idem_key="z", request=b"z", lane="transactional", campaign=None,
                  sending_domain="d.test", mail_from="s@d.test", recipients=["q@x.test"],
                  body=b"b", max_active=2)


def test_jobs_returns_exactly_the_queued_jobs(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    _accept(sp, key="k1", body=b"one", to=("a@x.test", "b@y.test"))
    _accept(sp, key="k2", body=b"two", request=b"R2", to=("c@x.test",))
    _accept(sp, key="k3", body=b"one", request=b"R3", to=("d@z.test",))
    ids = [p.id for p in sp.take_pending()]
    order = [ids[3], ids[0], ids[2], ids[1]]
    got = sp.jobs(order)
    assert got == [sp.job(i) for i in order]  # every field, in the order asked
    assert [j.rcpt for j in got] == ["d@z.test", "a@x.test", "c@x.test", "b@y.test"]
    assert got[0].body is got[1].body  # one bytes object per stored body
    assert sp.jobs([]) == []
    many = [f"r{i}@x.test" for i in range(1200)]  # more than one query chunk
    _accept(sp, key="big", request=b"big", to=tuple(many))
    big = [p.id for p in sp.take_pending(limit=5000)]
    assert [j.rcpt for j in sp.jobs(reversed(big))] == many[::-1]
    with pytest.raises(StateError, match="unknown recipient 99999"):
        sp.jobs([ids[0], 99999])


_TARGETS = ("queued", "scheduled", "in_flight", "deferred", "delivered", "bounced",
            "expired", "suppressed", "dead_lettered", "replayed")
_op = st.one_of(
    st.tuples(st.just("accept"), st.integers(1, 3), st.integers(0, 6)),
    st.tuples(st.just("accept_many"), st.integers(1, 3), st.integers(0, 6)),
    st.tuples(st.just("take"), st.integers(1, 3), st.integers(0, 0)),
    st.tuples(st.just("start"), st.integers(0, 30), st.integers(0, 0)),
    st.tuples(st.just("finish"), st.integers(0, 30), st.integers(0, len(_TARGETS) - 1)),
    st.tuples(st.just("finish_many"), st.integers(0, 30), st.integers(0, len(_TARGETS) - 1)),
    st.tuples(st.just("move"), st.integers(0, 30), st.integers(0, len(_TARGETS) - 1)),
    st.tuples(st.just("reopen"), st.integers(0, 0), st.integers(0, 0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_op, max_size=40), st.integers(3, 12))
def test_live_counter_equals_count_query(ops: list[tuple[str, int, int]], cap: int) -> None:
    """After any accept / move / finish sequence (illegal steps rolled back, a full spool
    refused, crash recovery on reopen), the O(1) counter equals ``SELECT count(*)``."""
    from engine.errors import InputError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        sp = Spool(path)
        n = 0
        for kind, a, b in ops:
            rids = [r for (r,) in sp.db.execute("SELECT id FROM recipients ORDER BY id")]
            rid = rids[a % len(rids)] if rids else 1
            new = _TARGETS[b]
            ev = new if new in EVENT_NAMES else None
            try:
                if kind == "accept":
                    n += 1
                    sp.accept(tenant="t", idem_key=f"k{b}", request=f"r{b}".encode(),
                              lane="transactional", campaign=None, sending_domain="d.test",
                              mail_from="s@d.test", recipients=[f"{n}.{i}@x.test"
                                                                for i in range(a)],
                              body=b"B", max_active=cap)
                elif kind == "accept_many":
                    n += 1
                    sp.accept_many([dict(tenant="t", idem_key=f"m{n}.{i}", request=b"x",
                                         lane="transactional", campaign=None,
                                         sending_domain="d.test", mail_from="s@d.test",
                                         recipients=[f"m{n}.{i}.{j}@x.test"
                                                     for j in range(b % 3 + 1)],
                                         body=b"B", max_active=cap) for i in range(a)])
                elif kind == "take":
                    sp.take_pending(limit=a)
                elif kind == "start":
                    sp.start_attempts([rid], pool="p", source_ip="127.0.0.2")
                elif kind == "finish":
                    sp.finish(rid, new, event=ev)
                elif kind == "finish_many":
                    sp.finish_many([(r, new, ev, {}) for r in rids[a % max(1, len(rids)):]
                                    [:3]])
                elif kind == "move":
                    sp.move(rid, new, event=ev)
                else:
                    sp.close()
                    sp = Spool(path)
            except (StateError, InputError):
                pass  # illegal transition / full spool / duplicate key: nothing written
            assert sp.active_count() == sp.active(), kind
        sp.close()
        again = Spool(path, recover=False)
        assert again.active_count() == again.active()
        again.close()
