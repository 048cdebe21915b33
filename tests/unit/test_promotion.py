"""inboxlab promote: gates, staged advance, automatic rollback from warehouse data, audit."""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from engine.errors import StateError
from engine.eventio import read_events, write_events
from engine.rollout import read_record, record_path
from inboxlab.cli import app
from inboxlab.promotion import admit, advance, check, gates, status
from inboxlab.promotion.canary import BUDGETS, judge
from inboxlab.warehouse import ingest_run_dir, query
from sim.run import run_scenario
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "fixtures/policies/default-v1.toml"
START = dt.datetime(2026, 3, 10, 9, tzinfo=dt.UTC).timestamp()  # gmail-brownout's start


def _candidate(tmp: Path, version: str = "default-v1-tuned-1") -> Path:
    p = tmp / f"{version}.toml"
    p.write_text(DEFAULT.read_text().replace('version = "default-v1"', f'version = "{version}"'))
    return p


def _evaluation(ci: list[float], *, base: str = "default-v1", ok: bool = True,
                version: str = "default-v1-tuned-1") -> dict[str, Any]:
    return {"base": {"version": base}, "winner": {
        "version": version,
        "constraints": {"complaint_rate<0.0008": {"value": 0.0001, "bound": 0.0008,
                                                  "pass": ok}},
        "comparison": {"objective": {"metric": "throughput", "direction": "maximise",
                                     "unit": "per hour", "n": 24, "ci95": ci,
                                     "mean_diff": sum(ci) / 2, "base_mean": 2400.0,
                                     "base_per_unit": 100.0}}}}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxlab", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_gates_refuse_worse_and_unproven() -> None:
    assert gates.admit(_evaluation([2.0, 9.0]), "default-v1-tuned-1", "default-v1").admitted
    worse = gates.admit(_evaluation([-9.0, -2.0]), "default-v1-tuned-1", "default-v1")
    assert not worse.admitted and "does not show" in worse.reasons[0]
    straddle = _evaluation([-0.5, 4.0])
    assert not gates.admit(straddle, "default-v1-tuned-1", "default-v1").admitted
    assert gates.admit(straddle, "default-v1-tuned-1", "default-v1",
                       allow_noninferior=True).admitted  # -0.5 within 1 % of 100/h
    assert not gates.admit(_evaluation([-5.0, 4.0]), "default-v1-tuned-1", "default-v1",
                           allow_noninferior=True).admitted
    failed = gates.admit(_evaluation([2.0, 9.0], ok=False), "default-v1-tuned-1", "default-v1")
    assert any("constraints failed" in r for r in failed.reasons)
    other = gates.admit(_evaluation([2.0, 9.0], base="x-v1"), "default-v1-tuned-1", "default-v1")
    assert any("pool runs 'default-v1'" in r for r in other.reasons)
    minimise = copy.deepcopy(_evaluation([-9.0, -2.0]))
    minimise["winner"]["comparison"]["objective"]["direction"] = "minimise"
    assert gates.admit(minimise, "default-v1-tuned-1", "default-v1").admitted


