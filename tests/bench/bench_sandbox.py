"""Benchmark: accept rate of one sandbox provider server vs a bare aiosmtpd sink, same run.

Client: Postfix's ``smtp-source`` when installed (else an aiosmtplib client). Prints
messages/second for both servers and their ratio. Run:
``.venv/bin/python tests/bench/bench_sandbox.py [messages] [sessions]``.
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
from sim.sandbox.server import SandboxThread

BIG = "[1000000, 1000000, 1000000]"


def bare_sink() -> tuple[int, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    async def boot() -> int:
        srv = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", 0)
        return srv.sockets[0].getsockname()[1]

    return asyncio.run_coroutine_threadsafe(boot(), loop).result(), loop


def drive(port: int, messages: int, sessions: int) -> float:
    tool = shutil.which("smtp-source")
    t0 = time.perf_counter()
    if tool:
        subprocess.run([tool, "-c", "-l", "1024", "-m", str(messages), "-s", str(sessions),
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
    box = SandboxThread(load_config(cfg), tmp)
    port = box.start()["generic"][1]
    sink_port, _ = bare_sink()
    client = "smtp-source" if shutil.which("smtp-source") else "aiosmtplib"
    drive(sink_port, 500, sessions)  # warm-up
    bare = drive(sink_port, messages, sessions)
    model = drive(port, messages, sessions)
    box.stop()
    print(f"client={client} messages={messages} sessions={sessions}")
    print(f"bare aiosmtpd sink : {bare:8.0f} msgs/s")
    print(f"sandbox (generic)  : {model:8.0f} msgs/s")
    print(f"ratio sandbox/bare : {model / bare:8.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
