"""Sliding-window counters keyed by strings: the model's rate memory.

Owns ``SlidingCounter``: for each key, the times of recent events in a deque; ``count``
drops those older than the window first, so each event is appended and removed once
(amortised O(1)). Plain dicts and deques so a batch driver can read them directly.
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
    """

    __slots__ = ("buckets", "counts", "width", "window_s")

    def __init__(self, window_s: float, buckets: int = 24) -> None:
        self.window_s = window_s
        self.buckets = buckets
        self.width = window_s / buckets
        self.counts: dict[str, deque[list[int]]] = {}

    def _trim(self, q: deque[list[int]], slot: int) -> None:
        while q and q[0][0] < slot - self.buckets:
            q.popleft()

    def count(self, key: str, now: float) -> int:
        q = self.counts.get(key)
        if q is None:
            return 0
        self._trim(q, int(now // self.width))
        if not q:
            del self.counts[key]
            return 0
        return sum(n for _, n in q)

    def add(self, key: str, now: float, n: int = 1) -> None:
        slot = int(now // self.width)
        q = self.counts.get(key)
        if q is None:
            q = self.counts[key] = deque()
        if q and q[-1][0] == slot:
            q[-1][1] += n
        else:
            q.append([slot, n])
            self._trim(q, slot)


def add_many(counter: SlidingCounter, key: str, now: float, n: int) -> None:
    """``counter.add(key, now, n)`` in one C-level extend (a batch driver's path)."""
    if n <= 0:
        return
    q = counter.events.get(key)
    if q is None:
        q = counter.events[key] = deque()
    q.extend(repeat(now, n))
