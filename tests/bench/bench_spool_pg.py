"""Spool speed, PostgreSQL (``PgSpool``) against SQLite (``Spool``) in the same run.

Figures, each for both backends and as a PG/SQLite ratio:
- accepted messages/s, one ``accept`` per message (one commit each), and in groups of 100
  through ``accept_many`` (what the intake's group commit does);
- claim+finish cycles/s: ``take_pending(limit=B)`` -> ``start_attempts`` -> ``finish_many``
  (delivered, with the DATA marks in the same transaction), as the runner does per dispatch;
  recipients/s follows;
- PG only: the same cycles from two nodes at once (two connections, two threads).

Durability is set alike: SQLite WAL with ``synchronous=NORMAL`` (no fsync per commit) and
PostgreSQL with ``fsync=on, synchronous_commit=off`` (WAL flushed in the background, no
fsync wait per commit). Both on the same disk; PostgreSQL over loopback TCP.

Run: .venv/bin/python tests/bench/bench_spool_pg.py [--messages 5000] [--batch 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT))

from engine.spool import Spool  # noqa: E402
from engine.spool.pg import PgSpool  # noqa: E402
from tests.integration.pg_server import start_server, stop_server  # noqa: E402


def _req(i: int, prefix: str) -> dict[str, Any]:
    return dict(tenant="acme", idem_key=f"{prefix}{i}", request=b"%d" % i, lane="lifecycle",
                campaign="bench", sending_domain="news.acme.example",
                mail_from="news@news.acme.example", recipients=[f"r{i}@example.net"],
                body=b"Subject: bench\r\n\r\n" + b"x" * 2000)


def bench_accept(spool: Any, n: int) -> tuple[float, float]:
    """(one-by-one msgs/s, grouped msgs/s)."""
    t0 = time.perf_counter()
    for i in range(n):
        spool.accept(**_req(i, "one"))
    single = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for lo in range(0, n, 100):
        spool.accept_many([_req(i, "grp") for i in range(lo, min(n, lo + 100))])
    grouped = n / (time.perf_counter() - t0)
    return single, grouped


def cycles(spool: Any, batch: int, stop_at: int | None = None) -> tuple[int, int, float]:
    """Claim+finish until nothing is queued: (cycles, recipients, seconds)."""
    done = n = 0
    t0 = time.perf_counter()
    while True:
        got = spool.take_pending(limit=batch)
        if not got:
            break
        ids = [p.id for p in got]
        spool.start_attempts(ids, pool="tx-a", source_ip="127.0.0.2")
        spool.finish_many([(i, "delivered", "delivered", {"code": 250, "response": "ok"})
                           for i in ids], data_started=ids[:1], mx_host="mx.example.net")
        done += len(ids)
        n += 1
        if stop_at is not None and done >= stop_at:
            break
    return n, done, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    n, batch = args.messages, args.batch
    server, root = start_server("-c fsync=on -c synchronous_commit=off")
    tmp = Path(tempfile.mkdtemp(prefix="bench-spool-"))
    try:
        sq = Spool(tmp / "spool.db")
        pg = PgSpool(server.schema_url("bench"), node="bench", max_held=10 * n)
        figures: dict[str, tuple[float, float]] = {}
        s1, g1 = bench_accept(sq, n)
        s2, g2 = bench_accept(pg, n)
        figures["accept one by one (msgs/s)"] = (s1, s2)
        figures["accept_many x100 (msgs/s)"] = (g1, g2)
        c1, r1, t1 = cycles(sq, batch)
        c2, r2, t2 = cycles(pg, batch)
        assert r1 == r2 == 2 * n, (r1, r2)
        figures[f"claim+finish cycles/s (batch {batch})"] = (c1 / t1, c2 / t2)
        figures["claim+finish recipients/s"] = (r1 / t1, r2 / t2)
        sq.close()
        pg.close()

        # two PG nodes on one queue: disjoint claims, both busy
        filler = PgSpool(server.schema_url("bench2"), node="fill")
        for i in range(0, 2 * n, 100):
            filler.accept_many([_req(k, "two") for k in range(i, min(2 * n, i + 100))])
        filler.close()
        nodes = [PgSpool(server.schema_url("bench2"), node=f"n{k}", max_held=10 * n)
                 for k in range(2)]
        out: list[tuple[int, int, float]] = []
        threads = [threading.Thread(target=lambda s=s: out.append(cycles(s, batch)))
                   for s in nodes]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        for s in nodes:
            s.close()
        total = sum(r for _, r, _ in out)
        assert total == 2 * n, total

        print(f"spool bench: {n} messages (2 KB body) per accept run, batch {batch}")
        print(f"{'figure':40} {'sqlite':>10} {'postgres':>10} {'pg/sqlite':>10}")
        for name, (a, b) in figures.items():
            print(f"{name:40} {a:10.0f} {b:10.0f} {b / a:10.2f}x")
        print(f"{'2 PG nodes: recipients/s (together)':40} {'':>10} {total / wall:10.0f} "
              f"{total / wall / figures['claim+finish recipients/s'][1]:10.2f}x one PG node"
              f"  (split {[r for _, r, _ in out]})")
    finally:
        stop_server(server, root)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
