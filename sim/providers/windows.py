"""Sliding-window counters keyed by strings: the model's rate memory.

Owns ``SlidingCounter``: for each key, the times of recent events in a deque; ``count``
drops those older than the window first, so each event is appended and removed once
(amortised O(1)). Plain dicts and deques so a batch driver can read them directly.
Also ``BucketCounter`` (slotted approximate counts with a running total per key) and the
batch path's one-call helpers ``add_count`` and ``add_many``. No clock: times are
arguments.
"""

from __future__ import annotations

from collections import deque
from itertools import repeat


class SlidingCounter:
    """Counts events per key over the last ``window_s`` seconds."""

    __slots__ = ("events", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.events: dict[str, deque[float]] = {}

    def count(self, key: str, now: float) -> int:
        q = self.events.get(key)
        if q is None:
            return 0
        edge = now - self.window_s
        while q and q[0] <= edge:
            q.popleft()
        if not q:
            del self.events[key]
            return 0
        return len(q)

    def add(self, key: str, now: float, n: int = 1) -> None:
        q = self.events.get(key)
        if q is None:
            q = self.events[key] = deque()
        for _ in range(n):
            q.append(now)


class BucketCounter:
    """Approximate per-key counts over the last ``window_s`` seconds in ``buckets`` slots.

    Memory is O(buckets) per key whatever the volume, so a day-long window of a busy
    domain stays small; the count may include up to one bucket width of older events.
    ``totals`` keeps each key's sum of its slots, so ``count`` does not add them up.
    """

    __slots__ = ("buckets", "counts", "totals", "width", "window_s")

    def __init__(self, window_s: float, buckets: int = 24) -> None:
        self.window_s = window_s
        self.buckets = buckets
        self.width = window_s / buckets
        self.counts: dict[str, deque[list[int]]] = {}
        self.totals: dict[str, int] = {}

    def _trim(self, key: str, q: deque[list[int]], slot: int) -> None:
        oldest = slot - self.buckets
        while q and q[0][0] < oldest:
            self.totals[key] -= q.popleft()[1]

    def count(self, key: str, now: float) -> int:
        q = self.counts.get(key)
        if q is None:
            return 0
        self._trim(key, q, int(now // self.width))
        if not q:
            del self.counts[key]
            del self.totals[key]
            return 0
        return self.totals[key]

    def add(self, key: str, now: float, n: int = 1) -> None:
        slot = int(now // self.width)
        q = self.counts.get(key)
        if q is None:
            q = self.counts[key] = deque()
            self.totals[key] = 0
        self.totals[key] += n
        if q and q[-1][0] == slot:
            q[-1][1] += n
        else:
            q.append([slot, n])
            self._trim(key, q, slot)


def add_count(counter: BucketCounter, key: str, now: float, n: int) -> int:
    """``counter.add(key, now, n)`` then ``counter.count(key, now)`` in one pass (the
    batch path's bulk volume): the same slots, the same total."""
    slot = int(now // counter.width)
    q = counter.counts.get(key)
    totals = counter.totals
    if q is None:
        q = counter.counts[key] = deque()
        totals[key] = 0
    totals[key] += n
    if q and q[-1][0] == slot:
        q[-1][1] += n
    else:
        q.append([slot, n])
    oldest = slot - counter.buckets
    while q[0][0] < oldest:  # never empties: the current slot stays
        totals[key] -= q.popleft()[1]
    return totals[key]


def add_many(counter: SlidingCounter, key: str, now: float, n: int) -> None:
    """``counter.add(key, now, n)`` in one C-level extend (a batch driver's path)."""
    if n <= 0:
        return
    q = counter.events.get(key)
    if q is None:
        q = counter.events[key] = deque()
    q.extend(repeat(now, n))
