"""Demo step 3: tune the warming pool's warmup policy in simulation and stage it as a canary.

Owns ``promote_warmup`` and the summary line of its outcome (``describe``). The step finds the
demo config's warming pool (the pool with a ``warmup_start``) and the policy it runs now (the
promotion record's current policy when an earlier run left one under HOME, else the
config's), runs ``inboxlab tune`` on common random numbers at a very small scale, then
``inboxlab promote admit`` the winner to the pool and ``promote advance`` it to the 10 %
canary stage. Every operation goes through the command line, so the audit trail and the
``promotion`` events in the warehouse are exactly what an operator's commands write. A canary
that an earlier demo run left on the pool is rolled back first (audited); a canary somebody
else started is left alone and the step is skipped. No winner, or a refusal by the gates, is a
legitimate outcome: reported, not raised. Reads the record and the audit trail through their
owners' functions; writes nothing of its own outside ``<run>/promotion`` and its log.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InputError

ACTOR = "inboxlab-demo"
SCENARIO = "warmup-30d"
# A tiny evaluation: one simulated day of the warmup scenario at 1 % of its volume, the base
# and two candidates on the same seed (common random numbers), a few seconds of CPU.
TUNE_ARGS = ("--objective", "throughput", "--budget", "2", "--scale", "0.01",
             "--set", "duration=1d")
# Gmail and Yahoo: keep the spam-complaint rate below 0.1 % (providers-and-standards.md,
# https://support.google.com/a/answer/81126); no more automation suspensions or deferrals
# than the policy the pool runs now.
CONSTRAINTS = "complaint_rate<0.001,automation_suspensions<=baseline,deferral_rate<=baseline+0.01"
STAGE_PERCENT = 10.0  # where the demo leaves the canary: visible, and far from 100 %


@dataclass(slots=True)
class PromotionOutcome:
    """What step 3 did: ``canary`` (admitted and advanced), ``refused`` (by the gates),
    ``no-winner`` (the search found nothing better) or ``skipped`` (someone else's canary)."""

    pool: str
    outcome: str
    message: str
    candidate: str | None = None
    current: str | None = None
    stage_percent: float = 0.0
    comparison: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # this run's audit entries


def warming_pool(lab_file: Path) -> tuple[str, Path]:
    """The demo config's warming pool and the policy file it is configured with."""
    from engine.config import load_config

    lab = load_config(lab_file)
    warming = sorted(n for n, p in lab.pools.items() if p.warmup_start is not None)
    if not warming:
        raise InputError(f"{lab_file}: no pool has a warmup_start, nothing to promote to")
    pool = warming[0]
    return pool, Path(lab.policy_for(pool).file).resolve()


def _call(args: list[str], log: Path) -> tuple[int, str]:
    """Run ``inboxlab ARGS``; both streams go to ``log``; returns (exit code, last line)."""
    from inboxlab.demo.procs import _tail, inboxlab_cmd

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        f.write(("$ inboxlab " + shlex.join(args) + "\n").encode())
        f.flush()
        rc = subprocess.run(inboxlab_cmd(*args), stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                            timeout=120, check=False).returncode
    return rc, _tail(log).removeprefix(": ")


def promote_warmup(home: Path, run_dir: Path, lab_file: Path, *, seed: int, run: str
                   ) -> PromotionOutcome:
    """Tune, admit and advance; see the module docstring. Raises ``InputError`` only when a
    command fails for a reason other than the gates (a bug or a broken install)."""
    from engine.rollout import read_record, record_path
    from inboxlab.promotion.audit import read_audit

    pool, configured = warming_pool(lab_file)
    log = run_dir / "logs" / "promotion.log"
    h = ["--home", str(home)]
    rec = read_record(record_path(home, pool))
    seen = len(read_audit(home, pool))  # the audit entries before this run's steps
    if rec is not None and rec.state == "canary":
        admits = [a for a in read_audit(home, pool) if a["action"] == "admit"]
        by = admits[-1]["actor"] if admits else "unknown"
        if by != ACTOR:
            return PromotionOutcome(pool, "skipped", f"{pool} already runs a canary of "
                                    f"{rec.candidate_version} started by {by}; the demo "
                                    "leaves it alone", rec.candidate_version,
                                    rec.current_version, rec.stage_percent)
        rc, last = _call(["promote", "rollback", "--pool", pool, *h, "--actor", ACTOR,
                          "--reason", f"demo run {run} stages a new candidate"], log)
        if rc != 0:
            raise InputError(f"`inboxlab promote rollback` failed: {last} (log: {log})")
        rec = read_record(record_path(home, pool))
    base = Path(rec.current_policy) if rec is not None else configured
    if not base.is_file():
        return PromotionOutcome(pool, "skipped", f"{pool}'s current policy file {base} is "
                                "gone; nothing to tune from")

    out = run_dir / "promotion"
    rc, last = _call(["tune", SCENARIO, "--space", str(lab_file.parents[1] / "tuning" /
                                                      "warmup-ramp.toml"),
                      "--base", str(base), "--out", str(out), *TUNE_ARGS, "--seed", str(seed),
                      "--constraints", CONSTRAINTS, "--actor", ACTOR], log)
    if rc not in (0, 2):
        raise InputError(f"`inboxlab tune` failed: {last} (log: {log})")
    evaluation = json.loads((out / "evaluation.json").read_text())
    current = str(evaluation["base"]["version"])
    winner = evaluation.get("winner")
    if rc == 2 or not winner:
        return PromotionOutcome(pool, "no-winner", f"no feasible candidate beat {current} "
                                f"({evaluation['objective']}, budget {evaluation['budget']})",
                                None, current, steps=read_audit(home, pool)[seen:])
    candidate = str(winner["version"])
    comparison = dict(winner["comparison"]["objective"])
    admit = ["promote", "admit", str(winner["file"]), "--pool", pool, *h,
             "--evaluation", str(out / "evaluation.json"), "--actor", ACTOR]
    if rec is None:
        admit += ["--current", str(base)]
    rc, last = _call(admit, log)
    steps = read_audit(home, pool)[seen:]
    if rc != 0:
        refused = [s for s in steps if s["action"] == "refuse"]
        if not refused:
            raise InputError(f"`inboxlab promote admit` failed: {last} (log: {log})")
        return PromotionOutcome(pool, "refused", f"the gates refused {candidate}: "
                                f"{refused[-1]['reason']}", candidate, current, 0.0,
                                comparison, steps)
    rec = read_record(record_path(home, pool))
    while rec is not None and rec.state == "canary" and rec.stage_percent < STAGE_PERCENT:
        rc, last = _call(["promote", "advance", "--pool", pool, *h, "--actor", ACTOR,
                          "--reason", f"demo run {run}: gates passed in simulation"], log)
        if rc != 0:
            raise InputError(f"`inboxlab promote advance` failed: {last} (log: {log})")
        rec = read_record(record_path(home, pool))
    if rec is None or rec.state != "canary":
        raise InputError(f"{pool}: expected a canary after admission, found "
                         f"{rec.state if rec else 'no record'} (log: {log})")
    return PromotionOutcome(pool, "canary", f"{candidate} takes {rec.stage_percent:g} % of "
                            f"{pool}'s traffic", candidate, rec.current_version,
                            rec.stage_percent, comparison, read_audit(home, pool)[seen:])


def describe(p: PromotionOutcome, home: Path) -> list[str]:
    """The summary lines of the step's outcome."""
    from engine.rollout import record_path

    lines = []
    if p.outcome == "canary":
        lines.append(f"promotion: {p.pool} canary {p.stage_percent:g} %: {p.candidate} "
                     f"(candidate) vs {p.current} (current)")
    else:
        lines.append(f"promotion: {p.pool} {p.outcome}: {p.message}")
    c = p.comparison
    if c.get("ci95"):
        lo, hi = c["ci95"]
        verdict = next((s["evidence"].get("gates", {}).get("verdict") for s in p.steps
                        if s["action"] in ("admit", "refuse")), None)
        lines.append(f"           {c['metric']} {c['mean_diff']:+.2f} {c['unit']} "
                     f"(95 % CI {lo:+.2f} .. {hi:+.2f}, n={c['n']}) in simulation"
                     + (f"; gates: {verdict}" if verdict else ""))
    if p.steps:
        lines.append("           audit: " + ", ".join(f"#{s['n']} {s['action']} -> {s['state']}"
                                                     for s in p.steps))
    if record_path(home, p.pool).is_file():
        lines.append(f"           inboxlab promote status --pool {p.pool} --home {home}")
    return lines
