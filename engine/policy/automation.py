"""Response-driven automation per pool x provider (in the manner of a traffic-shaping
automation daemon): reply rules with a threshold per hour throttle or suspend a path.

Owns: counting rule matches in a sliding hour, applying a rule's effect (``throttle``
multiplies the path's factor by ``throttle_factor``; ``suspend`` sets it to 0) for
``duration_s``, and the gradual recovery afterwards (additive increase of
``AutomationSpec.recovery_step`` per ``recovery_step_s``, never a jump back to full rate,
see KumoCorp/kumomta#594 for why snapping back re-triggers throttling). It also says when
retries held by a suspension may resume, spread over ``resume_spread_s`` (kumomta#293: a
single resume instant makes a standing wave). No clock, no IO; randomness is injected.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from engine.policy.params import AutomationSpec
from engine.policy.retry import RandomSource
from engine.policy.types import ReplyRule

AutomationState = Literal["normal", "throttled", "suspended", "recovering"]

_HOUR = 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AutomationChange:
    """An automation transition of one pool x provider."""

    pool: str
    provider: str
    rule: str
    state: AutomationState
    factor: float
    until: float | None
    at: float
    reasons: tuple[str, ...]

    event_name = "automation"


class Automation:
    """Automation state of one pool x provider."""

    __slots__ = ("factor", "hits", "hold_until", "last_step", "pool", "provider", "rule", "spec",
                 "state")

    def __init__(self, spec: AutomationSpec, pool: str, provider: str) -> None:
        self.spec = spec
        self.pool = pool
        self.provider = provider
        self.factor = 1.0
        self.state: AutomationState = "normal"
        self.hold_until = 0.0
        self.last_step = 0.0
        self.rule = ""
        self.hits: dict[str, deque[float]] = {}

    def match(self, rule: ReplyRule, now: float, *, pause_pool: bool = False) -> list[AutomationChange]:
        """A reply matched ``rule``; returns the transition it causes, if any.

        A rule with no effect but a ``pause_pool`` action suspends for
        ``AutomationSpec.pause_pool_s``.
        """
        effect = rule.effect
        duration = float(rule.duration_s) if rule.duration_s else self.spec.default_duration_s
        if effect == "none":
            if not pause_pool:
                return []
            effect = "suspend"
            duration = float(rule.duration_s) if rule.duration_s else self.spec.pause_pool_s
        why = [f"rule {rule.id} matched"]
        if rule.threshold_per_hour:
            seen = self.hits.setdefault(rule.id, deque(maxlen=rule.threshold_per_hour))
            seen.append(now)
            while seen and seen[0] <= now - _HOUR:
                seen.popleft()
            if len(seen) < rule.threshold_per_hour:
                return []
            why.append(f"{len(seen)} matches within an hour >= threshold {rule.threshold_per_hour}")
            seen.clear()
        until = now + duration
        if effect == "suspend":
            self.factor = 0.0
            self.state = "suspended"
            why.append(f"suspend for {duration:.0f}s")
        else:
            self.factor = max(0.0, self.factor * rule.throttle_factor)
            if self.state != "suspended":
                self.state = "throttled"
            why.append(f"throttle x{rule.throttle_factor:g} for {duration:.0f}s")
        self.hold_until = max(self.hold_until, until)
        self.last_step = self.hold_until
        self.rule = rule.id
        return [self._change(now, why)]

    def _change(self, at: float, why: list[str]) -> AutomationChange:
        return AutomationChange(
            pool=self.pool,
            provider=self.provider,
            rule=self.rule,
            state=self.state,
            factor=self.factor,
            until=self.hold_until if self.state in ("throttled", "suspended") else None,
            at=at,
            reasons=tuple(why),
        )

    def advance(self, now: float) -> list[AutomationChange]:
        """Recovery steps due by ``now``: +``recovery_step`` per ``recovery_step_s`` after the
        hold ends, one change per step, until the path is back to normal."""
        out: list[AutomationChange] = []
        if self.state == "normal" or now < self.hold_until:
            return out
        step_s = self.spec.recovery_step_s
        while now >= self.last_step:
            at = self.last_step
            self.factor = min(1.0, self.factor + self.spec.recovery_step)
            self.last_step = at + step_s
            if self.factor >= 1.0 - 1e-9:
                self.factor = 1.0
                self.state = "normal"
                out.append(self._change(at, ["recovered to full rate"]))
                break
            else:
                self.state = "recovering"
                out.append(self._change(at, [f"recovery step +{self.spec.recovery_step:g}"]))
        return out

    def next_change(self) -> float | None:
        """When ``advance`` will next have something to do."""
        return None if self.state == "normal" else max(self.hold_until, self.last_step)

    def resume_at(self, now: float, rng: RandomSource) -> float | None:
        """For a retry deferred while suspended: a time spread over the resume window."""
        if self.state != "suspended" or now >= self.hold_until:
            return None
        return self.hold_until + rng.random() * self.spec.resume_spread_s
