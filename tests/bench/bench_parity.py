"""Benchmark-sized parity run: the parity-small scenario scaled x10 (~2,800 messages), run
in SimPy and live against the sandbox; prints the comparison and both wall times
(the sim's wall time as a ratio of the live run's, measured in the same run)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sim.parity import format_report, load_scenario, run_both

SCENARIO = Path(__file__).parents[2] / "fixtures" / "scenarios" / "parity-small.toml"

if __name__ == "__main__":
    factor = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    sc = load_scenario(SCENARIO).scaled(factor)
    rep = run_both(sc, time_scale=200.0, home=Path(tempfile.mkdtemp(prefix="parity-")))
    print(f"{len(sc.arrivals)} messages")
    print(format_report(sc.name, rep))
    print(f"sim/live wall ratio: {rep['wall']['sim'] / max(rep['wall']['live'], 1e-9):.4f}")
