"""Retry schedules as pure functions and generators.

Owns the arithmetic of "when is the next attempt": the lane's ``RetrySpec`` delays with
jitter, a provider's or verdict's ``retry_after_s`` (the larger wins), a floor that keeps
each delay >= the previous one (monotone non-decreasing), and the TTL cap (no attempt is
scheduled at or past the message's deadline: it expires instead). It never waits; the
driver owns the clock. Randomness comes from an injected ``RandomSource``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from engine.policy.params import RetrySpec


class RandomSource(Protocol):
    """What the core needs of ``random.Random`` (structural, so the core need not import it)."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


def base_delay(spec: RetrySpec, attempt: int) -> float:
    """The un-jittered delay after attempt ``attempt`` (1-based) failed."""
    delays = spec.delays_s or (60.0,)
    return float(delays[min(max(attempt, 1) - 1, len(delays) - 1)])


def next_delay(
    spec: RetrySpec,
    attempt: int,
    previous: float,
    rng: RandomSource,
    override_s: float | None = None,
) -> float:
    """Delay before attempt ``attempt + 1``: jittered base, raised to ``override_s`` and to
    ``previous`` (so a schedule never shrinks)."""
    delay = base_delay(spec, attempt)
    if spec.jitter > 0:
        delay *= 1.0 + spec.jitter * (2.0 * rng.random() - 1.0)
    if override_s is not None and override_s > delay:
        delay = float(override_s)
    return max(delay, previous, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPlan:
    """The outcome of planning a retry: at ``at`` (epoch/virtual seconds) or ``None`` (expire
    or give up), with the delay used and why."""

    at: float | None
    delay: float
    reasons: tuple[str, ...]


def plan_retry(
    spec: RetrySpec,
    *,
    attempt: int,
    previous: float,
    now: float,
    deadline: float,
    rng: RandomSource,
    override_s: float | None = None,
    not_before: float | None = None,
) -> RetryPlan:
    """Plan the retry after failed attempt ``attempt``; ``at`` is None when the message must
    end (attempts exhausted or the next try would land at or past ``deadline``).

    ``not_before`` (e.g. the end of a suspension plus a spread) moves the retry later.
    """
    if attempt >= spec.max_attempts:
        return RetryPlan(at=None, delay=0.0, reasons=(f"max_attempts {spec.max_attempts} reached",))
    delay = next_delay(spec, attempt, previous, rng, override_s)
    reasons = [f"retry delay {delay:.0f}s after attempt {attempt}"]
    if override_s is not None and delay == override_s:
        reasons.append(f"provider asks for {override_s:.0f}s")
    at = now + delay
    if not_before is not None and not_before > at:
        at = not_before
        reasons.append(f"held until {not_before:.0f} (pool x provider paused)")
    if at >= deadline:
        return RetryPlan(at=None, delay=delay, reasons=(*reasons, "next try would pass the TTL"))
    return RetryPlan(at=at, delay=delay, reasons=tuple(reasons))


def retry_delays(
    spec: RetrySpec, rng: RandomSource, override_s: float | None = None
) -> Iterator[float]:
    """The delays of successive retries (monotone non-decreasing), up to ``max_attempts``."""
    previous = 0.0
    for attempt in range(1, spec.max_attempts):
        previous = next_delay(spec, attempt, previous, rng, override_s)
        yield previous


def retry_times(
    spec: RetrySpec, rng: RandomSource, *, start: float, deadline: float
) -> Iterator[float]:
    """Absolute retry times from a first attempt at ``start``, all strictly before ``deadline``."""
    at = start
    for delay in retry_delays(spec, rng):
        at += delay
        if at >= deadline:
            return
        yield at
