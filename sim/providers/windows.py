"""Sliding-window counters keyed by strings: the model's rate memory.

Owns ``SlidingCounter``: for each key, the times of recent events in a deque; ``count``
drops those older than the window first, so each event is appended and removed once
(amortised O(1)). Plain dicts and deques so a batch driver can read them directly.
"""

from __future__ import annotations

from collections import deque


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
