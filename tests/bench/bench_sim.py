"""Benchmark: the batched SimPy world vs a naive one-process-per-message SimPy model.

Both run the same warmup traffic (6 providers, 8 IPs). The naive model spawns one SimPy
process per message that waits for its arrival, draws an outcome and records it; ours is
``sim.world.World`` on the warmup-30d scenario (real policy core and provider models).
Prints simulated messages per second of each and the ratio, by wall clock and by this
process's CPU time (the machine is shared: CPU time is the figure that does not move with
other people's load). Run:
    .venv/bin/python tests/bench/bench_sim.py [MESSAGES]
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import simpy

from sim.run import run_scenario
from sim.scenario import load_scenario


def naive(n: int, seed: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    arrivals = np.sort(rng.uniform(0, 30 * 86400, n))
    stats = {"ok": 0, "defer": 0}

    def message(t: float, u: float) -> simpy.events.Event:
        yield env.timeout(t)
        if u < 0.05:
            yield env.timeout(300)
            stats["defer"] += 1
        stats["ok"] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    for t, u in zip(arrivals.tolist(), rng.random(n).tolist(), strict=True):
        env.process(message(t, u))
    env.run()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def ours(target: int) -> tuple[float, float, int, float]:
    # messages grow linearly with the scenario's scale (every stream, newsletters included):
    # a small probe run says how many one unit of scale makes
    probe = 0.01
    per_scale = run_scenario(load_scenario("warmup-30d", scale=probe), 1, None,
                             keep_events=False)["messages"] / probe
    scale = target / per_scale
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_scenario(load_scenario("warmup-30d", scale=scale), 1, None, keep_events=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return summary["messages"] / wall, summary["messages"] / cpu, summary["messages"], wall


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    nv, nv_cpu = naive(min(n, 200_000))
    rate, rate_cpu, msgs, wall = ours(n)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"naive one-process-per-message: {nv:,.0f} simulated msgs/s wall, "
          f"{nv_cpu:,.0f} per CPU s")
    print(f"batched world (warmup-30d, {msgs:,} msgs): {rate:,.0f} msgs/s wall "
          f"({wall:.1f} s), {rate_cpu:,.0f} per CPU s")
    print(f"ratio ours/naive: {rate / nv:.2f}x wall, {rate_cpu / nv_cpu:.2f}x CPU   "
          f"peak RSS {rss:,.0f} MB")
