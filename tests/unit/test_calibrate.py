"""Calibration recovers known model parameters from traffic the real model generated."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from engine.errors import InputError
from sim.calib_data import ACCEPTED, GREYLIST, RATE, recording_from_events, split
from sim.calib_driver import drive, synthesize
from sim.calibrate import calibrate_holdout, render, values_of, with_values, write_model
from sim.providers import load_params

START = 1772409600.0  # 2026-03-02T00:00Z
TRUTH = {"greylist_delay_s": 420.0, "rate_limit": 70.0, "rate_window_s": 90.0,
         "complaint_delay_median_s": 10800.0, "complaint_delay_sigma": 0.6}


@pytest.fixture(scope="module")
def base():
    # complaints do not move reputation here, so tiers stay put and every block is identifiable
    return load_params("orange", overrides={"reputation": {"complaint_penalty": 0.0}})


@pytest.fixture(scope="module")
def recorded(base):
    rng = np.random.default_rng(1)
    enq = np.sort(np.concatenate([START + k * 17280.0 + rng.uniform(0, 60, 350)
                                  for k in range(10)]))
    truth = with_values(base, TRUTH)
    return synthesize(provider="orange", params=truth, enq=enq, ips=("127.0.0.2",), seed=3,
                      rcpt_prefixes=(("complain", 0.3),))


def test_recording_reads_the_generated_events(base, recorded):
    rec = recording_from_events(recorded, "orange", base)
    assert rec.n_messages == 3500
    counts = np.bincount(rec.att_out, minlength=5)
    assert counts[ACCEPTED] > 3400 and counts[GREYLIST] > 3000 and counts[RATE] > 0
    assert np.isfinite(rec.complaint_delay).sum() > 600
    fit, held = split(rec, "day")
    assert fit.n_messages + held.n_messages == rec.n_messages and held.n_messages > 0


def test_drive_is_deterministic_and_truth_fits_better_than_defaults(base, recorded):
    rec = recording_from_events(recorded, "orange", base)
    a = drive(rec, with_values(base, TRUTH), 5)
    b = drive(rec, with_values(base, TRUTH), 5)
    assert np.array_equal(a.att_out, b.att_out) and np.array_equal(a.att_ts, b.att_ts)
    from sim.calibrate import evaluate
    assert evaluate(rec, with_values(base, TRUTH))["total"] < 0.5 * evaluate(rec, base)["total"]


def test_calibration_recovers_known_parameters_within_10_percent(base, recorded, tmp_path):
    rec = recording_from_events(recorded, "orange", base)
    cal = calibrate_holdout(rec, base, "day", seed=11, maxiter=5)
    got = cal.values()
    assert set(got) == set(TRUTH)
    for name, true in TRUTH.items():
        assert values_of(base)[name] != true  # started away from the truth
        assert abs(got[name] - true) / true < 0.10, (name, got[name], true)
    # goodness of fit on the held-out day: the calibrated model beats the uncalibrated one
    assert cal.holdout_distance["total"] < 0.5 * cal.baseline_distance["total"]
    table = render(cal, TRUTH)
    assert "held out by day" in table and "rate_window_s" in table
    out = tmp_path / "orange-calibrated.toml"
    write_model(cal, out, "orange", "synthetic test traffic")
    text = out.read_text()
    assert text.startswith("# Calibrated model of orange") and "Held out by day" in text
    tomllib.loads(text)
    again = load_params(out)
    assert again.greylist_delay_s == pytest.approx(got["greylist_delay_s"], abs=1e-3)
    assert again.rate_window_s == pytest.approx(got["rate_window_s"], abs=1e-3)
    assert again.rate_limits["ip"][1] == round(got["rate_limit"])


def test_calibrate_refuses_a_recording_with_nothing_to_fit(base):
    quiet = synthesize(provider="orange", params=base, enq=START + np.arange(5) * 3600.0,
                       ips=("127.0.0.2",), seed=1)
    no_grey = load_params("orange", overrides={"greylist": {"enabled": False}})
    rec = recording_from_events(quiet, "orange", no_grey)
    with pytest.raises(InputError, match="nothing to calibrate"):
        calibrate_holdout(rec, no_grey, None)
    with pytest.raises(InputError, match="two days"):
        split(rec.subset(rec.enq < START + 7200), "day")
    with pytest.raises(InputError, match="no recorded delivery attempts"):
        recording_from_events(quiet, "gmail", load_params("gmail"))


def _app() -> typer.Typer:
    from inboxlab.commands.sim_lab import register_sim

    root, sim = typer.Typer(), typer.Typer()
    register_sim(sim)
    root.add_typer(sim, name="sim")
    return root


def test_cli_calibrate_bad_input_is_one_error(tmp_path):
    res = CliRunner().invoke(_app(), ["sim", "calibrate", "--from", str(tmp_path),
                                      "--provider", "orange", "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, InputError) and "events.parquet" in str(res.exception)
    assert not (tmp_path / "x").exists()


def test_entry_point_calibrate_bad_holdout(tmp_path):
    """Through the real entry point ``python -m inboxlab``."""
    r = subprocess.run([sys.executable, "-m", "inboxlab", "sim", "calibrate", "--from",
                        str(tmp_path), "--provider", "orange", "--out", str(tmp_path / "m"),
                        "--holdout", "week"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["inboxlab: error: --holdout must be day or ip, "
                                             "got 'week'"]


def test_cli_calibrate_writes_a_model(base, recorded, tmp_path):
    from engine.eventio import write_events

    write_events(recorded, tmp_path / "run" / "events.parquet")
    res = CliRunner().invoke(_app(), ["sim", "calibrate", "--from", str(tmp_path / "run"),
                                      "--provider", "orange", "--out", str(tmp_path / "o.toml"),
                                      "--maxiter", "2"])
    assert res.exit_code == 0, res.output
    assert "greylist_delay_s" in res.output
    assert load_params(tmp_path / "o.toml").name == "orange"
