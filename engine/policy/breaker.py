"""Breakers with slow start per pool x provider, driven by bounce / complaint / deferral rates.

Owns the breaker state machine (as a table), the sliding-window counters it reads, and the
rate factor (0..1 of the shaped rate) it imposes. It returns every transition as a
``BreakerChange`` carrying its trigger and reasons; the driver turns that into
``Event(event="breaker", state=..., reason=...)``. No clock, no IO.

Rules:
- closed      full rate. A *review* threshold crossed -> slow_start; a *pause* threshold
              crossed (or an incident) -> open.
- slow_start  starts at ``slow_start_fraction`` of the rate and adds ``additive_increase``
              per clean ``step_s``; reaching 1.0 -> closed. A review threshold crossed again
              multiplies the factor by ``multiplicative_decrease`` (AIMD) and stays; a pause
              threshold -> open.
- open        rate 0 for ``open_s``; then -> slow_start (never straight to closed).
Rates are judged once ``min_volume`` attempts were counted in the window; every transition
clears the window, so one bad hour is judged once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from engine.policy.params import BreakerSpec

BreakerState = Literal["closed", "slow_start", "open"]
Trigger = Literal["review", "pause", "ramp_complete", "open_elapsed", "step"]

# (state, trigger) -> new state. Anything not listed is not a transition.
TRANSITIONS: Final[dict[tuple[BreakerState, Trigger], BreakerState]] = {
    ("closed", "review"): "slow_start",
    ("closed", "pause"): "open",
    ("slow_start", "review"): "slow_start",  # multiplicative decrease
    ("slow_start", "pause"): "open",
    ("slow_start", "step"): "slow_start",  # additive increase
    ("slow_start", "ramp_complete"): "closed",
    ("open", "open_elapsed"): "slow_start",
    ("open", "pause"): "open",  # a new incident restarts the open period
}

_SLOTS: Final = 12  # sub-windows of the sliding window


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChange:
    """A breaker transition of one pool x provider."""

    pool: str
    provider: str
    from_state: BreakerState
    to_state: BreakerState
    trigger: Trigger
    factor: float
    at: float
    reasons: tuple[str, ...]

    event_name = "breaker"


class Breaker:
    """The breaker of one pool x provider."""

    __slots__ = (
        "counts",
        "factor",
        "last_step",
        "open_until",
        "pool",
        "provider",
        "slot_start",
        "spec",
        "state",
        "sums",
    )

    def __init__(self, spec: BreakerSpec, pool: str, provider: str) -> None:
        self.spec = spec
        self.pool = pool
        self.provider = provider
        self.state: BreakerState = "closed"
        self.factor = 1.0
        self.open_until = 0.0
        self.last_step = 0.0
        # per sub-window: [start, attempts, bounces, complaints, deferrals]
        self.counts: list[list[float]] = []
        # the rows' column sums, kept as rows come and go (whole numbers: exact in floats)
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.slot_start = -math.inf

    # -- counting -------------------------------------------------------------------
    def _slot(self, now: float) -> list[float]:
        counts = self.counts
        width = self.spec.window_s / _SLOTS
        if not counts or now >= counts[-1][0] + width:
            counts.append([now, 0.0, 0.0, 0.0, 0.0])
        horizon = now - self.spec.window_s
        while counts and counts[0][0] + width <= horizon:
            old = counts.pop(0)
            sums = self.sums
            sums[0] -= old[1]
            sums[1] -= old[2]
            sums[2] -= old[3]
            sums[3] -= old[4]
        return counts[-1]

    def totals(self, now: float) -> tuple[float, float, float, float]:
        """(attempts, bounces, complaints, deferrals) within the window ending at ``now``."""
        self._slot(now)
        a, b, c, d = self.sums
        return a, b, c, d

    def observe(
        self,
        now: float,
        *,
        attempts: int = 0,
        bounces: int = 0,
        complaints: int = 0,
        deferrals: int = 0,
    ) -> list[BreakerChange]:
        """Count outcomes and return the transitions they cause (zero or one)."""
        row = self._slot(now)
        row[1] += attempts
        row[2] += bounces
        row[3] += complaints
        row[4] += deferrals
        sums = self.sums
        sums[0] += attempts
        sums[1] += bounces
        sums[2] += complaints
        sums[3] += deferrals
        return self._judge(now)

    def _judge(self, now: float) -> list[BreakerChange]:
        if self.state == "open":
            return []
        sent, bounces, complaints, deferrals = self.totals(now)
        if sent < self.spec.min_volume:
            return []
        s = self.spec
        rates = (
            ("bounce", bounces / sent, s.bounce_review, s.bounce_pause),
            ("complaint", complaints / sent, s.complaint_review, s.complaint_pause),
            ("deferral", deferrals / sent, s.deferral_review, s.deferral_pause),
        )
        for name, rate, _, pause in rates:
            if rate >= pause:
                why = f"{name} rate {rate:.2%} >= pause {pause:.2%} over {sent:.0f} attempts"
                return [self._move("pause", now, why)]
        for name, rate, review, _ in rates:
            if rate >= review:
                why = f"{name} rate {rate:.2%} >= review {review:.2%} over {sent:.0f} attempts"
                return [self._move("review", now, why)]
        return []

    # -- transitions ----------------------------------------------------------------
    def _move(self, trigger: Trigger, now: float, why: str) -> BreakerChange:
        old = self.state
        new = TRANSITIONS[(old, trigger)]
        s = self.spec
        if new == "open":
            self.factor = 0.0
            self.open_until = now + s.open_s
            why += f"; open until {self.open_until:.0f}"
        elif new == "closed":
            self.factor = 1.0
        elif trigger == "review" and old == "slow_start":
            self.factor = max(s.slow_start_fraction * s.multiplicative_decrease,
                              self.factor * s.multiplicative_decrease)
            self.last_step = now
        elif trigger in ("review", "open_elapsed"):
            self.factor = s.slow_start_fraction
            self.last_step = now
        elif trigger == "step":
            self.factor = min(1.0, self.factor + s.additive_increase)
            self.last_step = now
        self.state = new
        if trigger in ("review", "pause", "open_elapsed"):
            self.counts.clear()
            self.sums = [0.0, 0.0, 0.0, 0.0]
        return BreakerChange(
            pool=self.pool,
            provider=self.provider,
            from_state=old,
            to_state=new,
            trigger=trigger,
            factor=self.factor,
            at=now,
            reasons=(why,),
        )

    def incident(self, now: float, why: str) -> list[BreakerChange]:
        """An incident signal (detector, operator): open the breaker now."""
        return [self._move("pause", now, f"incident: {why}")]

    def advance(self, now: float) -> list[BreakerChange]:
        """Time-driven transitions up to ``now``: open period over, slow-start steps."""
        out: list[BreakerChange] = []
        if self.state == "open" and now >= self.open_until:
            out.append(self._move("open_elapsed", self.open_until, "open period elapsed"))
        while self.state == "slow_start" and now >= self.last_step + self.spec.step_s:
            at = self.last_step + self.spec.step_s
            if self.factor + self.spec.additive_increase >= 1.0 - 1e-9:
                self.last_step = at
                out.append(self._move("ramp_complete", at, "slow start reached full rate"))
            else:
                out.append(self._move("step", at, f"clean step of {self.spec.step_s:.0f}s"))
        return out

    def next_change(self) -> float | None:
        """When ``advance`` will next have something to do."""
        if self.state == "open":
            return self.open_until
        if self.state == "slow_start":
            return self.last_step + self.spec.step_s
        return None
