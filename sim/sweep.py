"""Parameter sweeps: a grid of scenario runs in parallel processes on common random numbers.

Owns ``parse_grid`` (``key=v1,v2`` strings) and ``sweep``: every point runs the same
scenario with the same seed (unless ``seed`` is a grid key), so points differ only by the
parameters swept; rows (one per point: the parameters and the summary's headline figures)
go to ``points.parquet`` and ``points.csv``. Must not touch the world's internals.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import InputError
from sim.scenario import load_scenario, resolve


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["a=1,2", "policy=x.toml"]`` -> ``{"a": [1, 2], "policy": ["x.toml"]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InputError(f"--grid {item!r}: expected key=v1,v2")
        grid[key] = [_value(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def _point(args: tuple[str, dict[str, Any], int, float | None, str]) -> dict[str, Any]:
    from sim.run import run_scenario

    scenario, params, seed, scale, _out = args
    p = dict(params)
    seed = int(p.pop("seed", seed))
    scale = float(p.pop("scale", scale)) if "scale" in p or scale is not None else None
    policy = p.pop("policy", None)
    sc = load_scenario(scenario, scale=scale, overrides=p)
    summary = run_scenario(sc, seed, None, policy=Path(policy) if policy else None,
                           keep_events=False)
    tta = summary["time_to_accept"]
    row = {k: str(v) for k, v in params.items()}
    row.update(seed=seed, messages=summary["messages"], delivered=summary["delivered"],
               deferred=summary["deferred"], bounced=summary["bounced"],
               expired=summary["expired"], complaints=summary["complaints"],
               complaint_rate=summary["complaint_rate"],
               breaker_transitions=summary["transitions"]["breaker"],
               automation_transitions=summary["transitions"]["automation"],
               tx_p95_s=tta.get("transactional", {}).get("p95_s"),
               lifecycle_p95_s=tta.get("lifecycle", {}).get("p95_s"),
               warmup_attainment=summary["warmup"]["attainment"])
    return row


def sweep(scenario: str, grid: dict[str, list[Any]], out: Path, *, workers: int = 2,
          seed: int = 1, scale: float | None = None) -> list[dict[str, Any]]:
    """Run every point of ``grid``; write the rows; return them in grid order."""
    path = str(resolve(scenario))
    load_scenario(path, scale=scale)  # fail fast on a bad file
    keys = list(grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    jobs = [(path, p, seed, scale, str(out)) for p in points]
    if workers <= 1 or len(jobs) == 1:
        rows = [_point(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_point, jobs))
    out.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(rows)
    frame.write_parquet(out / "points.parquet")
    frame.write_csv(out / "points.csv")
    return rows
