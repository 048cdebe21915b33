"""Benchmark-sized parity run: the parity-small scenario scaled x10 (~2,800 messages), run
live against the sandbox and in SimPy (the driver cost fitted from the live run, then 12
sim seeds as the ensemble the live run is judged against); prints the comparison, the
ensemble checks, where the first-attempt order differs, and both wall times (the sim's
wall time as a ratio of the live run's, measured in the same run).

Usage: ``bench_parity.py [FACTOR [TIME_SCALE [SEEDS]]]`` (defaults 10, 50 and 12). At x10 the
live driver cannot keep up at time scale 200 or 100 (it runs 6-30 model s behind the
arrivals; see the "live lag" line), at 50 it keeps up (~130 s wall)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sim.parity import format_report, load_scenario, run_both

SCENARIO = Path(__file__).parents[2] / "fixtures" / "scenarios" / "parity-small.toml"


def order_diffs(sim: dict[tuple[str, ...], list[int]], live: dict[tuple[str, ...], list[int]]
                ) -> list[str]:
    """One line per queue whose first-attempt order differs: where and how."""
    out = []
    for key in sorted(set(sim) | set(live)):
        a, b = sim.get(key, []), live.get(key, [])
        if a == b:
            continue
        k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                 min(len(a), len(b)))
        moved = sum(1 for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        out.append(f"  order {'/'.join(key)}: {len(a)} vs {len(b)} messages, first difference "
                   f"at position {k} (sim {a[k:k + 4]} live {b[k:k + 4]}), {moved} positions "
                   "differ")
    return out


if __name__ == "__main__":
    factor = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    sc = load_scenario(SCENARIO).scaled(factor)
    rep = run_both(sc, time_scale=scale, home=Path(tempfile.mkdtemp(prefix="parity-")),
                   seeds=seeds)
    print(f"time scale {scale:g}, {len(sc.arrivals)} messages, {seeds} sim seeds")
    print(format_report(sc.name, rep))
    print("single-run checks (sim seed = the scenario's):")
    for key, (ok, text) in rep.get("single_run_checks", {}).items():
        print(f"  {'ok ' if ok else 'BAD'} {key:<28} {text}")
    print("\n".join(order_diffs(rep["sim"]["order"], rep["live"]["order"])))
    print(f"sim/live wall ratio: {rep['wall']['sim'] / max(rep['wall']['live'], 1e-9):.4f}")
