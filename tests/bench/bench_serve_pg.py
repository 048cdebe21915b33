"""Benchmark: ``inboxlab serve`` on a PostgreSQL spool, one node against two, same run.

Starts a private PostgreSQL cluster (durable settings: fsync on), a counting aiosmtpd sink,
then (1) one serve process with ``nodes = 1`` and (2) two serve processes with ``nodes = 2``
on fresh schemas; each round POSTs ``N`` messages over HTTP (split across the nodes) and
measures the time until the sink has every one. Prints messages/s of each and the ratio
two/one. The pool's generic-provider rate is lifted so shaping is not what is measured.

    .venv/bin/python tests/bench/bench_serve_pg.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.integration import test_serve_pg as t  # noqa: E402
from tests.integration.pg_server import start_server, stop_server  # noqa: E402


def round_trip(server: object, sink: t.Sink, port: int, n: int, nodes: int,
               tmp: Path) -> float:
    """Messages/s of ``nodes`` serve processes on a fresh schema."""
    url = server.schema_url("b_" + uuid.uuid4().hex[:10])  # type: ignore[attr-defined]
    lab = t.write_lab(tmp / f"lab{nodes}.toml", port)
    text = lab.read_text().replace("messages_per_second = 400.0",
                                   "messages_per_second = 5000.0")
    lab.write_text(text.replace("nodes = 2", f"nodes = {nodes}"))
    world = {"lab": lab, "tmp": tmp / f"r{nodes}", "procs": [],
             "env": dict(os.environ, PG_SPOOL_URL=url, INBOXLAB_SECRET="b" * 32,
                         PYTHONPATH=str(ROOT))}
    started = [t.start(world, f"node{i}") for i in range(nodes)]
    bases = [f"http://{w['http']}" for _, w in started]
    before = sink.total()
    try:
        t0 = time.monotonic()
        with httpx.Client() as client, ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: t.post(client, bases[i % nodes],
                                           f"r{nodes}-{i}@example.net", f"b{nodes}-{i}"),
                          range(n)))
        posted = time.monotonic() - t0
        t._wait(lambda: sink.total() - before >= n, "every message at the sink", 300)
        took = time.monotonic() - t0
    finally:
        for proc, _ in started:
            t.stop(proc)
    print(f"{nodes} node(s): {n} messages posted in {posted:.2f}s, delivered in {took:.2f}s"
          f" = {n / took:,.0f} msg/s")
    return n / took


def main() -> None:
    from aiosmtpd.controller import Controller

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server, root = start_server(settings="")  # durable: fsync and synchronous commit on
    sink = t.Sink()
    port = t._free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            one = round_trip(server, sink, port, n, 1, Path(tmp))
            two = round_trip(server, sink, port, n, 2, Path(tmp))
        print(f"two nodes / one node: {two / one:.2f}x (machine: {os.cpu_count()} cores, "
              "shared)")
    finally:
        ctl.stop()
        stop_server(server, root)


if __name__ == "__main__":
    main()
