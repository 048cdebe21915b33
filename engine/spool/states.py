"""The recipient state machine of the spool, as one table.

Rules:
- A recipient is accepted ``queued``; the runner hands it to the policy core (``scheduled``)
  and marks it ``in_flight`` for the duration of one SMTP attempt.
- An attempt ends ``delivered`` / ``bounced`` / ``suppressed`` / ``dead_lettered`` (terminal)
  or ``deferred`` (the core plans a retry); a deferred recipient is ``scheduled`` again.
- ``expired`` can happen in every non-terminal state (TTL).
- Crash recovery: ``scheduled`` / ``deferred`` / ``in_flight`` go back to ``queued`` — but an
  in-flight recipient whose DATA completed without a reply becomes ``dead_lettered`` with the
  ``ambiguous`` flag (possible duplicate): never resent without an operator's replay.
- ``replayed``: an operator requeues a dead-lettered / expired / bounced recipient; the row
  records the replay and goes back to ``queued``.
- Nothing leaves ``delivered`` or ``suppressed``.
"""

from __future__ import annotations

from typing import Final, Literal

from engine.errors import StateError

State = Literal["queued", "scheduled", "in_flight", "deferred", "delivered", "bounced",
                "expired", "suppressed", "dead_lettered", "replayed"]
STATES: Final[tuple[State, ...]] = ("queued", "scheduled", "in_flight", "deferred",
                                    "delivered", "bounced", "expired", "suppressed",
                                    "dead_lettered", "replayed")

TRANSITIONS: Final[dict[State, frozenset[State]]] = {
    "queued": frozenset({"scheduled", "suppressed", "expired"}),
    "scheduled": frozenset({"in_flight", "queued", "expired", "suppressed", "deferred"}),
    "in_flight": frozenset({"delivered", "deferred", "bounced", "suppressed", "dead_lettered",
                            "expired", "queued"}),
    "deferred": frozenset({"scheduled", "in_flight", "queued", "expired", "suppressed"}),
    "delivered": frozenset(),
    "bounced": frozenset({"replayed"}),
    "expired": frozenset({"replayed"}),
    "suppressed": frozenset(),
    "dead_lettered": frozenset({"replayed"}),
    "replayed": frozenset({"queued"}),
}
TERMINAL: Final = frozenset(s for s in STATES if s not in
                            ("queued", "scheduled", "in_flight", "deferred", "replayed"))


def check_transition(old: str, new: str) -> None:
    """Raise ``StateError`` unless ``old -> new`` is a row of ``TRANSITIONS``."""
    allowed = TRANSITIONS.get(old)  # type: ignore[call-overload]
    if allowed is None or new not in STATES:
        raise StateError(f"unknown spool state in {old!r} -> {new!r}")
    if new not in allowed:
        raise StateError(f"illegal spool transition {old} -> {new}")
