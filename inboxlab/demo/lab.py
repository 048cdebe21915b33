"""The demo's steps, in order, with every child process stopped on any exit.

Owns ``DemoOptions`` and ``run_demo``: start a DNS server with the demo lab's zone
(``inboxlab dns serve``), the sandbox checking authentication against it (``inboxlab sandbox
--json --dns``) and
the warmup simulation (``inboxlab sim run warmup-30d``) side by side, tune the warming pool's
policy in a tiny simulation and stage the winner as a 10 % canary through the promotion gates
(``inboxlab.demo.promotion``; a refusal is reported, not fatal), start the engine
(``inboxlab serve`` on a free port with ``fixtures/demo/lab.toml`` routed to the sandbox),
POST the demo traffic, wait for the spool to drain (or settle, or a deadline), stop the
engine and the sandbox with SIGTERM, load the three runs into the warehouse exactly once,
write the HTML report and print the summary. Each invocation works in its own run folder
``<home>/demo/<run>``; the warehouse under ``<home>`` accumulates runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InputError

if TYPE_CHECKING:
    from inboxlab.demo.promotion import PromotionOutcome

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DEMO = FIXTURES / "demo"
PORT_ENV = {"gmail": "INBOXLAB_PORT_GMAIL", "yahoo": "INBOXLAB_PORT_YAHOO",
            "outlook": "INBOXLAB_PORT_OUTLOOK", "icloud": "INBOXLAB_PORT_ICLOUD",
            "generic": "INBOXLAB_PORT_GENERIC"}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    home: Path
    messages: int = 3000
    keep: bool = False          # keep the run folder's spool and stored mail
    wait_s: float = 90.0        # longest wait for the spool to drain after intake
    settle_s: float = 8.0       # stop waiting when nothing changed this long (retries pending)
    sim_scale: float = 0.02
    feedback_s: float = 3.0     # the sandbox runs this long after the engine stops
    seed: int = 7


@dataclass(slots=True)
class DemoResult:
    run: str
    run_dir: Path
    report: Path
    live_run_id: str
    sandbox_run_ids: list[str]
    sim_run_ids: list[str]
    promotion: PromotionOutcome
    accounting: dict[str, int]
    accepted: int
    rows: list[dict[str, Any]]
    timings: dict[str, float]


def dns_zone(run_dir: Path) -> Path:
    """The demo lab's DNS zone (DKIM key records of the demo signing keys, SPF listing the
    demo pools' source addresses, DMARC, the bounce MX), written to ``run_dir``."""
    from engine.config import load_config
    from sim.dns.zone import lab_zone

    out = run_dir / "lab.zone"
    out.write_text(lab_zone(load_config(DEMO / "lab.toml")))
    return out


def sandbox_config(run_dir: Path) -> Path:
    """The demo sandbox config (models from the fixtures) in ``run_dir``; authentication is
    checked against the demo's DNS server (``--dns``), not config tables."""
    text = (DEMO / "sandbox.toml").read_text()
    text = re.sub(r"(?m)^models_dir = .*$",
                  "models_dir = " + json.dumps(str(FIXTURES / "models")), text)
    out = run_dir / "sandbox.toml"
    out.write_text(text)
    return out


def _step(console: Any, msg: str) -> None:
    console.print(f"[bold cyan]==[/] {msg}")


