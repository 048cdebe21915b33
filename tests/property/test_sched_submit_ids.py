"""``Scheduler.submit_many`` takes ids as an int64 ``array`` (the simulator's bulk path, checked
against the highest id ever taken) or as any int sequence: either way it accepts and refuses
exactly what ``submit`` one id at a time would -- ids out of order, ids held now, ids that
ended and come back, repeats inside one batch -- and leaves the same state."""

from __future__ import annotations

import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from engine.policy import Scheduler
from tests.property.test_batch_props import REPLIES, classify, params

batches = st.lists(st.tuples(st.lists(st.integers(0, 60), max_size=12),
                             st.sampled_from(["array", "list", "single"]),
                             st.booleans()),  # deliver what is due afterwards
                   min_size=1, max_size=12)


def _single(s: Scheduler, ids: list[int], now: float) -> bool:
    """``submit`` each id; all or nothing like ``submit_many`` (checked up front)."""
    if len(set(ids)) != len(ids) or any(s.state_of(i) is not None for i in ids):
        return False
    for i in ids:
        s.submit(i, lane="lifecycle", tenant="t", sending_domain="d", provider="gmail",
                 now=now)
    return True


def _step(s: Scheduler, ids: list[int], how: str, now: float) -> bool:
    if how == "single":
        return _single(s, ids, now)
    arg = array("q", ids) if how == "array" else list(ids)
    try:
        s.submit_many(arg, lane="lifecycle", tenant="t", sending_domain="d",  # type: ignore[arg-type]
                      provider="gmail", now=now)
    except InputError:
        return False
    return True


def _deliver(s: Scheduler, now: float) -> None:
    for d in s.due(now):
        code, text = REPLIES[0]
        s.record_batch(list(d.ids), [code] * d.n, [text] * d.n, pool=d.pool,
                       source_ip=d.source_ip, provider=d.provider, now=now)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_submit_many_accepts_and_refuses_like_submit(steps: list[tuple[list[int], str, bool]]
                                                     ) -> None:
    bulk = Scheduler(params(), random.Random(3), classify=classify)
    ref = Scheduler(params(), random.Random(3), classify=classify)
    now = 0.0
    for ids, how, deliver in steps:
        now += 7.0
        assert _step(bulk, ids, how, now) == _single(ref, ids, now)
        if deliver:
            _deliver(bulk, now)
            _deliver(ref, now)
        assert [bulk.state_of(i) for i in range(61)] == [ref.state_of(i) for i in range(61)]
        assert len(bulk) == len(ref)


def test_array_path_refuses_a_held_id_below_the_high_water_mark() -> None:
    s = Scheduler(params(), random.Random(1), classify=classify)
    s.submit_many(array("q", [5, 9]), lane="lifecycle", tenant="t", sending_domain="d", now=0.0)
    with pytest.raises(InputError, match="message 5"):
        s.submit_many(array("q", [12, 5]), lane="lifecycle", tenant="t", sending_domain="d",
                      now=1.0)
    with pytest.raises(InputError, match="message 13"):
        s.submit_many(array("q", [13, 14, 13]), lane="lifecycle", tenant="t",
                      sending_domain="d", now=1.0)
    assert len(s) == 2 and s.state_of(12) is None and s.state_of(13) is None
    # ids above everything ever taken go straight in
    assert s.submit_many(array("q", [10, 11]), lane="lifecycle", tenant="t",
                         sending_domain="d", now=2.0) == 2
    assert s.state_of(10) == "queued"
