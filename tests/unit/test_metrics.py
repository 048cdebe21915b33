"""Each metric view: a tiny declared table of events in, the exact expected rows out."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.eventio import events_frame
from engine.events import Event
from inboxlab.warehouse import load_frame, metric, query
from inboxlab.warehouse.metrics import project_safe_volume, wilson

T0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
DAY = 86400.0


def _load(home: Path, events: list[Event]) -> None:
    load_frame(events_frame(events), "test", home)


def ev(dt: float, event: str, **kw: object) -> Event:
    return Event(ts=T0 + dt, event=event, source="sim", run_id="t", **kw)  # type: ignore[arg-type]


def test_latency_percentiles_by_provider(tmp_path: Path) -> None:
    events = []
    for i, (prov, secs) in enumerate([("gmail", 10), ("gmail", 20), ("gmail", 30),
                                      ("yahoo", 100), ("yahoo", 300)]):
        m = f"m{i}"
        events += [ev(0, "enqueued", message_id=m),
                   ev(2, "attempt", message_id=m, attempt=1, enqueued_ts=T0, provider=prov),
                   ev(secs, "delivered", message_id=m, attempt=1, enqueued_ts=T0,
                      provider=prov)]
    _load(tmp_path, events)
    acc = metric(tmp_path, "time_to_accept", by="provider")
    assert acc.select("provider", "n", "p50_s", "p95_s").rows() == [
        ("gmail", 3, 20.0, 29.0), ("yahoo", 2, 200.0, 290.0)]
    first = metric(tmp_path, "time_to_first_attempt")
    assert first.select("n", "p50_s", "p99_s").rows() == [(5, 2.0, 2.0)]
    with pytest.raises(InputError, match="cannot group by"):
        metric(tmp_path, "time_to_accept", by="recipient; drop table x")


def test_deferral_codes_with_hints(tmp_path: Path) -> None:
    events = [ev(i, "deferred", provider="gmail", enhanced_code="4.7.28", smtp_code=421)
              for i in range(3)]
    events += [ev(5, "deferred", provider="gmail", enhanced_code="4.2.2", smtp_code=452),
               ev(6, "deferred", provider="yahoo", enhanced_code="4.9.9", smtp_code=451,
                  category="throttled"),
               ev(7, "delivered", provider="gmail")]
    _load(tmp_path, events)
    got = metric(tmp_path, "deferral_codes").select("provider", "enhanced_code", "n", "share",
                                                    "hint").rows()
    assert got == [
        ("gmail", "4.7.28", 3, 0.75, "Gmail rate limit on your IP/domain: slow down this pool"),
        ("gmail", "4.2.2", 1, 0.25, "Gmail: mailbox full: retry much later"),
        ("yahoo", "4.9.9", 1, 1.0, "rate limited: slow down the pool for this provider"),
    ]


def test_reputation_against_trailing_baseline(tmp_path: Path) -> None:
    events = []
    # days 0..13: 1000 delivered, 1 complaint a day; day 14: 1000 delivered, 5 complaints
    for day in range(15):
        events += [ev(day * DAY + i, "delivered", sending_domain="news.example.com", pool="a")
                   for i in range(1000)]
        events += [ev(day * DAY + 5000 + i, "complaint", sending_domain="news.example.com",
                      pool="a") for i in range(5 if day == 14 else 1)]
    events += [ev(14 * DAY + 9000, "bounced", sending_domain="news.example.com", pool="a")]
    _load(tmp_path, events)
    rep = metric(tmp_path, "reputation")
    assert rep.height == 15
    last = rep.row(14, named=True)
    assert (last["delivered"], last["complaints"], last["bounced"]) == (1000, 5, 1)
    assert last["complaint_rate"] == 0.005
    assert last["baseline_complaint_rate"] == 0.001  # 14 / 14000 over days 0..13
    assert last["status"] == "critical"  # 0.5% >= 0.3%
    first = rep.row(0, named=True)
    assert first["baseline_complaint_rate"] is None and first["status"] == "warning"
    since = metric(tmp_path, "reputation", since="2024-03-15")
    assert since.height == 1 and since["baseline_complaint_rate"][0] == 0.001


def test_warmup_wilson_and_projection(tmp_path: Path) -> None:
    events = []
    for day, (vol, bad) in enumerate([(100, 0), (200, 2), (400, 12), (800, 40)]):
        events += [ev(day * DAY + i, "deferred" if i < bad else "delivered", provider="gmail",
                      pool="new") for i in range(vol)]
    _load(tmp_path, events)
    row = metric(tmp_path, "warmup").row(0, named=True)
    lo, hi = wilson(40, 800)
    assert (row["days"], row["last_attempts"], row["last_deferral_rate"]) == (4, 800, 0.05)
    assert (row["ci_low"], row["ci_high"]) == (round(lo, 6), round(hi, 6))
    assert row["state"] == "hold"  # 5% sits inside its own interval
    assert row["max_ok_volume"] == 200.0
    assert 0 < row["projected_low"] <= row["projected_safe_daily"] <= row["projected_high"]


def test_wilson_and_projection_properties() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35  # the rule of three, roughly
    assert all(math.isnan(x) for x in wilson(5, 0))  # no trials, no interval
    safe, _, _ = project_safe_volume([100, 200, 300], [0.01, 0.02, 0.03], target=0.05)
    assert safe == pytest.approx(500.0)
    assert project_safe_volume([100, 200, 300], [0.03, 0.02, 0.01])[0] == 600.0  # capped 2x


def test_slo_rows(tmp_path: Path) -> None:
    events = [ev(i, "enqueued", message_id=f"m{i}", lane="transactional") for i in range(9)]
    events.append(ev(9, "enqueued", message_id="m9", state="rejected"))
    events += [ev(10 + i, "delivered", message_id=f"m{i}", enqueued_ts=T0 + i,
                  lane="transactional") for i in range(9)]
    _load(tmp_path, events)
    got = metric(tmp_path, "slo").select("slo", "measured", "samples", "met").rows()
    assert got == [("enqueue_availability", 0.9, 10, False),
                   ("transactional_p95_accept_s", 10.0, 9, True)]


def test_unknown_metric_and_since(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown metric"):
        metric(tmp_path, "nope")
    with pytest.raises(InputError, match="--since"):
        metric(tmp_path, "outcomes", since="yesterday-ish")
    assert query(tmp_path, "SELECT count(*) AS n FROM hints")["n"][0] > 10
