"""Benchmark: accept rate of one sandbox provider server vs a bare aiosmtpd sink, same run.

Client: Postfix's ``smtp-source`` when installed (else an aiosmtplib client). Prints
messages/second for both servers and their ratio. Run:
``.venv/bin/python tests/bench/bench_sandbox.py [messages] [sessions] [runs] [per_session]`` (messages per SMTP connection,
default 10: an MTA reuses connections; 1 measures connection setup). The
sandbox runs on uvloop when installed; the bare sinks run on asyncio's loop (the
baseline the target is set against) and on uvloop (for an honest like-for-like).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP

from sim.sandbox.config import load_config
from sim.sandbox.server import SandboxThread, new_event_loop

BIG = "[1000000, 1000000, 1000000]"


def bare_sink(uv: bool = False) -> tuple[int, asyncio.AbstractEventLoop]:
    loop = new_event_loop() if uv else asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    async def boot() -> int:
        srv = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", 0)
        return srv.sockets[0].getsockname()[1]

    return asyncio.run_coroutine_threadsafe(boot(), loop).result(), loop


PER_SESSION = int(sys.argv[4]) if len(sys.argv) > 4 else 10


def drive(port: int, messages: int, sessions: int) -> float:
    tool = shutil.which("smtp-source")
    t0 = time.perf_counter()
    if tool:
        subprocess.run([tool, "-c", "-l", "1024", "-m", str(messages), "-s", str(sessions),
                        "-C", str(PER_SESSION),
                        "-f", "b@news.example.com", "-t", "u@example.net", f"127.0.0.1:{port}"],
                       check=True, stdout=subprocess.DEVNULL)
    else:
        import aiosmtplib

        async def one(n: int) -> None:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as c:
                for _ in range(n):
                    await c.sendmail("b@news.example.com", ["u@example.net"], b"Subject: x\r\n\r\nx\r\n")

        async def all_() -> None:
            await asyncio.gather(*(one(messages // sessions) for _ in range(sessions)))

        asyncio.run(all_())
    return messages / (time.perf_counter() - t0)


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    tmp = Path(tempfile.mkdtemp())
    cfg = tmp / "bench.toml"
    cfg.write_text(
        f'seed = 1\n[providers.generic]\ntls = false\n'
        f'overrides = {{ rates = {{ ip = {BIG}, netblock = {BIG}, spf_domain = {BIG}, '
        f'message_id = 1000000 }}, mailboxes = {{ unknown_fraction = 0.0, full_fraction = 0.0 }},'
        f' connections = {{ max_messages = 1000000 }} }}\n')
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    box = SandboxThread(load_config(cfg), tmp)
    port = box.start()["generic"][1]
    sink_port, _ = bare_sink()
    uv_port, _ = bare_sink(uv=True)
    client = "smtp-source" if shutil.which("smtp-source") else "aiosmtplib"
    for p in (sink_port, uv_port, port):
        drive(p, 500, sessions)  # warm-up
    print(f"client={client} messages={messages} sessions={sessions} runs={runs} "
          f"per_session={PER_SESSION}")
    print("run  bare-asyncio  bare-uvloop  sandbox  sandbox/bare-asyncio  sandbox/bare-uvloop")
    ratios = []
    for run in range(runs):
        bare = drive(sink_port, messages, sessions)
        bare_uv = drive(uv_port, messages, sessions)
        model = drive(port, messages, sessions)
        ratios.append(model / bare)
        print(f"{run:3d} {bare:12.0f} {bare_uv:12.0f} {model:8.0f} {model / bare:21.2f} "
              f"{model / bare_uv:20.2f}")
    box.stop()
    print(f"min ratio sandbox/bare-asyncio: {min(ratios):.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
