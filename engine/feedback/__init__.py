"""Feedback parsing: bounces (DSNs, RFC 3464 / 6533 and plain-text notices) and
complaint / auth-failure reports (ARF, RFC 5965 / 6591).

Owns turning one received message into a ``DsnReport``, ``ArfReport`` or ``Unknown``.
Pure: no sockets, files, clocks or randomness (an inbound receiver lives elsewhere).
"""

from __future__ import annotations

from engine.feedback.parse import parse
from engine.feedback.types import (
    ACTIONS,
    FEEDBACK_TYPES,
    ArfReport,
    DsnRecipient,
    DsnReport,
    Feedback,
    Unknown,
)

__all__ = [
    "ACTIONS",
    "FEEDBACK_TYPES",
    "ArfReport",
    "DsnRecipient",
    "DsnReport",
    "Feedback",
    "Unknown",
    "parse",
]
