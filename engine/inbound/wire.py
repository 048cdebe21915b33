"""Wiring of inbound feedback to a live ``engine.runner.Runner``.

Owns one function: the ``on_signal`` callback that hands a ``Signal`` to the scheduler of
every policy group that sends through the signal's pool (two during a canary rollout: the
signal is about the pool's IPs, so both arms' breakers see it) and writes the decisions
each returns (breaker and automation transitions) to the spool through ``Runner.apply``. Call it on the runner's
event loop thread. It decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import InputError
from engine.policy.scheduler import Signal


def feed_runner(runner: Any) -> Callable[[Signal], list[Any]]:
    """``on_signal`` for ``FeedbackProcessor``: returns the decisions it applied."""

    def on_signal(signal: Signal) -> list[Any]:
        groups = runner.groups_for_pool(signal.pool)
        if not groups:
            raise InputError(f"signal for unknown pool {signal.pool!r}")
        now = runner.clock()
        out: list[Any] = []
        for group in groups:
            decisions = group.scheduler.feedback(signal, now)
            runner.apply(decisions, group=group)
            out.extend(decisions)
        return out

    return on_signal
