"""Replay re-sends a recorded arrival stream through the simulation under a policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.errors import InputError
from engine.eventio import read_events
from sim.replay import arrivals_from_events, recorded_lab, replay
from sim.run import run_scenario
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
# default-v1 with pool mkt-b (the prospecting route of the sim lab) shaped 10x slower
STRICT = ROOT / "fixtures" / "replay" / "default-v1-mkt-slow.toml"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec")
    sc = load_scenario("cold-outreach", scale=0.05, overrides={"duration": "1d"})
    run_scenario(sc, 3, out)
    return sc, read_events(out / "events.parquet")


def _arrival_counts(f: pl.DataFrame) -> dict[tuple[str, str], int]:
    e = f.filter(pl.col("event") == "enqueued").group_by("lane", "provider").len()
    return {(r[0], r[1]): r[2] for r in e.iter_rows()}


def test_replay_under_own_policy_reproduces_arrivals(recorded, tmp_path):
    sc, f = recorded
    s = replay(f, sc.policy, tmp_path, seed=3, lab=sc.lab)
    g = read_events(tmp_path / "events.parquet")
    assert (tmp_path / "summary.json").is_file() and s["replay"]["arrivals"] == s["messages"]
    assert _arrival_counts(g) == _arrival_counts(f) and sum(_arrival_counts(f).values()) > 50
    a = f.filter(pl.col("event") == "enqueued").sort("ts")["ts"].to_list()
    b = g.filter(pl.col("event") == "enqueued").sort("ts")["ts"].to_list()
    assert a == b  # recorded on minute slices, replayed on the same slices
    # the same recipients, so the models decide the same bounces
    assert s["bounced"] == sum(1 for x in f["event"].to_list() if x == "bounced")


def test_arrivals_fall_back_to_first_attempt(recorded):
    _, f = recorded
    no_enq = f.filter(pl.col("event") != "enqueued").with_columns(
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("enqueued_ts"))
    arr = arrivals_from_events(no_enq)
    first = no_enq.filter(pl.col("event").is_in(["delivered", "deferred", "bounced"])
                          ).group_by("message_id").agg(pl.col("ts").min())
    assert arr.height == first.height


def test_replay_bad_input(recorded, tmp_path):
    sc, f = recorded
    with pytest.raises(InputError, match="policy"):
        replay(f, tmp_path / "missing.toml", None, lab=sc.lab)
    with pytest.raises(InputError, match="no recorded arrivals"):
        replay(f.filter(pl.col("event") == "complaint").head(0), sc.policy, None, lab=sc.lab)
    bad = f.with_columns(pl.lit("bulk").alias("lane"))
    with pytest.raises(InputError, match="lanes"):
        replay(bad, sc.policy, None, lab=sc.lab)
    assert not any(Path(tmp_path).iterdir())


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A full-scale day of cold outreach: batches of 20-60 every 20 minutes, so a batch
    outruns a 10x slower pool bucket (4 IPs x burst 5) but not default-v1's (4 x 50)."""
    out = tmp_path_factory.mktemp("dense")
    sc = load_scenario("cold-outreach", scale=1.0, overrides={"duration": "1d"})
    run_scenario(sc, 5, out)
    return sc, out, read_events(out / "events.parquet")


def _p(summary: dict, q: str) -> float:
    return float(summary["time_to_accept"]["prospecting"][q])


def test_stricter_policy_increases_time_to_accept(dense, tmp_path):
    sc, _, f = dense
    own = replay(f, sc.policy, tmp_path / "own", seed=5)  # lab from the recorded scenario
    strict = replay(f, STRICT, tmp_path / "strict", seed=5)
    g_own = read_events(tmp_path / "own" / "events.parquet")
    g = read_events(tmp_path / "strict" / "events.parquet")
    # the policy is applied: the rows and the summary carry the stricter policy's version
    assert set(g["policy_version"].to_list()) == {"default-v1-mkt-slow"}
    assert strict["policy_version"] == "default-v1-mkt-slow"
    assert set(g_own["policy_version"].to_list()) == {"default-v1"}
    # the same arrivals either way
    assert _arrival_counts(g) == _arrival_counts(g_own) == _arrival_counts(f)
    # the slower pool makes messages wait; under default-v1 no batch waits at all
    assert _p(own, "p95_s") == 0.0
    assert _p(strict, "p95_s") > _p(own, "p95_s")
    waits = g.filter(pl.col("event") == "delivered").select(
        (pl.col("ts") - pl.col("enqueued_ts")).dt.total_seconds(fractional=True).alias("w"))
    assert (waits["w"] > 0).sum() > 0.05 * waits.height
    # every dispatch on mkt-b: the stricter shaping is on the path the replay used
    assert set(g.filter(pl.col("event") == "delivered")["pool"].to_list()) == {"mkt-b"}


def test_recorded_lab_is_the_scenarios(dense):
    sc, _, f = dense
    assert recorded_lab(f) == sc.lab
    assert recorded_lab(f.with_columns(pl.lit("replay").alias("scenario"))) is None
    assert recorded_lab(f.drop("scenario")) is None


def test_cli_replay_through_entry_point(dense, tmp_path):
    _, rec_dir, f = dense
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "inboxlab", "sim", "replay", "--from", str(rec_dir),
           "--policy", str(STRICT), "--out", str(out), "--seed", "5"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "under default-v1-mkt-slow" in r.stdout and "Traceback" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    g = read_events(out / "events.parquet")
    assert summary["policy_version"] == "default-v1-mkt-slow"
    assert summary["messages"] == summary["replay"]["arrivals"] == sum(
        _arrival_counts(f).values())
    assert _arrival_counts(g) == _arrival_counts(f)
    assert set(g["policy_version"].to_list()) == {"default-v1-mkt-slow"}
    # bad input: one line, non-zero, nothing written
    bad = subprocess.run([*cmd[:7], str(tmp_path / "nope.toml"), "--out", str(tmp_path / "x")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = [ln for ln in (bad.stderr + bad.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("inboxlab: error:") and "policy" in lines[0]
    assert not (tmp_path / "x").exists()
