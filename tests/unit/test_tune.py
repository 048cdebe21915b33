"""inboxlab tune: space files, constraints, and a tiny real search through the simulation."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.config.loader import load_policy
from engine.errors import ConfigError, InputError
from inboxlab.cli import app
from inboxlab.tuning import load_space, parse_constraints
from inboxlab.tuning.space import apply, dump_toml, latin_hypercube
from sim.run import run_scenario
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "fixtures/policies/warmup-conservative-v1.toml"
SPACE = ROOT / "fixtures/tuning/warmup-ramp.toml"


def test_constraints_parse_and_hold() -> None:
    cs = parse_constraints("complaint_rate<0.0008, tx_p95_accept_s<30,"
                           "automation_suspensions<=baseline,delivered>=baseline*1.1")
    assert [c.metric for c in cs] == ["complaint_rate", "tx_p95_accept_s",
                                      "automation_suspensions", "delivered"]
    assert cs[0].holds(0.0007, None) and not cs[0].holds(0.0008, None)
    assert cs[2].holds(3, 3) and not cs[2].holds(4, 3)
    assert cs[3].holds(111, 100) and not cs[3].holds(109, 100)
    for bad in ("complaint_rate=1", "nosuch<1", "delivered<lots"):
        with pytest.raises(InputError):
            parse_constraints(bad)


def test_space_checks_and_round_trip(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text('[params."breaker.bounce_review"]\nlow = 0.5\nhigh = 0.1\n')
    with pytest.raises(ConfigError, match="below low"):
        load_space(bad)
    space = load_space(SPACE)
    base = tomllib.loads(BASE.read_text())
    point = space.point(latin_hypercube(1, len(space.params), np.random.default_rng(3))[0])
    data = apply(base, point)
    out = tmp_path / "p.toml"
    out.write_text(dump_toml(data, "header"))
    assert tomllib.loads(out.read_text()) == data  # the writer round-trips
    load_policy(out)  # and the result is a valid policy
    caps = data["warmup"]["conservative"]["caps"]["*"]
    assert max(caps) <= point["warmup.conservative.caps_max"]


def test_lhs_is_stratified_and_seeded() -> None:
    a = latin_hypercube(8, 3, np.random.default_rng(5))
    assert np.array_equal(a, latin_hypercube(8, 3, np.random.default_rng(5)))
    for d in range(3):
        assert sorted((a[:, d] * 8).astype(int)) == list(range(8))


def test_tune_cli_tiny_real_search(tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    res = CliRunner().invoke(app, [
        "tune", "warmup-30d", "--space", str(SPACE), "--base", str(BASE), "--out", str(out),
        "--objective", "throughput", "--budget", "3", "--scale", "0.01", "--set",
        "duration=1d", "--constraints", "complaint_rate<0.01,automation_suspensions<=baseline",
        "--seed", "1", "--actor", "tester"])
    assert res.exit_code == 0, res.output
    ev = json.loads((out / "evaluation.json").read_text())
    assert len(ev["candidates"]) == 3 and ev["seeds"] == [1]
    # common random numbers: the base's figures are exactly a plain run of the same seed
    sc = load_scenario("warmup-30d", scale=0.01, overrides={"duration": "1d"})
    plain = run_scenario(sc, 1, None, policy=BASE, keep_events=False)
    assert ev["base"]["metrics"]["delivered"] == plain["delivered"]
    win = ev["winner"]
    assert win is not None and win["version"] == "warmup-conservative-v1-tuned-1"
    assert all(c["pass"] for c in win["constraints"].values())
    assert win["metrics"]["throughput"] > ev["base"]["metrics"]["throughput"]
    assert win["metrics"]["throughput"] == max(
        c["metrics"]["throughput"] for c in ev["candidates"] if c["feasible"])
    comp = win["comparison"]["objective"]
    assert comp["ci95"][0] <= comp["mean_diff"] <= comp["ci95"][1]
    policy = out / "warmup-conservative-v1-tuned-1.toml"
    text = policy.read_text()
    assert text.startswith("# inboxlab policy warmup-conservative-v1-tuned-1: tuned from")
    model = load_policy(policy)
    assert model.version == "warmup-conservative-v1-tuned-1"
    # the written policy reproduces the winner's figures in a fresh run
    again = run_scenario(sc, 1, None, policy=policy, keep_events=False)
    assert again["delivered"] == win["metrics"]["delivered"]


def test_tune_cli_bad_input_one_line(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "inboxlab", "tune", "warmup-30d", "--space",
                          str(SPACE), "--base", str(BASE), "--out", str(tmp_path),
                          "--constraints", "x<1"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("inboxlab: error:") and "unknown metric 'x'" in res.stderr
