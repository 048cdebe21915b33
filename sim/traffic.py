"""Arrivals: how many messages each traffic stream submits in a time slice, and to whom.

Owns ``Traffic``: per slice [t0, t1) it draws counts with numpy (Poisson for transactional
and lifecycle streams under a diurnal curve and bursts; newsletters at the top of their
period, optionally spread over ``spread_s``; cold outreach in small randomised batches that
grow by ``growth`` a day) and picks recipient numbers (uniform for transactional, a moving
cursor over the list for campaigns, so list segments are hit together). One seeded numpy
stream; never touches the policy core or the models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sim.scenario import Stream

DAY = 86400.0


def diurnal(t_s: float) -> float:
    """Relative arrival rate at ``t_s`` seconds after midnight UTC (mean 1 over a day):
    low at night, a plateau in working hours, peaking mid-afternoon (modelling assumption)."""
    hour = (t_s % DAY) / 3600.0
    return 1.0 + 0.7 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


@dataclass(slots=True)
class Batch:
    """``recipients`` of stream ``stream`` enqueued at ``at``."""

    stream: int
    at: float
    recipients: np.ndarray


class Arrivals(Protocol):
    """What the world reads arrivals from: ``Traffic``, or a replay's recorded arrivals."""

    def slice(self, t0: float, t1: float) -> list[Batch]: ...


class Traffic:
    """Arrival generator over a list of ``audience_size`` recipients."""

    def __init__(self, streams: tuple[Stream, ...], audience_size: int,
                 rng: np.random.Generator, start: float) -> None:
        self.streams = streams
        self.n = audience_size
        self.rng = rng
        self.start = start
        self.cursor = [int(rng.integers(0, audience_size)) for _ in streams]
        self.next_cold = [s.start_s for s in streams]

    def _rate(self, s: Stream, rel: float) -> float:
        factor = s.rate_per_hour * diurnal(self.start + rel)
        for b_start, b_dur, b_factor in s.bursts:
            if b_start <= rel < b_start + b_dur:
                factor *= b_factor
        return factor

    def _take(self, i: int, n: int) -> np.ndarray:
        idx = (self.cursor[i] + np.arange(n, dtype=np.int64)) % self.n
        self.cursor[i] = int((self.cursor[i] + n) % self.n)
        return idx

    def slice(self, t0: float, t1: float) -> list[Batch]:
        """Arrivals of [t0, t1) (seconds since the run's start), in stream order."""
        out: list[Batch] = []
        dt = t1 - t0
        for i, s in enumerate(self.streams):
            if t1 <= s.start_s or (s.end_s is not None and t0 >= s.end_s):
                continue
            if s.kind in ("transactional", "lifecycle"):
                n = int(self.rng.poisson(self._rate(s, t0) * dt / 3600.0))
                if n:
                    pick = self.rng.integers(0, self.n, size=n) if s.kind == "transactional" \
                        else self._take(i, n)
                    out.append(Batch(i, t0, pick))
            elif s.kind == "newsletter":
                n = self._newsletter(s, t0, t1)
                if n:
                    out.append(Batch(i, t0, self._take(i, n)))
            else:  # cold outreach
                while self.next_cold[i] < t1:
                    day = max(0.0, (self.next_cold[i] - s.start_s) / DAY)
                    lo, hi = s.batch
                    n = int(self.rng.integers(lo, hi + 1) * s.growth ** int(day))
                    out.append(Batch(i, t0, self._take(i, n)))
                    jitter = self.rng.uniform(0.5, 1.5)
                    self.next_cold[i] += s.every_s * jitter
        return out

    @staticmethod
    def _newsletter(s: Stream, t0: float, t1: float) -> int:
        """Messages of a newsletter whose sends start every ``every_s`` from ``start_s``;
        each send's ``size`` is spread evenly over ``spread_s`` (0: all at once)."""
        total = 0.0
        k0 = max(0, math.floor((t0 - s.spread_s - s.start_s) / s.every_s))
        k = k0
        while True:
            t = s.start_s + k * s.every_s
            if t >= t1 or (s.end_s is not None and t >= s.end_s):
                break
            if s.spread_s <= 0:
                total += s.size if t0 <= t < t1 else 0
            else:
                lo, hi = max(t0, t), min(t1, t + s.spread_s)
                if hi > lo:
                    # integer parts by cumulative rounding so the parts add up to size
                    total += (round(s.size * (hi - t) / s.spread_s)
                              - round(s.size * (lo - t) / s.spread_s))
            k += 1
        return int(total)
