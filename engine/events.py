"""The one event schema shared by live sending, simulation, sandbox and imported logs.

An ``Event`` is frozen, slotted, keyword-only and checked on construction. Its row form
(``Event.to_row``) has exactly the columns of ``COLUMNS`` in that order, so Parquet
files written by any source line up and DuckDB reads them as one table.

Time is seconds since the Unix epoch (float, UTC) in the object and a UTC timestamp
(microseconds) in the row form. Nothing here does IO.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

EVENT_NAMES: Final = frozenset(
    {
        "enqueued",
        "attempt",
        "delivered",
        "deferred",
        "bounced",
        "expired",
        "suppressed",
        "dead_lettered",
        "replayed",
        "complaint",
        "unsubscribe",
        "engagement",
        "breaker",
        "automation",
        # beyond the required set
        "ambiguous",  # DATA completed without a reply: possible duplicate
        "incident",  # a detector fired (spike in deferrals, complaints, bounces)
        "promotion",  # a policy rollout stage changed
        "trap_hit",  # a spam trap received a message (sim/sandbox only)
        "warmup",  # a warmup plan moved to another day or cap
    }
)

SOURCES: Final = frozenset({"live", "sim", "sandbox", "import"})

# name -> logical type; the Parquet/DuckDB mapping lives with the writers.
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("ts", "timestamp"),
    ("event", "string"),
    ("source", "string"),
    ("run_id", "string"),
    ("seq", "int"),
    ("tenant", "string"),
    ("message_id", "string"),
    ("recipient", "string"),
    ("recipient_domain", "string"),
    ("sending_domain", "string"),
    ("provider", "string"),
    ("pool", "string"),
    ("source_ip", "string"),
    ("mx_host", "string"),
    ("lane", "string"),
    ("campaign", "string"),
    ("attempt", "int"),
    ("smtp_code", "int"),
    ("enhanced_code", "string"),
    ("response", "string"),
    ("category", "string"),
    ("action", "string"),
    ("rule", "string"),
    ("state", "string"),
    ("reason", "string"),
    ("policy_version", "string"),
    ("scenario", "string"),
    ("seed", "int"),
    ("enqueued_ts", "timestamp"),
    ("detail", "string"),
)
COLUMN_NAMES: Final = tuple(name for name, _ in COLUMNS)


class EventError(ValueError):
    """An event failed its construction checks."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened to a message, a pool or a policy.

    ``state`` carries the new state of a breaker / automation / promotion transition
    (``"open"``, ``"slow_start"``, ...); ``reason`` says why. ``detail`` holds extra
    JSON-serialisable facts that do not deserve a column.
    """

    ts: float
    event: str
    source: str
    run_id: str = ""
    seq: int | None = None
    tenant: str | None = None
    message_id: str | None = None
    recipient: str | None = None
    recipient_domain: str | None = None
    sending_domain: str | None = None
    provider: str | None = None
    pool: str | None = None
    source_ip: str | None = None
    mx_host: str | None = None
    lane: str | None = None
    campaign: str | None = None
    attempt: int | None = None
    smtp_code: int | None = None
    enhanced_code: str | None = None
    response: str | None = None
    category: str | None = None
    action: str | None = None
    rule: str | None = None
    state: str | None = None
    reason: str | None = None
    policy_version: str | None = None
    scenario: str | None = None
    seed: int | None = None
    enqueued_ts: float | None = None
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENT_NAMES:
            raise EventError(f"unknown event name {self.event!r}")
        if self.source not in SOURCES:
            raise EventError(f"unknown event source {self.source!r}")
        if not isinstance(self.ts, (int, float)) or not math.isfinite(self.ts):
            raise EventError(f"ts must be finite epoch seconds, got {self.ts!r}")
        if self.smtp_code is not None and not 200 <= self.smtp_code <= 599:
            raise EventError(f"smtp_code out of range: {self.smtp_code}")
        if self.attempt is not None and self.attempt < 0:
            raise EventError(f"attempt must be >= 0, got {self.attempt}")
        if self.recipient is not None and self.recipient_domain is None and "@" in self.recipient:
            object.__setattr__(
                self, "recipient_domain", self.recipient.rsplit("@", 1)[1].lower()
            )
        if self.event in ("breaker", "automation", "promotion") and not self.state:
            raise EventError(f"a {self.event} event needs a state")

    def to_row(self) -> dict[str, Any]:
        """The stable row form: every column of ``COLUMNS``, in order."""
        row: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("ts", "enqueued_ts") and value is not None:
                value = datetime.fromtimestamp(value, tz=UTC)
            elif f.name == "detail" and value is not None:
                value = json.dumps(value, sort_keys=True, separators=(",", ":"))
            row[f.name] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Event:
        """Inverse of ``to_row`` (accepts datetimes or epoch seconds for timestamps)."""
        kwargs: dict[str, Any] = {}
        for name in COLUMN_NAMES:
            value = row.get(name)
            if name in ("ts", "enqueued_ts") and isinstance(value, datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=UTC)
                value = value.timestamp()
            elif name == "detail" and isinstance(value, str):
                value = json.loads(value)
            kwargs[name] = value
        return cls(**kwargs)


assert COLUMN_NAMES == tuple(f.name for f in fields(Event)), "COLUMNS and Event drifted"
