"""``inboxlab serve``: every listener and loop of the engine in one asyncio process.

Owns startup and shutdown of the whole engine process: the spool (opened with crash
recovery; ``<home>/spool.db`` by default, or ``[serve] spool`` / ``--spool``: a SQLite path
or a ``postgresql://`` URL, where several ``inboxlab serve`` processes are the nodes of one
shared queue, each taking ``1/[serve] nodes`` of every pool's capacity), the per-home HMAC
secret, the HTTP intake (uvicorn on a socket bound here), the
delivery ``Runner``, the inbound feedback receiver (SMTP, wired to the runner's schedulers
through ``engine.inbound.wire.feed_runner``), SMTP submission (STARTTLS + AUTH, certificate
from ``[serve.submission]`` or generated once under the home) and the webhook dispatcher.
Every listener is bound before anything runs, so a busy port is one clear error and nothing
half-started is left behind. SIGTERM/SIGINT stop the intake, submission and inbound
listeners first, then the runner finishes in-flight sends, then the last webhook batches go
out (for at most ``[serve.webhooks].drain`` seconds); a restart on the same home resumes
from the spool and the webhook cursors. The runner follows the promotion records under
the home (``engine.rollout``). ``event_loop_factory`` picks uvloop when installed. It decides
no policy and parses no mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import LabConfig
from engine.errors import ConfigError, InputError


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` when uvloop is installed (and not turned off with
    ``INBOXLAB_LOOP=asyncio``), else None: the standard loop."""
    if os.environ.get("INBOXLAB_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running event loop is."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def home_secret(home: Path) -> bytes:
    """The HMAC secret of tokens (``INBOXLAB_SECRET`` or ``<home>/secret``, made once)."""
    env = os.environ.get("INBOXLAB_SECRET")
    if env:
        return env.encode()
    path = home / "secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass
class Listening:
    """Where a serving process listens, and what it started with (printed at start)."""

    http: str
    spool: str
    recovered: dict[str, int]
    inbound: str | None = None
    feedback_domains: list[str] = field(default_factory=list)
    submission: str | None = None
    certificate: str | None = None
    webhooks: list[str] = field(default_factory=list)
    webhooks_skipped: dict[str, str] = field(default_factory=dict)
    loop: str = "asyncio"  # the event loop implementation (``uvloop`` when installed)
    node: str | None = None  # this node's id on a shared PostgreSQL spool
    nodes: int = 1  # ``[serve] nodes``: this node runs 1/nodes of every pool's capacity

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        return {"http": self.http, "inbound": self.inbound,
                "feedback_domains": self.feedback_domains, "submission": self.submission,
                "certificate": self.certificate, "webhooks": self.webhooks,
                "webhooks_skipped": self.webhooks_skipped, "spool": self.spool,
                "recovered": self.recovered, "loop": self.loop, "node": self.node,
                "nodes": self.nodes}

    def lines(self) -> list[str]:
        """The human form: one line per listener."""
        node = f", node {self.node} of {self.nodes}" if self.node else ""
        out = [f"inboxlab: serving on http://{self.http} (spool {self.spool}{node}, "
               f"recovered {self.recovered}, {self.loop} loop)"]
        if self.inbound:
            out.append(f"inboxlab: inbound feedback on smtp://{self.inbound} for "
                       f"{', '.join(self.feedback_domains) or 'no domain'}")
        if self.submission:
            out.append(f"inboxlab: submission on smtp://{self.submission} (STARTTLS + AUTH, "
                       f"certificate {self.certificate})")
        if self.webhooks:
            out.append(f"inboxlab: webhooks for {', '.join(self.webhooks)}")
        return out

    def warnings(self) -> list[str]:
        """What runs degraded (printed to stderr)."""
        return [f"inboxlab: warning: webhooks of tenant {tenant} are off: {why}"
                for tenant, why in self.webhooks_skipped.items()]


def webhook_endpoints(config: LabConfig, env: Any = None) -> tuple[list[Any], dict[str, str]]:
    """(endpoints, {tenant: why skipped}). A tenant whose secret reference cannot be
    resolved is skipped unless ``[serve.webhooks].require_secrets`` (then ``ConfigError``)."""
    from engine.webhooks import Endpoint, resolve_secret

    base = Path(config.file).parent
    out: list[Endpoint] = []
    skipped: dict[str, str] = {}
    for name, t in sorted(config.tenants.items()):
        if t.webhook_url is None:
            continue
        try:
            if t.webhook_secret is None:
                raise ConfigError(config.file, f"tenants.{name}.webhook_secret",
                                  "a webhook_url needs a webhook_secret reference")
            secret = resolve_secret(t.webhook_secret, env=env, base=base, file=config.file)
        except ConfigError as exc:
            if config.serve.webhooks.require_secrets:
                raise ConfigError(config.file, f"tenants.{name}.webhook_secret",
                                  exc.reason) from None
            skipped[name] = exc.reason
            continue
        out.append(Endpoint(name, t.webhook_url, secret))
    return out, skipped


def _bind(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen for {what} on {host}:{port}: "
                         f"{exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _close(server: Any, timeout: float = 5.0) -> None:
    """Stop a listener (``close()`` coroutine), not waiting on idle clients forever."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.close(), timeout)


def in_flight(spool: Any) -> int:
    """Attempts this engine started and has not finished (what a clean stop must leave at
    0; on a shared PostgreSQL spool, this node's)."""
    return int(spool.open_attempts())


def spool_target(config: LabConfig, home: Path, spool: str | None = None) -> str | Path:
    """Where the spool is: ``spool`` (``--spool``) if given, else ``[serve] spool`` (a path
    relative to the lab file, or a URL), else ``<home>/spool.db``."""
    from engine.spool import is_pg_target

    target = spool if spool is not None else config.serve.spool
    if target is None:
        return home / "spool.db"
    if is_pg_target(target):
        return target
    path = Path(target).expanduser()
    if spool is None and not path.is_absolute():
        path = Path(config.file).parent / path
    return path


def open_serve_spool(config: LabConfig, home: Path, spool: str | None = None) -> Any:
    """Open the spool ``spool_target`` names (with crash recovery; on PostgreSQL also the
    takeover of dead nodes). Raises ``ConfigError`` (located at ``[serve] spool`` when it
    came from the file) or ``InputError`` (``--spool``) when it cannot be opened."""
    from engine.spool import is_pg_target, open_spool
    from engine.spool.pg import redact

    target = spool_target(config, home, spool)
    try:
        return open_spool(target, run_id=f"serve-{os.getpid()}")
    except ConfigError as exc:
        if not is_pg_target(target):
            raise
        if spool is None:
            raise ConfigError(config.file, "serve.spool", exc.reason) from None
        raise InputError(f"--spool {redact(str(target))}: {exc.reason}") from None


async def drain_webhooks(dispatcher: Any, seconds: float, poll: float = 0.05) -> bool:
    """Deliver what the outbox still holds, for at most ``seconds``. True if all caught up."""
    import httpx

    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient() as client:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                wake = await asyncio.wait_for(dispatcher.step(client), left)
            except TimeoutError:
                return False
            if wake is None:
                return True
            await asyncio.sleep(max(0.0, min(poll, wake - dispatcher.clock(),
                                             deadline - time.monotonic())))


async def serve(config: LabConfig, home: Path, *, host: str | None = None,
                port: int | None = None, seed: int = 0, ready: asyncio.Event | None = None,
                as_json: bool = False, inbound_port: int | None = None,
                submission_port: int | None = None, spool_url: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT. ``host``/``port``, the ``*_port`` arguments and
    ``spool_url`` (a path or a ``postgresql://`` URL) override ``[serve]``; ``ready`` is set
    once every listener is bound."""
    import uvicorn

    from engine.inbound import FeedbackProcessor, InboundServer, feedback_domains
    from engine.inbound.wire import feed_runner
    from engine.intake.app import create_app
    from engine.runner import Runner
    from engine.submission import SubmissionServer, self_signed_context
    from engine.webhooks import WebhookDispatcher

    cfg = config.serve
    host = host or cfg.host
    port = cfg.http_port if port is None else port
    endpoints, skipped = webhook_endpoints(config) if cfg.webhooks.enabled else ([], {})
    http_sock = _bind(host, port, "HTTP intake")  # first: a busy port changes nothing
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        http_sock.close()
        raise InputError(f"cannot use the home {home}: {exc.strerror or exc}") from None
    tls = None
    if cfg.submission.enabled:
        base = Path(config.file).parent
        cert = base / cfg.submission.cert_file if cfg.submission.cert_file else None
        key = base / cfg.submission.key_file if cfg.submission.key_file else None
        try:
            tls = self_signed_context(home, cfg.submission.hostname, cert, key)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            http_sock.close()
            raise ConfigError(config.file, "serve.submission.cert_file",
                              f"cannot load the certificate: {exc}") from None

    try:
        secret = home_secret(home)
        spool = open_serve_spool(config, home, spool_url)
    except OSError as exc:
        http_sock.close()
        raise InputError(f"cannot use the home {home}: {exc.strerror or exc}") from None
    except BaseException:
        http_sock.close()
        raise
    closers: list[Any] = []
    try:
        tls_context = None
        if cfg.tls_ca_file is not None:  # trust exactly these CAs (checked by the loader)
            import ssl

            tls_context = ssl.create_default_context(cafile=cfg.tls_ca_file)
        runner = Runner(config, spool, secret=secret, seed=seed, home=home,
                        node_share=1.0 / cfg.nodes, tls_context=tls_context)
        info = Listening(http=_addr(host, int(http_sock.getsockname()[1])),
                         spool=spool.location(), recovered=dict(spool.recovered),
                         node=getattr(spool, "node", None), nodes=cfg.nodes,
                         webhooks=[e.tenant for e in endpoints], webhooks_skipped=skipped,
                         loop=loop_name())
        feed = feed_runner(runner)
        processor = FeedbackProcessor(spool, secret, config=config,
                                      on_signal=lambda s: _safe_feed(feed, s))
        if cfg.inbound.enabled:
            domains = feedback_domains(config, tuple(cfg.inbound.feedback_domains))
            inbound = InboundServer(processor, domains, host=cfg.inbound.host,
                                    port=cfg.inbound.port if inbound_port is None
                                    else inbound_port, hostname=cfg.inbound.hostname)
            try:
                bound = await inbound.start()
            except OSError as exc:
                raise InputError(f"cannot listen for inbound feedback on {cfg.inbound.host}:"
                                 f"{inbound.port}: {exc.strerror or exc}") from None
            closers.append(inbound)
            info.inbound = _addr(cfg.inbound.host, bound)
            info.feedback_domains = sorted(domains)
        submission = None
        if tls is not None:
            submission = SubmissionServer(
                config, spool, tls, host=cfg.submission.host,
                port=cfg.submission.port if submission_port is None else submission_port,
                hostname=cfg.submission.hostname, on_accept=runner.wake.set)
            try:
                bound = await submission.start()
            except OSError as exc:
                raise InputError(f"cannot listen for submission on {cfg.submission.host}:"
                                 f"{submission.port}: {exc.strerror or exc}") from None
            closers.append(submission)
            info.submission = _addr(cfg.submission.host, bound)
            info.certificate = (str(Path(config.file).parent / cfg.submission.cert_file)
                                if cfg.submission.cert_file else str(home / "submission.crt"))
        dispatcher = (WebhookDispatcher(
            spool, endpoints, batch=cfg.webhooks.batch, base_backoff=cfg.webhooks.base_backoff,
            max_backoff=cfg.webhooks.max_backoff, timeout=cfg.webhooks.timeout,
            rng=random.Random(f"{seed}:webhooks")) if endpoints else None)
        await _run(config, spool, runner, dispatcher, http_sock, closers, info, ready,
                   as_json, create_app(config, spool, secret=secret,
                                       on_accept=runner.wake.set), uvicorn)
        print(f"inboxlab: stopped: {runner.sent} sent this run, {in_flight(spool)} in "
              f"flight, feedback {dict(processor.stats)}"
              + (f", submission accepted {submission.accepted}" if submission else "")
              + (f", webhook batches {dispatcher.sent_batches} sent / "
                 f"{dispatcher.failed_batches} failed" if dispatcher else ""), flush=True)
    finally:
        for srv in reversed(closers):
            await _close(srv)
        http_sock.close()
        spool.close()


def _safe_feed(feed: Any, sig: Any) -> None:
    """Hand one signal to the runner; a signal for a pool this lab no longer has (a report
    about mail sent under an older config) is reported, never fatal to the receiver."""
    try:
        feed(sig)
    except InputError as exc:
        print(f"inboxlab: warning: feedback signal ignored: {exc}", file=sys.stderr,
              flush=True)


async def _run(config: LabConfig, spool: Any, runner: Any, dispatcher: Any,
               http_sock: socket.socket, closers: list[Any], info: Listening,
               ready: asyncio.Event | None, as_json: bool, app: Any, uvicorn: Any) -> None:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        server.should_exit = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    run_stop = asyncio.Event()
    wh_stop = asyncio.Event()
    run_task = asyncio.create_task(runner.run(run_stop))
    wh_task = (asyncio.create_task(dispatcher.run(wh_stop, poll=config.serve.webhooks.poll))
               if dispatcher is not None else None)
    try:
        srv_task = asyncio.create_task(server.serve(sockets=[http_sock]))
        while not server.started and not srv_task.done():
            await asyncio.sleep(0.02)
        if ready is not None:
            ready.set()
        if as_json:
            print(json.dumps(info.as_dict()), flush=True)
        else:
            print("\n".join(info.lines()), flush=True)
        for line in info.warnings():
            print(line, file=sys.stderr, flush=True)
        await srv_task  # returns once SIGTERM made uvicorn stop (in-flight requests answered)
        stop.set()
        for srv in reversed(closers):  # submission, then inbound: no new mail or reports
            await _close(srv)
        closers.clear()
        run_stop.set()
        await run_task  # in-flight deliveries finish, outcomes are written
        if wh_task is not None:
            wh_stop.set()
            await wh_task  # the batch in flight ends (cursor advanced or retried later)
            await drain_webhooks(dispatcher, config.serve.webhooks.drain)
            dispatcher.release()  # a shared spool's other nodes take the endpoints at once
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if not run_task.done():  # an error above: still let in-flight sends finish
            run_stop.set()
            await asyncio.gather(run_task, return_exceptions=True)
        if wh_task is not None and not wh_task.done():
            wh_stop.set()
            await asyncio.gather(wh_task, return_exceptions=True)