def test_refused_admission_is_audited(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cand = _candidate(tmp_path)
    with pytest.raises(StateError, match="refused"):
        admit(home, "mkt-b", cand, _evaluation([-9.0, -2.0]), current=DEFAULT, actor="ann")
    assert read_record(record_path(home, "mkt-b")) is None  # nothing rolled out
    rows = query(home, "SELECT state, pool, policy_version, reason FROM events "
                       "WHERE event = 'promotion'").to_dicts()
    assert rows[0]["state"] == "refused" and rows[0]["policy_version"] == "default-v1-tuned-1"


def test_staged_advance_to_promoted_with_complete_audit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cand = _candidate(tmp_path)
    admit(home, "mkt-b", cand, _evaluation([2.0, 9.0]), current=DEFAULT, actor="ann",
          now=START)
    seen = [read_record(record_path(home, "mkt-b")).stage_percent]  # type: ignore[union-attr]
    for i in range(4):
        advance(home, "mkt-b", actor="bob", reason=f"looks good {i}", now=START + i + 1)
        rec = read_record(record_path(home, "mkt-b"))
        assert rec is not None
        seen.append(rec.stage_percent)
    assert seen == [1.0, 10.0, 25.0, 50.0, 100.0]
    assert rec.state == "promoted" and rec.current_version == "default-v1-tuned-1"
    assert rec.candidate_version is None
    with pytest.raises(StateError):
        advance(home, "mkt-b", now=START + 9)
    st = status(home, "mkt-b")
    assert [a["state"] for a in st["audit"]] == ["stage-1", "stage-10", "stage-25", "stage-50",
                                                 "promoted"]
    for a in st["audit"]:
        assert a["actor"] in ("ann", "bob") and a["at"] >= START and a["reason"]
        assert "from" in a["evidence"]
    assert st["audit"][0]["evidence"]["gates"]["verdict"] == "superior"
    ev = query(home, "SELECT state, run_id, detail FROM events WHERE event = 'promotion' "
                     "ORDER BY seq")
    assert ev["state"].to_list() == [a["state"] for a in st["audit"]]
    assert ev["run_id"].n_unique() == 5
    assert json.loads(ev["detail"][1])["actor"] == "bob"


def _arm(tmp: Path, home: Path, name: str, policy: Path, incident: bool) -> None:
    """A real sim run of one arm, ingested into the warehouse under its own run id."""
    over = {} if incident else {"incidents": []}
    sc = load_scenario("gmail-brownout", scale=0.01, overrides=over)
    run_scenario(sc, 3, tmp / f"raw-{name}", policy=policy)
    frame = read_events(tmp / f"raw-{name}" / "events.parquet").with_columns(
        pl.lit(f"arm-{name}").alias("run_id"))
    write_events(frame, tmp / name / "events.parquet")
    ingest_run_dir(tmp / name, home)


@pytest.fixture(scope="module")
def arms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("arms")
    home = tmp / "home"
    cand = _candidate(tmp)
    _arm(tmp, home, "control", DEFAULT, incident=False)
    _arm(tmp, home, "canary", cand, incident=True)
    return home, cand


def test_check_rolls_back_when_the_deferral_budget_is_spent(arms: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    src_home, cand = arms
    home = tmp_path / "home"
    shutil.copytree(src_home, home)
    admit(home, "mkt-b", cand, _evaluation([2.0, 9.0]), current=DEFAULT, actor="ann",
          now=START - 60)
    res = check(home, "mkt-b", actor="robot", now=START + 86400)
    assert res["verdict"] == "rollback", res
    r = res["evidence"]["rates"]["deferral_rate"]
    assert r["spent"] and r["canary"] - r["control"] > 0.02
    rec = read_record(record_path(home, "mkt-b"))
    assert rec is not None and rec.state == "rolled_back" and rec.canary_share == 0.0
    last = status(home, "mkt-b")["audit"][-1]
    assert last["actor"] == "robot" and last["state"] == "rolled_back"
    assert last["evidence"]["canary"]["deferred"] > last["evidence"]["control"]["deferred"]
    assert "deferral_rate" in last["reason"]


def test_check_advances_when_the_arms_match(arms: tuple[Path, Path], tmp_path: Path) -> None:
    src_home, _cand = arms
    home = tmp_path / "home"
    shutil.copytree(src_home, home)
    # the control arm against itself, relabelled: same traffic, intact budgets
    same = tmp_path / "same.toml"
    same.write_text(DEFAULT.read_text())
    frame = query(home, "SELECT * FROM events WHERE run_id = 'arm-control'").with_columns(
        pl.lit("arm-twin").alias("run_id"), pl.lit("default-v1-twin").alias("policy_version"))
    write_events(frame, tmp_path / "twin" / "events.parquet")
    ingest_run_dir(tmp_path / "twin", home)
    twin = _candidate(tmp_path, "default-v1-twin")
    admit(home, "mkt-b", twin, _evaluation([2.0, 9.0], version="default-v1-twin"),
          current=DEFAULT, now=START - 60)
    res = check(home, "mkt-b", now=START + 86400)
    assert res["verdict"] == "advance", res
    assert read_record(record_path(home, "mkt-b")).stage_percent == 10.0  # type: ignore[union-attr]


def test_complaint_budget_rule() -> None:
    control = {"delivered": 20000, "deferred": 100, "bounced": 40, "complaints": 6}
    worse = {"delivered": 20000, "deferred": 100, "bounced": 40, "complaints": 40}
    v = judge(worse, control)
    assert v.action == "rollback" and v.evidence["rates"]["complaint_rate"]["spent"]
    noisy = {"delivered": 1000, "deferred": 5, "bounced": 2, "complaints": 1}
    v = judge(noisy, control)  # 0.1 % on 1,000 vs 0.03 %: over budget, not significant
    assert v.action == "advance" and v.evidence["rates"]["complaint_rate"]["excess"] > 0.0005
    assert judge({"delivered": 50, "deferred": 0, "bounced": 0, "complaints": 0},
                 control).action == "hold"


def test_promote_cli_status_and_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cand = _candidate(tmp_path)
    (tmp_path / "evaluation.json").write_text(json.dumps(_evaluation([2.0, 9.0])))
    r = CliRunner()
    res = _cli("promote", "status", "--pool", "mkt-b", "--home", str(home))
    assert res.returncode != 0 and "no promotion record" in res.stderr
    assert res.stderr.startswith("inboxlab: error:") and len(res.stderr.splitlines()) == 1
    res = r.invoke(app, ["promote", "admit", str(cand), "--pool", "mkt-b", "--home", str(home),
                         "--current", str(DEFAULT), "--actor", "cli"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["promote", "rollback", "--pool", "mkt-b", "--home", str(home),
                         "--reason", "changed my mind"])
    assert res.exit_code == 0 and "rolled_back" in res.output
    res = _cli("promote", "advance", "--pool", "mkt-b", "--home", str(home))
    assert res.returncode != 0 and "cannot advance" in res.stderr
    assert "Traceback" not in res.stderr
    res = r.invoke(app, ["promote", "status", "--pool", "mkt-b", "--home", str(home), "--json"])
    st = json.loads(res.output)
    assert [a["action"] for a in st["audit"]] == ["admit", "rollback"]
    assert st["audit"][1]["reason"] == "changed my mind"


def _live(home: Path, rows: list[tuple[str, str, int]], t0: float) -> None:
    """Declared engine outbox rows (version, event, how many) for pool mkt-b, into ``home``."""
    from engine.events import Event
    from inboxlab.warehouse.store import ingest_outbox

    events, seq = [], 0
    for version, event, n in rows:
        for _ in range(n):
            seq += 1
            events.append(Event(ts=t0 + seq, event=event, source="live", seq=seq, pool="mkt-b",
                                message_id=f"m{seq}", policy_version=version,
                                lane="lifecycle"))
    ingest_outbox(events, home)


def test_arm_counts_see_dropped_mail(tmp_path: Path) -> None:
    from inboxlab.promotion.canary import arm_counts

    home = tmp_path / "home"
    _live(home, [("v1", "delivered", 90), ("v1", "deferred", 10), ("v1", "expired", 1),
                 ("v2", "delivered", 20), ("v2", "deferred", 10), ("v2", "dead_lettered", 7),
                 ("v2", "expired", 3), ("v3", "dead_lettered", 5)], START)
    got = arm_counts(home, "mkt-b", ["v1", "v2", "v9"], START)
    assert got["v1"] == {"delivered": 90, "deferred": 10, "bounced": 0, "complaints": 0,
                         "dropped": 1}
    assert got["v2"]["dropped"] == 10 and got["v2"]["delivered"] == 20
    assert got["v9"] == dict.fromkeys(got["v1"], 0)  # no traffic: zeros, not missing
    # only events at or after ``since`` count (the first 100 rows are earlier)
    assert arm_counts(home, "mkt-b", ["v1"], START + 100.5)["v1"]["dropped"] == 1
    assert arm_counts(home, "mkt-b", ["v1"], START + 100.5)["v1"]["delivered"] == 0


def test_drop_budget_rolls_back_a_candidate_that_gives_up() -> None:
    # the same deferrals on both arms (the receiver greylists both), but the candidate stops
    # retrying: without the drop budget it would look better than the control
    control = {"delivered": 180, "deferred": 120, "bounced": 0, "complaints": 0, "dropped": 0}
    quitter = {"delivered": 60, "deferred": 40, "bounced": 0, "complaints": 0, "dropped": 40}
    without = {k: v for k, v in BUDGETS.items() if k != "drop_rate"}
    assert judge(quitter, control, min_outcomes=50, budgets=without).action == "advance"
    v = judge(quitter, control, min_outcomes=50)
    assert v.action == "rollback" and "drop_rate" in v.reason, v
    r = v.evidence["rates"]["drop_rate"]
    assert r["spent"] and r["canary"] == pytest.approx(40 / 100) and r["control"] == 0.0
    # noise never rolls back: 2 % dropped of 100 against 0.67 % of 300 is over budget, not
    # significant (z ~1.16)
    calm = {"delivered": 298, "deferred": 0, "bounced": 0, "complaints": 0, "dropped": 2}
    noisy = {"delivered": 98, "deferred": 0, "bounced": 0, "complaints": 0, "dropped": 2}
    v = judge(noisy, calm, min_outcomes=50)
    assert v.action == "advance" and not v.evidence["rates"]["drop_rate"]["spent"]
    assert v.evidence["rates"]["drop_rate"]["excess"] > BUDGETS["drop_rate"]
    # counts without the key (older callers) read as nothing dropped
    old = {k: v for k, v in control.items() if k != "dropped"}
    assert judge(old, control, min_outcomes=50).evidence["rates"]["drop_rate"]["canary"] == 0.0
