"""The SimPy world: determinism, the real Scheduler, scenario behaviour, CLI and bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import engine.policy
import engine.policy.scheduler
from engine.errors import ConfigError
from sim.blocklist import Blocklist
from sim.run import run_scenario
from sim.scenario import load_scenario
from sim.world import World

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "fixtures" / "policies"


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run_scenario("worst-night", 7, a, scale=0.004)
    run_scenario("worst-night", 7, b, scale=0.004)
    assert (a / "events.parquet").read_bytes() == (b / "events.parquet").read_bytes()
    c = tmp_path / "c"
    run_scenario("worst-night", 8, c, scale=0.004)
    assert (a / "events.parquet").read_bytes() != (c / "events.parquet").read_bytes()


def test_world_drives_the_engine_scheduler() -> None:
    world = World(load_scenario("worst-night", scale=0.001), 1)
    assert type(world.scheduler) is engine.policy.scheduler.Scheduler
    assert type(world.scheduler) is engine.policy.Scheduler


def test_events_schema_and_run_columns(tmp_path: Path) -> None:
    run_scenario("worst-night", 2, tmp_path, scale=0.004)
    ev = pl.read_parquet(tmp_path / "events.parquet")
    assert set(ev["source"].unique()) == {"sim"}
    assert set(ev["scenario"].unique()) == {"worst-night"}
    assert set(ev["seed"].unique()) == {2}
    assert set(ev["policy_version"].unique()) == {"default-v1"}
    assert ev["seq"].to_list() == list(range(ev.height))
    summary = json.loads((tmp_path / "summary.json").read_text())
    enq = ev.filter(pl.col("event") == "enqueued").height
    assert summary["messages"] == enq
    assert summary["delivered"] == ev.filter(pl.col("event") == "delivered").height


def test_worst_night_lanes_keep_resets_fast() -> None:
    s = run_scenario("worst-night", 1, None, scale=0.02, keep_events=False)
    tx, lc = s["time_to_accept"]["transactional"], s["time_to_accept"]["lifecycle"]
    assert tx["n"] > 300 and lc["n"] > 5000
    assert tx["p95_s"] < 30.0
    assert lc["p95_s"] > 20 * tx["p95_s"]  # the blast itself waited; resets did not


def test_trap_list_trips_breaker_and_draws_throttling(tmp_path: Path) -> None:
    s = run_scenario("trap-list", 1, tmp_path, scale=0.05)
    ev = pl.read_parquet(tmp_path / "events.parquet")
    assert s["trap_hits"] >= 10  # the shared DNSBL's threshold
    assert s["complaint_rate"] > 0.005  # above the SES pause threshold
    opened = ev.filter((pl.col("event") == "breaker") & (pl.col("state") == "open"))
    assert opened.height > 0
    assert opened["reason"].str.contains("(?i)complaint|bounce|DNSBL").all()
    assert sum(v for k, v in s["replies"].items() if " 5.7." in k) > 0  # reputation blocks
    listed = ev.filter((pl.col("event") == "incident") & pl.col("reason").str.contains("listed"))
    assert listed.height > 0  # a DNSBL listing of the pool's /24
    assert set(listed["reason"].str.split(" ").list.first()) == {"127.0.2.0/24"}
    first_listing = listed["ts"].min()
    hits = ev.filter(pl.col("event") == "trap_hit")
    assert hits.filter(pl.col("ts") <= first_listing).height >= 10


def test_shared_blocklist_lists_after_threshold_within_window() -> None:
    world = World(load_scenario("trap-list", scale=0.001), 1)
    bl = Blocklist(3, 100.0, 500.0)
    nb = "127.0.2.0/24"
    assert bl.hit(nb, 0.0, world.models) is None
    assert bl.hit(nb, 150.0, world.models) is None  # the first hit has left the window
    assert bl.hit(nb, 160.0, world.models) is None
    assert bl.hit(nb, 170.0, world.models) == 670.0
    assert all(m.listed_until[nb] == 670.0 for m in world.models.values())
    assert bl.hit(nb, 180.0, world.models) is None  # already listed


def test_brownout_flattening_reduces_deferrals() -> None:
    # the seed's experiment: a sender that pushes its blast out at once (mkt-b's shaping
    # lifted) against the same blast flattened over 90 minutes, through a Gmail brownout
    unshaped = ROOT / "fixtures" / "replay" / "unshaped-mkt-test.toml"
    bursty = run_scenario(load_scenario("gmail-brownout", scale=0.05), 3, None,
                          policy=unshaped, keep_events=False)
    flat = run_scenario(load_scenario("gmail-brownout", scale=0.05,
                                      overrides={"traffic.1.spread": "90m"}), 3, None,
                        policy=unshaped, keep_events=False)
    assert bursty["messages"] == flat["messages"]
    assert flat["deferred"] <= 0.6 * bursty["deferred"]  # a cut of at least 40 %
    brownout = "gmail 421 4.3.0"
    assert flat["replies"].get(brownout, 0) < 0.5 * bursty["replies"][brownout]
    assert flat["time_to_accept"]["transactional"]["n"] > 100
    # the engine's own token buckets already pace the blast: default-v1 defers far less
    # than the unshaped sender even without flattening at the source
    shaped = run_scenario(load_scenario("gmail-brownout", scale=0.05), 3, None,
                          keep_events=False)
    assert shaped["deferred"] <= 0.2 * bursty["deferred"]


def test_warmup_conservative_vs_aggressive() -> None:
    sc = load_scenario("warmup-30d", scale=0.5, overrides={"duration": "1d"})
    cons = run_scenario(sc, 1, None, policy=POLICIES / "warmup-conservative-v1.toml",
                        keep_events=False)
    aggr = run_scenario(sc, 1, None, policy=POLICIES / "warmup-aggressive-v1.toml",
                        keep_events=False)
    assert cons["complaint_rate"] < 0.0008
    aggr_4728 = aggr["replies"].get("gmail 421 4.7.28", 0)
    assert aggr_4728 > 10 * max(1, cons["replies"].get("gmail 421 4.7.28", 0))
    assert aggr["warmup"]["delivered_on_warming_pools"] > \
        cons["warmup"]["delivered_on_warming_pools"]


def test_bad_scenario_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    src = (ROOT / "fixtures" / "scenarios" / "worst-night.toml").read_text()
    bad.write_text(src.replace('lab = "labs/sim-lab.toml"',
                               f'lab = "{ROOT}/fixtures/scenarios/labs/sim-lab.toml"')
                   .replace('policy = "../policies/default-v1.toml"',
                            f'policy = "{POLICIES}/default-v1.toml"')
                   .replace("size = 400000", "size = -3"))
    with pytest.raises(ConfigError) as exc:
        load_scenario(bad)
    assert exc.value.file == str(bad) and exc.value.key == "traffic[1].size"
    bad.write_text("name = [")
    with pytest.raises(ConfigError):
        load_scenario(bad)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_cli_run_compare_and_errors(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = _cli("sim", "run", "worst-night", "--seed", "4", "--scale", "0.003", "--out", str(a))
    assert r.returncode == 0, r.stderr
    assert (a / "events.parquet").is_file() and (a / "summary.json").is_file()
    r = _cli("sim", "run", "worst-night", "--seed", "5", "--scale", "0.003", "--out", str(b))
    assert r.returncode == 0, r.stderr
    r = _cli("sim", "compare", str(a), str(b))
    assert r.returncode == 0, r.stderr
    assert "delivered" in r.stdout and "95% CI" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nlab = "nowhere.toml"\n')
    r = _cli("sim", "run", str(bad), "--out", str(tmp_path / "c"))
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "inboxlab: error:" in r.stderr and "lab" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_sweep(tmp_path: Path) -> None:
    r = _cli("sim", "sweep", "worst-night", "--grid", "seed=1,2", "--scale", "0.002",
             "--workers", "2", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    pts = pl.read_csv(tmp_path / "points.csv")
    assert pts.height == 2 and set(pts["seed"]) == {1, 2}
    assert pl.read_parquet(tmp_path / "points.parquet").height == 2
