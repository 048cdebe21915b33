"""The promotion state machine as a table (rules at the top, one row per transition).

Rules
    * A pool is ``idle`` (no candidate), ``canary`` (a candidate takes a stage of its
      traffic), ``promoted`` (the candidate became the pool's current policy) or
      ``rolled_back`` (the candidate was withdrawn; the current policy has all traffic).
    * ``admit`` starts a candidate at the first stage from any state but ``canary``.
    * ``advance`` moves a canary to the next stage of ``STAGES``; from the last canary stage
      it reaches 100 %: the pool is ``promoted`` and the candidate becomes current.
    * ``rollback`` ends a canary at any stage. Nothing else is allowed (``StateError``).

Owns only the table and ``step``; must not read or write files.
"""

from __future__ import annotations

from engine.errors import StateError

STAGES: tuple[float, ...] = (1.0, 10.0, 25.0, 50.0, 100.0)
"""Percent of the pool's traffic the candidate sends at each stage."""

TABLE: dict[tuple[str, str], str] = {
    ("idle", "admit"): "canary",
    ("promoted", "admit"): "canary",
    ("rolled_back", "admit"): "canary",
    ("canary", "advance"): "canary",  # or "promoted" from the stage before 100 %
    ("canary", "rollback"): "rolled_back",
}


def step(state: str, percent: float, action: str) -> tuple[str, float]:
    """The (state, stage percent) after ``action``; raises ``StateError`` when not allowed."""
    nxt = TABLE.get((state, action))
    if nxt is None:
        raise StateError(f"cannot {action} a pool in state {state!r}")
    if action == "admit":
        return nxt, STAGES[0]
    if action == "rollback":
        return nxt, 0.0
    later = [s for s in STAGES if s > percent]
    if not later:
        raise StateError(f"no stage after {percent:g} %")
    return ("promoted", 100.0) if later[0] >= 100.0 else (nxt, later[0])


def event_state(state: str, percent: float) -> str:
    """The ``state`` column of the promotion event: ``stage-10``, ``promoted``, ..."""
    return f"stage-{percent:g}" if state == "canary" else state
