"""Benchmark: one sandbox provider server vs a bare aiosmtpd sink, measured in the same run.

Each server runs in its own subprocess (this file with ``--serve KIND``), so the parent can
read the server's own CPU time from ``/proc/<pid>/stat`` around every round. Rounds
alternate between the servers, so a loaded machine hits both alike. Per server it prints
wall-clock messages/second and server CPU microseconds per message, and the ratios
sandbox/bare of both. On a shared machine the CPU-per-message ratio is the honest one:
wall-clock rates move with other people's load, CPU time per message hardly does.

Client: Postfix's ``smtp-source`` (else an aiosmtplib client). Two client modes:
``fresh`` (smtp-source's default: one connection per message) and ``reuse``
(``smtp-source -d``: each session keeps its connection for all its messages).

Run: ``.venv/bin/python tests/bench/bench_sandbox.py [messages] [sessions] [rounds] [modes]``
(defaults 3000, 10, 5, ``fresh,reuse``). The sandbox runs with ``tls = false`` and open
rates, so every message is accepted and stored; the bare sink answers 250 and keeps nothing.
Both run on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIG = "[1000000, 1000000, 1000000]"
CONFIG = (
    "seed = 1\n[providers.generic]\ntls = false\n"
    f"overrides = {{ rates = {{ ip = {BIG}, netblock = {BIG}, spf_domain = {BIG}, "
    "message_id = 1000000 }, mailboxes = { unknown_fraction = 0.0, full_fraction = 0.0 },"
    " connections = { max_messages = 1000000 } }\n"
)
TICK = os.sysconf("SC_CLK_TCK")


# --- server side (child process) -------------------------------------------------------------

def serve(kind: str, home: Path) -> None:
    """Start one server, print its port, run until stdin closes or SIGTERM, then stop cleanly."""
    from sim.sandbox.server import new_event_loop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_reader(sys.stdin.fileno(), stop.set)
        if kind == "sandbox":
            from sim.sandbox.config import load_config
            from sim.sandbox.server import Sandbox

            home.mkdir(parents=True, exist_ok=True)
            cfg = home / "bench.toml"
            cfg.write_text(CONFIG)
            box = Sandbox(load_config(cfg), home)
            port = (await box.start())["generic"][1]
        else:
            from aiosmtpd.smtp import SMTP

            class Sink:
                async def handle_DATA(self, server: object, session: object,
                                      envelope: object) -> str:
                    return "250 2.0.0 OK"

            srv = await loop.create_server(lambda: SMTP(Sink()), "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
        print(port, flush=True)
        await stop.wait()
        if kind == "sandbox":
            await box.stop()
        else:
            srv.close()

    patch = os.environ.get("BENCH_PATCH")  # a Python file run first, for experiments
    if patch and kind == "sandbox":
        exec(compile(Path(patch).read_text(), patch, "exec"), {})
    profile = os.environ.get("BENCH_PROFILE")
    loop = new_event_loop()
    if profile and kind == "sandbox":
        import cProfile

        cProfile.runctx("loop.run_until_complete(main())", globals(), locals(), profile)
    else:
        loop.run_until_complete(main())


# --- client side (parent) --------------------------------------------------------------------

class Server:
    def __init__(self, kind: str, home: Path) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(home)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu(self) -> float:
        """User + system CPU seconds of the server process (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def drive(port: int, messages: int, sessions: int, reuse: bool) -> float:
    """Send ``messages`` and return the wall-clock seconds it took."""
    tool = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None)
    t0 = time.perf_counter()
    if tool:
        subprocess.run([tool, *(["-d"] if reuse else []), "-l", "1024", "-m", str(messages),
                        "-s", str(sessions), "-f", "b@news.example.com", "-t", "u@example.net",
                        f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    else:
        import aiosmtplib

        async def one(n: int) -> None:
            body = b"Subject: x\r\n\r\n" + b"x" * 1024 + b"\r\n"
            if reuse:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as c:
                    for _ in range(n):
                        await c.sendmail("b@news.example.com", ["u@example.net"], body)
            else:
                for _ in range(n):
                    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as c:
                        await c.sendmail("b@news.example.com", ["u@example.net"], body)

        async def all_() -> None:
            await asyncio.gather(*(one(messages // sessions) for _ in range(sessions)))

        asyncio.run(all_())
    return time.perf_counter() - t0


def measure(server: Server, messages: int, sessions: int, reuse: bool) -> tuple[float, float]:
    """(messages/second, server CPU microseconds per message) for one round."""
    c0 = server.cpu()
    wall = drive(server.port, messages, sessions, reuse)
    time.sleep(0.05)  # let the server finish the last connection's bookkeeping
    return messages / wall, (server.cpu() - c0) / messages * 1e6


def main() -> None:
    args = [a for a in sys.argv[1:]]
    messages = int(args[0]) if len(args) > 0 else 3000
    sessions = int(args[1]) if len(args) > 1 else 10
    rounds = int(args[2]) if len(args) > 2 else 5
    modes = (args[3] if len(args) > 3 else "fresh,reuse").split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    client = "smtp-source" if shutil.which("smtp-source") or Path(
        "/usr/sbin/smtp-source").exists() else "aiosmtplib"
    servers = {"bare": Server("bare", tmp / "bare"), "sandbox": Server("sandbox", tmp / "sb")}
    try:
        print(f"client={client} messages={messages} sessions={sessions} rounds={rounds} "
              f"load={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}")
        for mode in modes:
            reuse = mode == "reuse"
            for s in servers.values():
                drive(s.port, 300, sessions, reuse)  # warm-up
            print(f"\nmode={mode}")
            print("round  bare msg/s  sandbox msg/s  rate ratio   bare cpu-us  sandbox cpu-us"
                  "  cpu ratio (bare/sandbox)")
            rate_ratios, cpu_ratios = [], []
            for r in range(rounds):
                order = ("bare", "sandbox") if r % 2 == 0 else ("sandbox", "bare")
                got = {k: measure(servers[k], messages, sessions, reuse) for k in order}
                (br, bc), (sr, sc) = got["bare"], got["sandbox"]
                rate_ratios.append(sr / br)
                cpu_ratios.append(bc / sc)
                print(f"{r:5d} {br:11.0f} {sr:14.0f} {sr / br:11.2f} {bc:13.0f} {sc:15.0f}"
                      f" {bc / sc:12.2f}")
            print(f"median: rate ratio {statistics.median(rate_ratios):.2f} "
                  f"(min {min(rate_ratios):.2f}), cpu ratio {statistics.median(cpu_ratios):.2f} "
                  f"(min {min(cpu_ratios):.2f}); load={os.getloadavg()[0]:.1f}")
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--serve":
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        serve(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
