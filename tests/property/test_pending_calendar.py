"""``sim.providers.model.Pending`` (the provider model's consequence calendar) against a
plain heap: for any interleaving of pushes and takes it gives the same entries in the same
(at, seq) order, the same size and the same earliest time."""

from __future__ import annotations

import heapq
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.providers.model import Pending

# a pending engagement as the model keeps it: (base, recipient, ref, report)
_ITEM = (("gmail", "127.0.0.9", "b@d.example", None, "<m@d.example>"), "r@x.example", "1",
         False)

# one step: ("push", delays from now) or ("take", how far now moves first)
_DELAYS = st.one_of(st.just(0.0), st.floats(0.0, 90.0), st.floats(0.0, 7200.0),
                    st.sampled_from([59.999, 60.0, 60.001, 120.0]))
_STEPS = st.lists(
    st.one_of(st.tuples(st.just("push"), st.lists(_DELAYS, min_size=1, max_size=6)),
              st.tuples(st.just("take"), st.one_of(st.just(0.0), st.floats(0.0, 400.0)))),
    min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(start=st.floats(0.0, 2e9), steps=_STEPS)
def test_takes_in_heap_order(start: float, steps: list[tuple[str, object]]) -> None:
    cal, heap = Pending(), []  # type: ignore[var-annotated]
    now, seq = start, 0
    for op, arg in steps:
        if op == "push":
            for delay in arg:  # type: ignore[attr-defined]
                seq += 1
                entry = (now + delay, seq, "engagement", (), _ITEM)
                cal.push(entry)
                heapq.heappush(heap, entry)
        else:
            now += arg  # type: ignore[operator]
            want = []
            while heap and heap[0][0] <= now:
                want.append(heapq.heappop(heap))
            assert cal.take(now) == want
            assert all(e[0] > now for e in heap)
        assert len(cal) == len(heap) and bool(cal) == bool(heap)
        assert cal.first == (heap[0][0] if heap else math.inf)
    assert cal.ordered() == sorted(heap)
    # everything comes out at the end, in order, and the calendar is empty after
    assert cal.take(math.inf) == sorted(heap)
    assert not cal and cal.first == math.inf


def test_an_entry_earlier_than_the_current_bin_comes_first() -> None:
    """A push into a bin before the one being read (a trap hit at ``now`` while the
    earliest pending entry is minutes away) is taken before it."""
    cal = Pending()
    cal.push((600.0, 1, "engagement", (), _ITEM))
    cal.push((605.0, 2, "engagement", (), _ITEM))
    assert cal.take(601.0) == [(600.0, 1, "engagement", (), _ITEM)]  # 605 stays current
    cal.push((130.0, 3, "complaint", (), _ITEM))
    assert cal.first == 130.0
    assert [e[1] for e in cal.take(700.0)] == [3, 2]
