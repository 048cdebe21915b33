"""The shared event schema: construction checks and the stable row form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.events import COLUMN_NAMES, EVENT_NAMES, SOURCES, Event, EventError

REQUIRED = {
    "enqueued", "attempt", "delivered", "deferred", "bounced", "expired", "suppressed",
    "dead_lettered", "replayed", "complaint", "unsubscribe", "engagement", "breaker",
    "automation",
}
REQUIRED_COLUMNS = {
    "ts", "event", "source", "run_id", "tenant", "message_id", "recipient",
    "recipient_domain", "provider", "pool", "source_ip", "lane", "campaign", "attempt",
    "smtp_code", "enhanced_code", "response", "category",
}


def test_required_names_and_columns_are_present() -> None:
    assert REQUIRED <= EVENT_NAMES
    assert REQUIRED_COLUMNS <= set(COLUMN_NAMES)


def test_row_form_has_every_column_in_order() -> None:
    ev = Event(ts=1_700_000_000.5, event="deferred", source="sim", recipient="Bob@Gmail.COM",
               smtp_code=421, enhanced_code="4.7.28", detail={"b": 1, "a": [1, 2]})
    row = ev.to_row()
    assert tuple(row) == COLUMN_NAMES
    assert row["recipient_domain"] == "gmail.com"
    assert row["ts"] == datetime.fromtimestamp(1_700_000_000.5, tz=UTC)
    assert row["detail"] == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "sent"},
        {"source": "prod"},
        {"ts": float("nan")},
        {"smtp_code": 99},
        {"attempt": -1},
        {"event": "breaker"},  # transitions need a state
    ],
)
def test_construction_rejects_bad_events(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"ts": 1.0, "event": "delivered", "source": "live"}
    base.update(kwargs)
    with pytest.raises(EventError):
        Event(**base)  # type: ignore[arg-type]


def test_events_are_frozen() -> None:
    ev = Event(ts=1.0, event="delivered", source="live")
    with pytest.raises(AttributeError):
        ev.event = "bounced"  # type: ignore[misc]


@given(
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    name=st.sampled_from(sorted(EVENT_NAMES - {"breaker", "automation", "promotion"})),
    source=st.sampled_from(sorted(SOURCES)),
    code=st.none() | st.integers(200, 599),
    text=st.none() | st.text(max_size=50),
)
def test_row_round_trip(ts: float, name: str, source: str, code: int | None,
                        text: str | None) -> None:
    ev = Event(ts=ts, event=name, source=source, smtp_code=code, response=text,
               detail={"k": text})
    back = Event.from_row(ev.to_row())
    assert back.event == ev.event and back.source == ev.source
    assert back.smtp_code == code and back.response == text and back.detail == {"k": text}
    assert abs(back.ts - ts) < 1e-5
