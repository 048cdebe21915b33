"""Incident detection on generated data with a known onset: fires within 5 minutes of onset,
stays quiet on the baseline, resolves, and runs end to end over an events frame."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from engine.errors import InputError
from engine.eventio import events_frame
from engine.events import Event
from engine.policy.params import BreakerSpec, LaneSpec, PolicyParams, PoolSpec, RetrySpec
from engine.policy.scheduler import Scheduler
from engine.policy.types import ProviderProfile, Shaping
from inboxlab.warehouse.detect import (
    DetectorConfig,
    SpikeDetector,
    detect_frame,
    generate_counts,
    incident_signal,
    run_counts,
)


def test_quiet_weeks_raise_no_alarm() -> None:
    for seed in range(3):
        trials, bad = generate_counts(np.random.default_rng(seed))
        assert [e for e in run_counts(trials, bad) if e.state == "open"] == []


def test_spike_fires_within_five_minutes_and_resolves() -> None:
    delays, early = [], 0
    for seed in range(8):
        rng = np.random.default_rng(1000 + seed)
        onset = int(rng.integers(2000, 9000))
        trials, bad = generate_counts(rng, onset=onset, spike_rate=0.10, duration=60)
        events = run_counts(trials, bad)
        early += len([e for e in events if e.state == "open" and e.ts <= onset * 60])
        opened = [e for e in events if e.state == "open" and e.ts > onset * 60]
        assert len(opened) == 1, events
        delay_min = (opened[0].ts - onset * 60) / 60
        assert 0 < delay_min <= 5
        delays.append(delay_min)
        resolved = [e for e in events if e.state == "resolved" and e.ts > opened[0].ts]
        assert resolved and resolved[0].ts > (onset + 60) * 60
        assert opened[0].event == "incident" and opened[0].provider == "gmail"
        assert opened[0].pool == "pool-a" and "deferral spike" in (opened[0].reason or "")
    assert np.median(delays) <= 3
    assert early <= 1  # about 0.1 false alarms per week: at most one in these 8 weeks


def test_low_volume_does_not_fire() -> None:
    rng = np.random.default_rng(7)
    trials, bad = generate_counts(rng, volume=3.0, onset=3000, spike_rate=0.3)
    opened = [e for e in run_counts(trials, bad) if e.state == "open"]
    # 3 per minute: 5-minute volume stays under 50, so the detector waits for evidence
    assert all(e.ts >= 3000 * 60 for e in opened)


def test_detect_frame_end_to_end_per_provider_and_pool() -> None:
    rng = np.random.default_rng(3)
    t0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    rows: list[Event] = []
    onset = 240  # minutes
    for minute in range(360):
        for provider, pool in (("gmail", "a"), ("yahoo", "b")):
            n = int(rng.poisson(40))
            p = 0.25 if (provider == "yahoo" and minute >= onset) else 0.02
            bad = int(rng.binomial(n, p))
            for i in range(n):
                rows.append(Event(ts=t0 + minute * 60 + i * 0.5, source="sim", run_id="d",
                                  event="deferred" if i < bad else "delivered",
                                  provider=provider, pool=pool))
    incidents = detect_frame(events_frame(rows), source="sim")
    opened = [e for e in incidents if e.state == "open"]
    assert [(e.provider, e.pool) for e in opened] == [("yahoo", "b")]
    assert 0 < opened[0].ts - (t0 + onset * 60) <= 300
    frame = events_frame(incidents)
    assert frame["event"].to_list() == ["incident"] * len(incidents)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")


def _core_params() -> PolicyParams:
    lane = LaneSpec(name="transactional", weight=1, retry=RetrySpec(delays_s=(60.0,), jitter=0.0))
    return PolicyParams(
        version="detect-handoff", lanes={"transactional": lane},
        pools={"pool-a": PoolSpec(name="pool-a", source_ips=("127.0.0.2",)),
               "pool-b": PoolSpec(name="pool-b", source_ips=("127.0.0.3",))},
        providers={"gmail": ProviderProfile(
            name="gmail", domains=("gmail.com",),
            shaping=Shaping(messages_per_second=10, burst=10, max_connections=4,
                            max_messages_per_connection=50))},
        breaker=BreakerSpec(open_s=600.0),
    )


def test_detected_incident_drives_the_real_scheduler() -> None:
    rng = np.random.default_rng(11)
    onset = 3000
    trials, bad = generate_counts(rng, minutes=4000, onset=onset, spike_rate=0.10)
    events = run_counts(trials, bad)  # detector series: provider gmail, pool pool-a
    opened = next(e for e in events if e.state == "open")
    signal = incident_signal(opened)
    assert signal is not None
    assert (signal.kind, signal.pool, signal.provider) == ("incident", "pool-a", "gmail")
    sched = Scheduler(_core_params(), random.Random(0))
    sched.submit(1, lane="transactional", tenant="t", sending_domain="d.example",
                 provider="gmail", now=opened.ts - 1)
    decisions = sched.feedback(signal, now=opened.ts)
    assert sched.breaker_state("pool-a", "gmail") == "open"
    assert sched.factor("pool-a", "gmail") == 0.0
    assert sched.breaker_state("pool-b", "gmail") == "closed"  # only the detected path reacts
    assert any("deferral spike" in " ".join(getattr(d, "reasons", ())) for d in decisions)
    sent = sched.due(opened.ts + 1)  # the queued message leaves by the healthy pool only
    assert [(d.pool, d.ids) for d in sent] == [("pool-b", (1,))]
    resolved = [e for e in events if e.state == "resolved"]
    assert resolved and incident_signal(resolved[0]) is None


def test_incident_signal_refuses_what_the_core_cannot_act_on() -> None:
    with pytest.raises(InputError):
        incident_signal(Event(ts=1.0, event="deferred", source="sim", provider="gmail",
                              pool="a"))
    with pytest.raises(InputError):
        incident_signal(Event(ts=1.0, event="incident", source="sim", state="open",
                              provider="gmail"))


def test_baseline_forgets_a_noisy_start() -> None:
    # 30 warm-up minutes at 4 % then 3 hours at 2 %: each minute weighs the same at the start,
    # so after three 60-minute half-lives the baseline is near 2 %. (Summing the warm-up bins
    # into the exponential average gave them 30x weight: the baseline sat at 3.6 %.)
    cfg = DetectorConfig(half_life_bins=60.0)
    det = SpikeDetector("deferral", "gmail", "pool-a", cfg)
    for i in range(30):
        det.observe(i * 60.0, 100, 4)
    for i in range(30, 210):
        assert det.observe(i * 60.0, 100, 2) == []
    assert 0.02 <= det.baseline() < 0.023