def run_demo(opts: DemoOptions, out: Any, err: Any) -> DemoResult:
    """Run the whole demo; ``out``/``err`` are rich consoles (summary / progress). Raises
    ``InputError`` on any failure, after stopping every process it started."""
    from inboxlab.demo.procs import Children

    if opts.messages < 1:
        raise InputError("--messages must be at least 1")
    home = opts.home.resolve()
    run = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    run_dir = home / "demo" / run
    run_dir.mkdir(parents=True, exist_ok=False)
    kids = Children()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C (even when the shell started us with SIGINT ignored) and SIGTERM both unwind
    # through the finally below, which stops every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        return _run(opts, home, run, run_dir, kids, out, err)
    except KeyboardInterrupt:
        raise InputError(f"interrupted; every process the demo started is stopped "
                         f"(run folder {run_dir})") from None
    finally:
        kids.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(opts: DemoOptions, home: Path, run: str, run_dir: Path, kids: Any, out: Any,
         err: Any) -> DemoResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from inboxlab.demo import traffic
    from inboxlab.demo.procs import free_port, inboxlab_cmd, wait_port

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    logs = run_dir / "logs"

    _step(err, f"run folder {run_dir}")
    # 1. the warmup policy in simulation, in the background while the live part runs
    sim_out = run_dir / "sim"
    kids.start("sim", inboxlab_cmd("sim", "run", "warmup-30d", "--seed", str(opts.seed),
                                   "--scale", str(opts.sim_scale), "--out", str(sim_out)),
               log=logs / "sim.log")
    _step(err, f"simulating warmup-30d (scale {opts.sim_scale}, seed {opts.seed}) in the "
               "background")

    # 2. the DNS server (the lab's zone: DKIM, SPF, DMARC), then the sandbox, which checks
    # every message's authentication with real lookups on it
    with err.status("starting the DNS server (the demo lab's zone)"):
        zone = dns_zone(run_dir)
        kids.start("dns", inboxlab_cmd("dns", "serve", "--zone", str(zone), "--json"),
                   log=logs / "dns.log", pipe=True)
        line = kids.first_line("dns", 30, logs / "dns.log")
        try:
            dns_addr = str(json.loads(line)["dns"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"the DNS server printed no address: {line[:200]}") from None
    _step(err, f"dns: {dns_addr} serving {zone.name} (DKIM, SPF, DMARC)")
    with err.status("starting the sandbox (one SMTP server per provider model)"):
        cfg = sandbox_config(run_dir)
        kids.start("sandbox", inboxlab_cmd("sandbox", "--config", str(cfg), "--home",
                                           str(run_dir), "--json", "--dns", dns_addr),
                   log=logs / "sandbox.log", pipe=True)
        line = kids.first_line("sandbox", 30, logs / "sandbox.log")
        try:
            addrs = {k: v.rsplit(":", 1) for k, v in json.loads(line).items()}
        except (ValueError, AttributeError):
            raise InputError(f"sandbox printed no address map: {line[:200]}") from None
    _step(err, "sandbox: " + ", ".join(f"{k} {h}:{p}" for k, (h, p) in addrs.items()))

    # 3. the warmup policy tuned in simulation, admitted through the gates, staged as a canary
    from inboxlab.demo.promotion import describe, promote_warmup

    t_p = time.monotonic()
    with err.status("tuning the warming pool's policy in simulation and promoting it"):
        promo = promote_warmup(home, run_dir, DEMO / "lab.toml", seed=opts.seed, run=run)
    timings["promote"] = time.monotonic() - t_p
    colour = "green" if promo.outcome == "canary" else "yellow"
    _step(err, f"[{colour}]promotion {promo.outcome}[/]: {promo.message}")

    # 4. the engine
    env = dict(os.environ)
    env.update({PORT_ENV[k]: p for k, (_, p) in addrs.items() if k in PORT_ENV})
    env["INBOXLAB_SANDBOX_HOST"] = "127.0.0.1"
    # verified STARTTLS: the engine trusts the certificate this sandbox published
    env["INBOXLAB_SANDBOX_CA"] = str(run_dir / "sandbox" / "tls-cert.pem")
    port = free_port()
    engine_home = run_dir / "engine"
    with err.status(f"starting the engine on 127.0.0.1:{port}"):
        proc = kids.start("engine", inboxlab_cmd(
            "serve", "--config", str(DEMO / "lab.toml"), "--home", str(engine_home),
            "--port", str(port), "--seed", str(opts.seed)), log=logs / "engine.log", env=env)
        wait_port(port, proc, 60, "the engine (inboxlab serve)", logs / "engine.log")
    timings["start"] = time.monotonic() - t0 - timings["promote"]

    # 5. traffic over HTTP
    reqs = traffic.plan(opts.messages, run, opts.seed)
    t1 = time.monotonic()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=False) as bar:
        task = bar.add_task("POST /v1/messages", total=len(reqs))
        sent = traffic.send(f"http://127.0.0.1:{port}", reqs,
                            on_done=lambda: bar.advance(task))
    timings["intake"] = time.monotonic() - t1
    accepted = sent["created"]

    # 6. wait for the spool to drain (or settle with only far-off retries, or a deadline)
    t2 = time.monotonic()
    left = _drain(engine_home / "spool.db", kids, opts, err)
    timings["drain"] = time.monotonic() - t2

    # 7. stop the engine, then the sandbox (it writes events.parquet on SIGTERM)
    with err.status("stopping the engine and the sandbox (SIGTERM)"):
        rc_engine = kids.stop("engine", 30)
        time.sleep(opts.feedback_s)  # late complaints (Yahoo CFL, JMRP) land in the sandbox
        rc_sandbox = kids.stop("sandbox", 30)
    if rc_engine not in (0, None):
        raise InputError(f"the engine exited with code {rc_engine} (log: {logs / 'engine.log'})")
    if rc_sandbox not in (0, None):
        raise InputError(f"the sandbox exited with code {rc_sandbox} "
                         f"(log: {logs / 'sandbox.log'})")
    _step(err, f"engine and sandbox stopped; {left} recipients still queued for retry")

    # 8. the simulation must be done by now
    with err.status("waiting for the simulation"):
        sim = kids.procs["sim"]
        try:
            rc_sim = sim.wait(max(10.0, 120 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise InputError("the simulation did not finish in time "
                             f"(log: {logs / 'sim.log'})") from None
        kids.stop("sim", 1)
    if rc_sim != 0:
        raise InputError(f"the simulation exited with code {rc_sim} (log: {logs / 'sim.log'})")

    # 9. the warehouse
    t3 = time.monotonic()
    with err.status(f"loading the runs into the warehouse under {home}"):
        live_run, sandbox_runs, sim_runs = _load(home, run_dir, engine_home, sim_out)
    timings["ingest"] = time.monotonic() - t3
    _step(err, f"warehouse: live {live_run}, sandbox {', '.join(sandbox_runs)}, "
               f"sim {', '.join(sim_runs)}")

    # 10. the report
    report = home / "reports" / f"demo-{run}.html"
    with err.status("writing the HTML report"):
        _cli(["report", "weekly", "--home", str(home), "--out", str(report)], logs / "report.log")
    if not report.is_file():
        raise InputError(f"the report was not written (log: {logs / 'report.log'})")

    from inboxlab.demo.summary import live_accounting, render, summary_rows

    rows = summary_rows(home, [live_run, *sandbox_runs, *sim_runs])
    accounting = live_accounting(home, live_run)
    if not opts.keep:
        for bulky in [engine_home / n for n in ("spool.db", "spool.db-wal", "spool.db-shm")] + [
                run_dir / "sandbox" / p for p in ("gmail", "yahoo", "outlook", "icloud",
                                                 "generic")]:
            if bulky.is_dir():
                shutil.rmtree(bulky, ignore_errors=True)
            elif bulky.exists():
                bulky.unlink()
    timings["total"] = time.monotonic() - t0

    out.print(render(rows, f"inboxlab demo {run}: {accepted} messages accepted live"))
    out.print("live recipients by final state: "
              + ", ".join(f"{k} {v}" for k, v in accounting.items()))
    for line in describe(promo, home):
        out.print(line, highlight=False)
    out.print(f"report:    {report}")
    out.print(f"dashboard: inboxlab dash --home {home}")
    out.print("timings:   " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return DemoResult(run, run_dir, report, live_run, sandbox_runs, sim_runs, promo, accounting,
                      accepted, rows, timings)


def _cli(args: list[str], log: Path) -> None:
    from inboxlab.demo.procs import _tail, inboxlab_cmd

    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        rc = subprocess.run(inboxlab_cmd(*args), stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                            timeout=120, check=False).returncode
    if rc != 0:
        raise InputError(f"`inboxlab {' '.join(args[:2])}` failed{_tail(log)} (log: {log})")


def _drain(spool_path: Path, kids: Any, opts: DemoOptions, err: Any) -> int:
    """Poll the spool until nothing is active, nothing changed for ``settle_s``, or
    ``wait_s`` passed; the number of recipients still active."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from engine.spool import Spool

    spool = Spool(spool_path, recover=False)
    try:
        start = last_change = time.monotonic()
        last = spool.active()
        with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("draining the spool", total=None)
            while last and time.monotonic() - start < opts.wait_s:
                proc = kids.procs.get("engine")
                if proc is not None and proc.poll() is not None:
                    raise InputError(f"the engine exited with code {proc.returncode} "
                                     "while delivering")
                time.sleep(0.5)
                now_active = spool.active()
                if now_active != last:
                    last, last_change = now_active, time.monotonic()
                elif time.monotonic() - last_change >= opts.settle_s:
                    break
                bar.update(task, description=f"draining the spool: {last} recipients active")
        return last
    finally:
        spool.close()


def _load(home: Path, run_dir: Path, engine_home: Path, sim_out: Path
          ) -> tuple[str, list[str], list[str]]:
    """Engine outbox, sandbox run and sim run into the warehouse, exactly once per run id."""
    from engine.eventio import events_frame
    from engine.spool import Spool
    from inboxlab.warehouse.store import ingest_run_dir, load_frame, run_key

    spool = Spool(engine_home / "spool.db", recover=False)
    try:
        events, after = [], 0
        while batch := spool.events_after(after, limit=50_000):
            events.extend(batch)
            after = batch[-1].seq or after
    finally:
        spool.close()
    live_ids = sorted({e.run_id for e in events if e.run_id})
    if len(live_ids) != 1:
        raise InputError(f"expected one engine run in the spool, found {live_ids}")
    loaded = load_frame(events_frame(events), run_key("live", live_ids[0]), home,
                        {"from": str(engine_home / "spool.db")})
    if not loaded.loaded:
        raise InputError(f"engine run {live_ids[0]} is already in the warehouse under {home} "
                         "(a reused process id); re-run the demo")
    sandbox_dir = run_dir / "sandbox"
    if not (sandbox_dir / "events.parquet").is_file():
        raise InputError(f"the sandbox wrote no events.parquet in {sandbox_dir}")
    sandbox_ids = [r.key.rsplit(":", 1)[1] for r in ingest_run_dir(sandbox_dir, home)]
    sim_ids = [r.key.rsplit(":", 1)[1] for r in ingest_run_dir(sim_out, home)]
    return live_ids[0], sandbox_ids, sim_ids
