"""Engine memory with a large backlog: RSS after the runner took N queued messages into its
policy core (the spool on disk holds the bodies; the core holds ids and counters).

Baseline, measured in the same process: RSS after imports and opening the spool, before
the runner's intake. Run: .venv/bin/python tests/bench/bench_rss.py [--messages 1000000]
Goal: <= 400 MB with 1,000,000 queued.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).parents[2]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    args = ap.parse_args()
    from engine.config import load_config
    from engine.delivery.message import build_base
    from engine.runner import Runner
    from engine.spool import Spool

    folder = Path(tempfile.mkdtemp(prefix="inboxlab-bench-rss-"))
    try:
        config = load_config(ROOT / "fixtures" / "lab.toml")
        spool = Spool(folder / "spool.db")
        body = build_base(from_addr="news@mail.acme.example", from_name=None,
                          subject="Weekly", text="Hello\n" * 200)
        t0, batch = time.perf_counter(), 5000
        for lo in range(0, args.messages, batch):
            spool.accept_many([
                {"tenant": "acme", "idem_key": f"k{i}", "request": b"%d" % i,
                 "lane": "transactional", "campaign": None,
                 "sending_domain": "mail.acme.example", "mail_from": "news@mail.acme.example",
                 "recipients": [f"user{i}@d{i % 5000}.example.net"], "body": body}
                for i in range(lo, min(args.messages, lo + batch))])
        print(f"spooled {args.messages:,} in {time.perf_counter() - t0:.0f} s")
        base = rss_mb()
        runner = Runner(config, spool, secret=b"r" * 32)
        t1, held = time.perf_counter(), 0
        while True:
            n = runner.intake()
            if n == 0:
                break
            held += n
        after = rss_mb()
        print(f"baseline RSS (spool open, nothing held): {base:.0f} MB")
        print(f"RSS with {held:,} queued in the core: {after:.0f} MB "
              f"({after / base:.2f}x baseline, {(after - base) * 2**20 / max(held, 1):.0f} "
              f"B/message; intake {time.perf_counter() - t1:.0f} s; goal <= 400 MB at 1M)")
        spool.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
