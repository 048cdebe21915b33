"""Benchmark of the policy core's Scheduler: 10 providers x 4 pools x 3 lanes, a 1,000,000
message backlog. Prints dispatch decisions per second (one decision = one message assigned
to a pool/source IP), submits per second, record() results per second, and the core index
bytes per queued message (tracemalloc), each against its goal.

Run: .venv/bin/python tests/bench/bench_scheduler.py [messages]
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc

from engine.policy import Result, Scheduler
from engine.policy.params import LaneSpec, PolicyParams, PoolSpec
from engine.policy.types import LANES, ProviderProfile, Shaping

PROVIDERS = [f"p{i}" for i in range(10)]


def make_params() -> PolicyParams:
    pools = {f"pool{j}": PoolSpec(name=f"pool{j}", source_ips=(f"127.0.{j}.2", f"127.0.{j}.3"))
             for j in range(4)}
    providers = {p: ProviderProfile(name=p, shaping=Shaping(messages_per_second=2000.0,
                                                            burst=2000)) for p in PROVIDERS}
    lanes = {"transactional": LaneSpec(name="transactional", weight=6, reserved_share=0.1),
             "lifecycle": LaneSpec(name="lifecycle", weight=3),
             "prospecting": LaneSpec(name="prospecting", weight=1)}
    return PolicyParams(version="bench", lanes=lanes, pools=pools, providers=providers)


def fill(s: Scheduler, n: int) -> None:
    for i in range(n):
        s.submit(i, lane=LANES[i % 3], tenant=f"t{i % 5}", sending_domain="bulk.example",
                 provider=PROVIDERS[i % 10], now=0.0)


def main(n: int = 1_000_000) -> None:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    s = Scheduler(make_params(), random.Random(1))
    fill(s, n)
    index_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del s
    gc.collect()

    s = Scheduler(make_params(), random.Random(1))
    t0 = time.perf_counter()
    fill(s, n)
    t_submit = time.perf_counter() - t0

    dispatched = 0
    batches = 0
    now = 0.0
    ids: list[tuple[int, str, str, str]] = []
    t0 = time.perf_counter()
    while dispatched < n:
        now += 0.05
        for d in s.due(now):
            dispatched += d.n
            batches += 1
            if len(ids) < 200_000:
                ids.extend((i, d.pool, d.source_ip, d.provider) for i in d.ids)
    t_due = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i, pool, ip, provider in ids:
        s.record(Result(id=i, pool=pool, source_ip=ip, provider=provider, code=250), now)
    t_rec = time.perf_counter() - t0

    rate = dispatched / t_due
    per_msg = index_bytes / n
    print(f"messages                       {n:,}")
    print(f"submit                         {n / t_submit:,.0f} msgs/s")
    print(f"dispatch decisions             {rate:,.0f} /s in {batches:,} batches "
          f"(goal 200,000: x{rate / 200_000:.2f})")
    print(f"record (delivered)             {len(ids) / t_rec:,.0f} results/s")
    print(f"core index per queued message  {per_msg:,.0f} bytes (goal <= 300: "
          f"x{per_msg / 300:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
