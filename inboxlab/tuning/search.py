"""Tune a policy in simulation: a seeded search over a space, on common random numbers.

Owns ``tune``: every candidate (and the base) runs every scenario with the same seeds, so
candidates differ only by their parameters. The search is a Latin-hypercube design over the
space (about 60 % of ``budget``) followed by local refinement around the best point so far
(Gaussian steps in the unit cube that shrink each round). A candidate is feasible when every
constraint holds on its mean over the replicates (scenario x seed); the winner is the
feasible candidate with the best objective that beats the base. The winner is written as a
new versioned policy file (``<base-version>-tuned-<n>.toml``, a provenance header) and the
whole search as ``evaluation.json``. Must not touch the world's internals or the warehouse.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError, ConfigErrors, InputError
from inboxlab.tuning.objective import (
    HOURLY,
    MINIMISE,
    Constraint,
    hourly_pairs,
    mean_metrics,
    paired_ci,
    run_metrics,
)
from inboxlab.tuning.space import (
    Space,
    apply,
    check_against,
    dump_toml,
    latin_hypercube,
    neighbour,
)

Job = tuple[str, str, int, float | None, dict[str, Any], str]


def _run(job: Job) -> dict[str, float]:
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    policy, scenario, seed, scale, overrides, out = job
    sc = load_scenario(scenario, scale=scale, overrides=overrides)
    summary = run_scenario(sc, seed, Path(out), policy=Path(policy))
    return run_metrics(summary, Path(out) / "events.parquet")


def _read_policy(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"--base: policy file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None


def _write_policy(data: dict[str, Any], path: Path, header: str) -> None:
    from engine.config.loader import load_policy

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_toml(data, header), encoding="utf-8")
    load_policy(path)  # ConfigErrors when the point makes an invalid policy


def _score(metrics: dict[str, float], objective: str) -> float:
    v = metrics[objective]
    return -v if objective in MINIMISE else v


def _feasible(metrics: dict[str, float], base: dict[str, float],
              constraints: list[Constraint]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in constraints:
        bound = c.bound(base[c.metric])
        out[c.text] = {"value": metrics[c.metric], "bound": bound,
                       "pass": c.holds(metrics[c.metric], base[c.metric])}
    return out


def _violation(checks: dict[str, Any]) -> float:
    total = 0.0
    for c in checks.values():
        if not c["pass"]:
            scale = abs(c["bound"]) or 1.0
            total += abs(c["value"] - c["bound"]) / scale + 1e-9
    return total


def next_version(base_version: str, out: Path) -> tuple[str, int]:
    """``<base>-tuned-<n>`` with ``n`` one above any such file already in ``out``."""
    n = 0
    for p in out.glob(f"{base_version}-tuned-*.toml"):
        tail = p.stem.rsplit("-", 1)[-1]
        if tail.isdigit():
            n = max(n, int(tail))
    return f"{base_version}-tuned-{n + 1}", n + 1


def tune(scenarios: list[str], space: Space, base: Path, out: Path, *, objective: str,
         constraints: list[Constraint], budget: int = 12, seeds: list[int] | None = None,
         seed: int = 1, scale: float | None = None, workers: int = 1,
         overrides: dict[str, Any] | None = None, actor: str = "",
         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Search ``space`` around ``base``; write the winner and ``evaluation.json`` into ``out``.

    Returns the evaluation record. Raises ``InputError``/``ConfigError`` for bad input."""
    if budget < 1:
        raise InputError(f"--budget must be >= 1, got {budget}")
    from sim.scenario import load_scenario

    for s in scenarios:
        load_scenario(s, scale=scale, overrides=overrides)  # fail fast on a bad scenario
    base_raw = _read_policy(base)
    base_version = str(base_raw.get("version", base.stem))
    check_against(space, base_raw, str(base))
    seeds = seeds or [seed]
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tune-", dir=out))
    say = log or (lambda _m: None)
    reps = [(s, sd) for s in scenarios for sd in seeds]
    candidates: list[dict[str, Any]] = []

    def evaluate(batch: list[tuple[str, dict[str, Any], Path]]) -> list[list[dict[str, float]]]:
        jobs: list[Job] = []
        for cid, _point, policy in batch:
            for i, (s, sd) in enumerate(reps):
                jobs.append((str(policy), s, sd, scale, dict(overrides or {}),
                             str(work / cid / f"rep-{i}")))
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: the parent has polars/duckdb thread pools a fork can deadlock
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                results = list(pool.map(_run, jobs))
        else:
            results = [_run(j) for j in jobs]
        k = len(reps)
        return [results[i * k:(i + 1) * k] for i in range(len(batch))]

    try:
        base_runs = evaluate([("base", {}, base)])[0]
        base_mean = mean_metrics(base_runs)
        say(f"base {base_version}: {objective} = {base_mean[objective]}")

        def add(points: list[dict[str, Any]]) -> None:
            batch = []
            for p in points:
                cid = f"c{len(candidates) + len(batch) + 1:03d}"
                policy = work / cid / "policy.toml"
                data = apply(base_raw, p)
                data["version"] = f"{base_version}-{cid}"
                try:
                    _write_policy(data, policy, f"candidate {cid}")
                except (ConfigErrors, ConfigError) as exc:
                    candidates.append({"id": cid, "params": p, "valid": False,
                                       "error": str(exc).splitlines()[0]})
                    continue
                batch.append((cid, p, policy))
            for (cid, p, _pol), runs in zip(batch, evaluate(batch), strict=True):
                m = mean_metrics(runs)
                checks = _feasible(m, base_mean, constraints)
                ok = all(c["pass"] for c in checks.values())
                candidates.append({"id": cid, "params": p, "valid": True, "metrics": m,
                                   "runs": runs, "constraints": checks, "feasible": ok,
                                   "score": _score(m, objective)})
                say(f"{cid} {objective}={m[objective]} feasible={ok} {p}")

        def rank(c: dict[str, Any]) -> tuple[int, float]:
            if not c["valid"]:
                return (-1, -math.inf)
            if c["feasible"]:
                return (1, c["score"])
            return (0, -_violation(c["constraints"]))

        n_init = max(1, min(budget, math.ceil(budget * 0.6)))
        design = latin_hypercube(n_init, len(space.params), rng)
        add([space.point(u) for u in design])
        step = 0.15
        while len(candidates) < budget:
            best = max(candidates, key=rank)
            if not best["valid"]:
                add([space.point(rng.random(len(space.params)))])
                continue
            centre = space.unit(best["params"])
            k = min(max(1, workers), budget - len(candidates))
            add([space.point(neighbour(centre, step, rng)) for _ in range(k)])
            step = max(0.02, step * 0.7)

        base_score = _score(base_mean, objective)
        feasible = [c for c in candidates if c["valid"] and c["feasible"]]
        best = max(feasible, key=lambda c: c["score"]) if feasible else None
        winner = best if best is not None and best["score"] > base_score else None
        record: dict[str, Any] = {
            "kind": "inboxlab.tuning.evaluation", "created_at": dt.datetime.now(dt.UTC)
            .isoformat(timespec="seconds"), "actor": actor,
            "scenarios": scenarios, "seeds": seeds, "scale": scale,
            "overrides": overrides or {}, "space": space.file, "budget": budget,
            "search_seed": seed, "objective": objective,
            "direction": "minimise" if objective in MINIMISE else "maximise",
            "constraints": [c.text for c in constraints],
            "base": {"file": str(base.resolve()), "version": base_version,
                     "metrics": base_mean, "runs": base_runs},
            "candidates": candidates, "winner": None,
        }
        if winner is not None:
            version, _n = next_version(base_version, out)
            data = apply(base_raw, winner["params"])
            data["version"] = version
            data["description"] = (f"{base_raw.get('description', '')} Tuned: "
                                   f"{objective} {base_mean[objective]} -> "
                                   f"{winner['metrics'][objective]}.").strip()
            path = out / f"{version}.toml"
            header = (f"inboxlab policy {version}: tuned from {base_version} "
                      f"({base.name}) by inboxlab tune\n"
                      f"scenarios {', '.join(scenarios)}; seeds {seeds}; scale {scale}; "
                      f"search seed {seed}; budget {budget}; candidate {winner['id']}\n"
                      f"objective {objective}; constraints {', '.join(record['constraints'])}\n"
                      f"params {json.dumps(winner['params'], sort_keys=True)}\n"
                      f"evaluation: evaluation.json next to this file")
            _write_policy(data, path, header)
            runs_dir = out / "runs"
            shutil.rmtree(runs_dir, ignore_errors=True)
            shutil.copytree(work / "base", runs_dir / "base")
            shutil.copytree(work / winner["id"], runs_dir / "winner")
            record["winner"] = {"id": winner["id"], "version": version, "file": str(path.resolve()),
                                "params": winner["params"], "metrics": winner["metrics"],
                                "constraints": winner["constraints"],
                                "comparison": _compare(base_runs, winner["runs"], objective,
                                                       runs_dir, len(reps))}
        (out / "evaluation.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(base_runs: list[dict[str, float]], cand_runs: list[dict[str, float]],
             objective: str, runs_dir: Path, n_reps: int) -> dict[str, Any]:
    """Paired comparison candidate - base: per replicate for every metric, and per hour
    (pooled over replicates) for count metrics; ``objective`` names the one the gates use."""
    per_run = {m: {**paired_ci([c[m] - b[m] for b, c in zip(base_runs, cand_runs,
                                                             strict=True)]),
                   "base_mean": float(np.mean([b[m] for b in base_runs])),
                   "candidate_mean": float(np.mean([c[m] for c in cand_runs]))}
               for m in base_runs[0]}
    hourly: dict[str, Any] = {}
    for metric, event in HOURLY.items():
        diffs = np.concatenate([hourly_pairs(runs_dir / "base" / f"rep-{i}" / "events.parquet",
                                             runs_dir / "winner" / f"rep-{i}" / "events.parquet",
                                             event) for i in range(n_reps)])
        hourly[metric] = {**paired_ci(diffs), "unit": "per hour"}
    gate = dict(hourly[objective]) if objective in hourly else {**per_run[objective],
                                                                 "unit": "per run"}
    if gate["unit"] == "per hour" and gate["n"]:
        gate["base_per_unit"] = per_run[objective]["base_mean"] * n_reps / gate["n"]
    gate.update(metric=objective, direction="minimise" if objective in MINIMISE else "maximise",
                base_mean=per_run[objective]["base_mean"],
                candidate_mean=per_run[objective]["candidate_mean"])
    return {"objective": gate, "per_run": per_run, "hourly": hourly}
