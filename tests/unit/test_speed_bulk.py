"""The world's bulk paths (expiry runs from ``tick_batched``, engagement totals per drain,
cached per-dispatch glue) count exactly what the event-by-event path records.

A run without events takes the bulk tallies; the same seed with events takes the
per-row path; every figure of the summary must agree, and the event frame's rows must
match the counts (expired per provider, engagements, delivered)."""

from __future__ import annotations

import polars as pl
import pytest

from engine.policy.classify import Classifier
from sim.run import run_scenario
from sim.scenario import load_scenario
from sim.world import World


@pytest.fixture(scope="module")
def runs() -> tuple[World, World, pl.DataFrame]:
    sc = load_scenario("warmup-30d", scale=0.01)
    quiet = World(sc, 11, keep_events=False)
    quiet.run()
    loud = World(load_scenario("warmup-30d", scale=0.01), 11)
    frame = loud.run()
    return quiet, loud, frame


def test_bulk_tallies_equal_the_event_path(runs: tuple[World, World, pl.DataFrame]) -> None:
    quiet, loud, _ = runs
    drop = ("breaker_opened",)  # read from the event columns, so None without events
    assert {k: v for k, v in quiet.summary().items() if k not in drop} == \
        {k: v for k, v in loud.summary().items() if k not in drop}
    assert quiet.counts == loud.counts
    assert quiet.codes == loud.codes
    assert quiet.events.n == loud.events.n  # rows the quiet run would have written


def test_expiries_and_engagements_in_the_frame_match_the_counts(
        runs: tuple[World, World, pl.DataFrame]) -> None:
    _, loud, frame = runs
    expired = sum(c.get("expired", 0) for c in loud.counts.values())
    assert expired > 100  # warmup caps make this scenario expire mail in bulk
    per_prov = dict(frame.filter(pl.col("event") == "expired")
                    .group_by("provider").len().iter_rows())
    assert per_prov == {p: c["expired"] for p, c in loud.counts.items() if c.get("expired")}
    rows = frame.filter(pl.col("event") == "expired")
    assert rows["message_id"].n_unique() == rows.height  # each message expires once
    queued = rows.filter(pl.col("state") == "queued")  # found by the wheel or a pop
    assert queued.height > 0
    assert queued["reason"].str.starts_with("TTL reached at ").all()
    assert (rows["ts"] >= rows["enqueued_ts"]).all()
    eng = frame.filter(pl.col("event") == "engagement").height
    assert eng == sum(c.get("engagements", 0) for c in loud.counts.values()) > 0


def test_bulk_run_is_deterministic_per_seed() -> None:
    a = run_scenario("warmup-30d", 4, None, scale=0.01, keep_events=False)
    b = run_scenario("warmup-30d", 4, None, scale=0.01, keep_events=False)
    c = run_scenario("warmup-30d", 5, None, scale=0.01, keep_events=False)
    assert a == b
    assert a["providers"] != c["providers"]


def test_memoised_kinds_and_verdicts_are_the_models_and_classifiers(
        runs: tuple[World, World, pl.DataFrame]) -> None:
    """The world's per-recipient-number kind codes answer what the provider model says of
    each address, live or decayed; the classifier's verdict memo what it says unmemoised."""
    quiet, _, _ = runs
    ids = list(range(len(quiet.m_rcpt)))
    by_model: dict[str, list[int]] = {}
    for mid in ids:
        by_model.setdefault(quiet.prov_names[quiet.m_provk[mid]], []).append(mid)
    end = quiet.start + quiet.scenario.duration_s
    checked = 0
    for name, mids in by_model.items():
        model = quiet.models[name]
        for now in (quiet.start, end + 400 * 86400.0):  # the second: every list has decayed
            # twice over: the first call fills codes the run had not yet, the second reads
            for _ in range(2):
                rcpts, kinds = quiet._recipients(mids, now, model)
                assert kinds == [model.mailbox(a) for a in rcpts]
                checked += len(mids)
    assert checked == 4 * len(ids) > 0
    decayed = quiet._recipients(by_model["gmail"], end + 400 * 86400.0, quiet.models["gmail"])
    assert "unknown" in decayed[1]  # decayed mailboxes answer 5.1.1
    memo = quiet.classifier._verdicts
    assert memo  # the run classified replies through the classifier's memo
    fresh = Classifier(quiet.params.providers)
    for (provider, code, text, enhanced), verdict in memo.items():
        assert quiet.classifier.classify(provider, code, text, enhanced) is verdict
        assert verdict == fresh._classify(provider, code, text, enhanced)
