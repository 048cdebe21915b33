"""Benchmark-sized parity run: the parity-small scenario scaled x10 (~2,800 messages), run
in SimPy and live against the sandbox; prints the comparison and both wall times
(the sim's wall time as a ratio of the live run's, measured in the same run).

Usage: ``bench_parity.py [FACTOR [TIME_SCALE]]`` (defaults 10 and 50). At x10 the live
driver cannot keep up at time scale 200 or 100 (it runs 6-30 model s behind the arrivals
and its sessions queue for hundreds of model s; see the "live lag" line), so the outcome
distributions then compare two saturation models, not the policy; at 50 it keeps up
(~130 s wall)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from sim.parity import format_report, load_scenario, run_both

SCENARIO = Path(__file__).parents[2] / "fixtures" / "scenarios" / "parity-small.toml"

if __name__ == "__main__":
    factor = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    sc = load_scenario(SCENARIO).scaled(factor)
    rep = run_both(sc, time_scale=scale, home=Path(tempfile.mkdtemp(prefix="parity-")))
    print(f"time scale {scale:g}")
    print(f"{len(sc.arrivals)} messages")
    print(format_report(sc.name, rep))
    print(f"sim/live wall ratio: {rep['wall']['sim'] / max(rep['wall']['live'], 1e-9):.4f}")
