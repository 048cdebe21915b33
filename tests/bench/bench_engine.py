"""End-to-end engine throughput: a spooled backlog of DKIM-signed messages -> Postfix smtp-sink.

Baseline, measured in the same run against the same sink: a bare aiosmtplib client (uvloop
when installed) with persistent connections sending pre-built messages of the same size.
The engine run is the real ``Runner``: spool -> policy core -> per-recipient headers ->
DKIM (ed25519-sha256, the test key) -> pooled SMTP (``engine.delivery.pipeline``: PIPELINING,
the next envelope behind each content) -> decisions back to the spool.

Run: .venv/bin/python tests/bench/bench_engine.py [--messages 50000] [--profile]
Goal: >= 1,500 msgs/s and >= 0.5x the bare client.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
CONNS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    args = [sink, "-u", "postfix"] if os.geteuid() == 0 else [sink]
    proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("smtp-sink did not start (install postfix: scripts/install-postfix)")


def lab_file(folder: Path, port: int) -> Path:
    keys = ROOT / "fixtures" / "dkim"
    text = f'''name = "bench"
policy = "{ROOT / "fixtures" / "policies" / "default-v1.toml"}"
[tenants.acme]
api_keys = ["sha256:53c0bbbb0bb4c4b246b3864960657bcb300d500b1599167dabfb3e9372241898"]
lanes = ["transactional", "lifecycle", "prospecting"]
[domains."mail.acme.example"]
tenant = "acme"
return_path = "bounce.mail.acme.example"
dkim = [{{ selector = "lab2026e", key_file = "{keys / "test-ed25519.pem"}", algorithm = "ed25519-sha256" }}]
[pools.tx-a]
source_ips = ["127.0.0.2", "127.0.0.3"]
dedicated = true
[routes]
"*" = "127.0.0.1:{port}"
[shaping.override."tx-a.*"]
messages_per_second = 1000000.0
burst = 100000
max_connections = {CONNS // 2}
max_messages_per_connection = 100000
'''
    path = folder / "lab.toml"
    path.write_text(text)
    return path


async def bare_client(port: int, n: int, size: int) -> float:
    import aiosmtplib

    msg = b"Subject: x\r\n\r\n" + b"y" * max(0, size - 16) + b"\r\n"
    per = n // CONNS

    async def one(k: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                 source_address=(f"127.0.0.{2 + k % 2}", 0))
        await client.connect()
        for i in range(per):
            await client.sendmail("bounces@bench.example", [f"u{k}.{i}@example.net"], msg)
        await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(CONNS)))
    return per * CONNS / (time.perf_counter() - start)


def engine_run(port: int, n: int, folder: Path, profile: bool) -> tuple[float, int]:
    from engine.config import load_config
    from engine.delivery.message import build_base
    from engine.runner import Runner
    from engine.spool import Spool

    config = load_config(lab_file(folder, port))
    spool = Spool(folder / "spool.db")
    body = build_base(from_addr="news@mail.acme.example", from_name="Acme", subject="Weekly",
                      text="Hello there, this is a line.\n" * 60)
    t0 = time.perf_counter()
    batch = 2000
    for lo in range(0, n, batch):
        spool.accept_many([
            {"tenant": "acme", "idem_key": f"k{i}", "request": b"%d" % i,
             "lane": "transactional", "campaign": None, "sending_domain": "mail.acme.example",
             "mail_from": "news@mail.acme.example", "recipients": [f"user{i}@example.net"],
             "body": body} for i in range(lo, min(n, lo + batch))])
    print(f"  spooled {n} messages in {time.perf_counter() - t0:.1f} s "
          f"({n / (time.perf_counter() - t0):,.0f}/s, group commit of {batch})")

    async def go() -> float:
        runner = Runner(config, spool, secret=b"b" * 32, timeout=30)
        stop = asyncio.Event()
        start = time.perf_counter()
        task = asyncio.create_task(runner.run(stop, poll=0.05))
        while spool.active():
            await asyncio.sleep(0.05)
        took = time.perf_counter() - start
        stop.set()
        await task
        return took

    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    took = _loop_run(go())
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    delivered = sum(1 for e in spool.events_after(0, limit=10 * n) if e.event == "delivered")
    spool.close()
    return delivered / took, delivered


def _loop_run(coro: object) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type,no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    port = free_port()
    sink = start_sink(port)
    folder = Path(tempfile.mkdtemp(prefix="inboxlab-bench-engine-"))
    try:
        size = 2200  # about the engine's signed message size
        base = _loop_run(bare_client(port, min(args.messages, 20_000), size))
        print(f"bare aiosmtplib client, {CONNS} persistent connections: {base:,.0f} msgs/s")
        rate, delivered = engine_run(port, args.messages, folder, args.profile)
        print(f"engine end to end ({delivered} delivered of {args.messages}): {rate:,.0f} msgs/s"
              f" = {rate / base:.2f}x the bare client (goal >= 1,500/s and >= 0.5x)")
    finally:
        sink.terminate()
        sink.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
