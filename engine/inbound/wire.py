"""Wiring of inbound feedback to a live ``engine.runner.Runner``.

Owns one function: the ``on_signal`` callback that hands a ``Signal`` to the scheduler of
the policy group that owns the signal's pool and writes the decisions it returns (breaker
and automation transitions) to the spool through ``Runner.apply``. Call it on the runner's
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
        name = runner.config.pool_policy.get(signal.pool)
        group = runner.groups.get(name) if name is not None else None
        if group is None:
            raise InputError(f"signal for unknown pool {signal.pool!r}")
        decisions = group.scheduler.feedback(signal, runner.clock())
        runner.apply(decisions)
        return list(decisions)

    return on_signal
