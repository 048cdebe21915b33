"""The spool: state table row by row, idempotency, events in the same transaction, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import StateError
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
