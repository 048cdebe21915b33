"""Benchmark: the batched SimPy world vs naive one-process-per-message SimPy models.

Baselines in the same run: ``naive`` spawns one SimPy process per message that waits for
its arrival, takes a connection of its path (IP x provider), draws the reply and retries
deferrals; ``bare`` only sleeps and draws (the floor of any per-message model). Ours is
``sim.world.World`` on the warmup-30d scenario (real policy core and provider models;
the core compiled when ``inboxlab native build`` has run, see ``engine.native``;
``INBOXLAB_NATIVE=0`` measures it interpreted).
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


def bare(n: int, seed: int = 1) -> tuple[float, float]:
    """The least a per-message model can do: one process per message that sleeps until
    its arrival and draws one outcome (no connections, no policy, no provider)."""
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


def naive(n: int, seed: int = 1) -> tuple[float, float]:
    """A naive model of the same sending: one SimPy process per message that waits for its
    arrival, takes a connection of its source IP (a ``simpy.Resource`` per IP x provider,
    8 IPs x 6 providers), holds it for the SMTP transaction, draws the reply and, when
    deferred (5 %), waits 5 minutes and tries again (at most 3 attempts)."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    arrivals = np.sort(rng.uniform(0, 30 * 86400, n))
    paths = [simpy.Resource(env, capacity=2) for _ in range(8 * 6)]
    stats = {"ok": 0, "defer": 0, "failed": 0}
    draws = iter(rng.random(4 * n).tolist())

    def message(t: float, path: simpy.Resource) -> simpy.events.Event:
        yield env.timeout(t)
        for _ in range(3):
            with path.request() as slot:
                yield slot
                yield env.timeout(0.05 + 0.2 * next(draws))
            if next(draws) >= 0.05:
                stats["ok"] += 1
                return
            stats["defer"] += 1
            yield env.timeout(300)
        stats["failed"] += 1

    t0, c0 = time.perf_counter(), time.process_time()
    which = rng.integers(0, len(paths), n).tolist()
    for t, k in zip(arrivals.tolist(), which, strict=True):
        env.process(message(t, paths[k]))
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
    from engine import native

    bv, bv_cpu = bare(min(n, 200_000))
    nv, nv_cpu = naive(min(n, 200_000))
    rate, rate_cpu, msgs, wall = ours(n)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bare one-process-per-message (sleep + one draw): {bv:,.0f} simulated msgs/s wall, "
          f"{bv_cpu:,.0f} per CPU s")
    print(f"naive one-process-per-message (connections, replies, retries): {nv:,.0f} "
          f"simulated msgs/s wall, {nv_cpu:,.0f} per CPU s")
    print(f"batched world (warmup-30d, {msgs:,} msgs, policy core {native.STATUS}): "
          f"{rate:,.0f} msgs/s wall ({wall:.1f} s), {rate_cpu:,.0f} per CPU s")
    print(f"ratio ours/naive: {rate / nv:.2f}x wall, {rate_cpu / nv_cpu:.2f}x CPU; "
          f"ours/bare: {rate / bv:.2f}x wall   peak RSS {rss:,.0f} MB")
