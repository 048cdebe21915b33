"""The sandbox: provider models behind real aiosmtpd servers on loopback.

Owns ``Sandbox`` (one SMTP server per provider in one asyncio loop), ``SandboxThread``
(the same in a background thread, for synchronous callers and tests), the per-connection
protocol ``ModelSMTP`` and the handler that asks the ``ProviderModel`` for every reply.
The peer address of a connection is the source IP the model sees (clients bind
127.0.0.x). Model time is ``start + elapsed_real * time_scale``.

Writes, under ``HOME/sandbox/``: accepted mail in ``<provider>/mail.dat`` with its index
``<provider>/index.tsv`` (``sim.sandbox.store``: append-only, written in batches once per
loop iteration, read back with ``MailStore``), ``events.jsonl``
(``engine.events.Event`` rows, source "sandbox", buffered and serialised once per tick),
``stats.json``, ``tls-cert.pem`` (the STARTTLS certificate, for clients that verify) and,
on stop, ``events.parquet`` when ``engine.eventio`` is available. Sends
ARF complaints and RFC 3464 DSNs by SMTP (aiosmtplib) to the configured feedback address
when the model's delay has passed. Client input never crashes a server: every hook is
guarded. The per-message path reads headers with a line scan and verifies DKIM only for
signed mail (``sim.sandbox.messages``); MAIL/RCPT addresses of the plain ``<a@b>`` form skip
aiosmtpd's header-parser route (same result, far fewer allocations), and a sandbox that owns
its process freezes the start-up heap out of the garbage collector's way (``gc.freeze``).
Run it on uvloop (``new_event_loop``).
Must not contain provider behaviour: that lives in ``sim.providers``.

Lane header convention: a sender may mark a message's lane with
``X-Inboxlab-Lane: transactional | lifecycle | prospecting``; the models use it for
per-lane complaint and engagement rates. Without it, mail carrying ``List-Unsubscribe``
counts as lifecycle and other mail as transactional (``sim.sandbox.messages``).
Multi-recipient transactions get one reply per RCPT; DATA is accepted for the accepted
recipients only, stored once and indexed per recipient, with one event per recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import random
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

from engine.errors import InputError
from engine.events import COLUMN_NAMES, EVENT_NAMES
from sim.providers.facts import Consequence, Reply
from sim.providers.facts import Session as ModelSession
from sim.providers.model import ProviderModel
from sim.sandbox.config import ProviderServer, SandboxConfig
from sim.sandbox.messages import build_arf, build_dsn, message_facts, split_message
from sim.sandbox.store import MailStore

if TYPE_CHECKING:
    from sim.dns.auth import DnsAuth

log = logging.getLogger("inboxlab.sandbox")
STOP_DRAIN_S = 1.0  # how long ``stop`` waits for feedback reports in flight
logging.getLogger("mail.log").setLevel(logging.CRITICAL)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed (faster sockets), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Clock:
    """Model time from the monotonic clock, compressed by ``scale``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.epoch = time.time()
        self.mono = time.monotonic()

    def now(self) -> float:
        return self.epoch + (time.monotonic() - self.mono) * self.scale

    def elapsed_real(self) -> float:
        return time.monotonic() - self.mono

    def real_delay(self, model_seconds: float) -> float:
        return max(0.0, model_seconds / self.scale)


class EventLog:
    """Buffered JSON lines of event rows; keeps the rows for a Parquet export.

    Rows are built straight in ``Event.to_row`` form (``ts`` as epoch seconds, ``detail`` as
    a JSON string), not as ``Event`` objects, so the per-message path makes one dict; they
    are checked against the same rules ``Event`` checks (names, source, ts, smtp_code).
    Serialised to JSON at ``flush`` (every tick), not per message.
    """

    _encode = json.JSONEncoder(separators=(",", ":"), default=str).encode

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self.fh = path.open("a", encoding="utf-8")
        self.rows: list[dict[str, Any]] = []
        self.written = 0
        self.seq = 0
        self._template: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
        self._template.update(source="sandbox", run_id=run_id)
        self._details: dict[str, str] = {}

    def emit(self, *, ts: float, event: str, detail: dict[str, Any] | None = None,
             **fields: Any) -> None:
        """Append one row; a field the schema refuses is logged and the row dropped."""
        if event not in EVENT_NAMES or not math.isfinite(ts):
            log.warning("dropped event: %r at %r", event, ts)
            return
        code = fields.get("smtp_code")
        if code is not None and not 200 <= code <= 599:
            log.warning("dropped event: smtp_code out of range: %r", code)
            return
        self.seq += 1
        row = self._template.copy()
        row.update(fields)
        row["ts"] = ts
        row["event"] = event
        row["seq"] = self.seq
        rcpt = row["recipient"]
        if rcpt is not None and row["recipient_domain"] is None and "@" in rcpt:
            row["recipient_domain"] = rcpt.rsplit("@", 1)[1].lower()
        if detail is not None:
            stage = detail.get("stage") if len(detail) == 1 else None
            text = self._details.get(stage) if isinstance(stage, str) else None
            if text is None:
                text = json.dumps(detail, sort_keys=True, separators=(",", ":"))
                if isinstance(stage, str):
                    self._details[stage] = text
            row["detail"] = text
        self.rows.append(row)

    def flush(self) -> None:
        if self.written < len(self.rows):
            encode = self._encode
            self.fh.write("".join(encode(row) + "\n" for row in self.rows[self.written:]))
            self.written = len(self.rows)
        self.fh.flush()

    def close(self) -> None:
        self.flush()
        self.fh.close()


class Provider:
    """One provider's runtime: model, clock, faults, store, counters."""

    def __init__(self, spec: ProviderServer, sandbox: Sandbox) -> None:
        self.spec = spec
        self.name = spec.name
        self.sandbox = sandbox
        cfg = sandbox.config
        import numpy as np

        self.model = ProviderModel(
            spec.params, np.random.default_rng([cfg.seed, _stable(spec.name)]),
            start=sandbox.clock.now(),
        )
        for ip, days in spec.ip_ages.items():
            self.model.set_ip_age(ip, days, sandbox.clock.now())
        for nb in spec.listed:
            self.model.list_netblock(nb, float("inf"))
        self.faults = random.Random(f"{spec.faults.seed}:{spec.name}")
        self.message_ids: dict[str, int] = {}
        self.stats = {"connections": 0, "accepted": 0, "deferred": 0, "bounced": 0,
                      "duplicates": 0, "faults": 0, "feedback_sent": 0, "feedback_failed": 0}

    def fault(self, probability: float) -> bool:
        if probability <= 0.0:
            return False
        hit = self.faults.random() < probability
        if hit:
            self.stats["faults"] += 1
        return hit

    def in_storm(self) -> bool:
        t = self.sandbox.clock.elapsed_real()
        for s in self.spec.faults.storms:
            if s.start_s <= t < s.start_s + s.duration_s and self.fault(s.probability):
                return True
        return False

    def store(self, recipients: tuple[str, ...], data: bytes, message_id: str = "") -> None:
        """Queue one accepted message for ``recipients``' mailboxes."""
        self.sandbox.store.put(self.name, recipients, data, message_id)

    def log_reply(self, reply: Reply, *, source_ip: str, stage: str, recipient: str | None = None,
                  message_id: str | None = None, reason: str | None = None) -> None:
        if reply.ok and stage != "data":
            return
        event = "delivered" if reply.ok else ("deferred" if reply.temporary else "bounced")
        if not reply.ok:
            self.stats["deferred" if reply.temporary else "bounced"] += 1
        self.sandbox.events.emit(
            ts=self.sandbox.clock.now(), event=event, provider=self.name, source_ip=source_ip,
            recipient=recipient, message_id=message_id or None, smtp_code=reply.code,
            enhanced_code=reply.enhanced or None, response=reply.line(),
            reason=reason or reply.kind, detail={"stage": stage},
        )


def _stable(name: str) -> int:
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "big")


# ``<local@domain>`` with a plain RFC 5322 dot-atom local part and LDH domain labels: for
# these aiosmtpd's header-parser route (``_getaddr``) returns exactly the matched text, so
# ``ModelSMTP._getaddr`` answers them directly and hands anything else to the parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ANGLE_ADDR = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>").match


class ModelSMTP(SMTP):
    """aiosmtpd's protocol with the model's greeting, faults and provider texts."""

    def __init__(self, provider: Provider, **kwargs: Any) -> None:
        super().__init__(_Handler(provider), **kwargs)
        self.provider = provider
        self.ms: ModelSession | None = None
        self.source_ip = "0.0.0.0"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        seen_starttls = self._original_transport is not None
        super().connection_made(transport)
        if seen_starttls and self.ms is not None:
            self.provider.model.starttls(self.ms, self.provider.sandbox.clock.now())

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parse, with a same-result shortcut for plain ``<a@b>``."""
        m = _PLAIN_ANGLE_ADDR(arg)
        if m is None:
            return super()._getaddr(arg)
        rest = arg[m.end():]
        if "(" in rest:  # a comment after the address: the parser's business
            return super()._getaddr(arg)
        addr = m.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, (rest.lstrip() if rest[:1] in (" ", "\t") else rest)

    def connection_lost(self, error: Exception | None) -> None:
        if self.ms is not None:
            self.provider.model.close(self.ms, self.provider.sandbox.clock.now())
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        p = self.provider
        peer = self.session.peer if self.session else None
        self.source_ip = peer[0] if isinstance(peer, tuple) else "0.0.0.0"
        p.stats["connections"] += 1
        if p.fault(p.spec.faults.disconnect_at_connect):
            self.transport.close()
            return
        if p.fault(p.spec.faults.stall_probability):
            await asyncio.sleep(p.spec.faults.stall_s)
        now = p.sandbox.clock.now()
        ms, reply = p.model.connect(now, self.source_ip)
        self.ms = ms
        if not reply.ok or p.in_storm():
            if reply.ok:
                reply = p.model.reply("brownout", ip=self.source_ip)
            p.log_reply(reply, source_ip=self.source_ip, stage="connect")
            await self.push(reply.line())
            self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and status.startswith("552 Error:"):
            status = self.provider.model.reply(
                "too_large", size=str(self.provider.spec.params.max_message_bytes)).line()
        try:  # a plain try costs nothing on the per-reply path; a suppress() object does
            await super().push(status)
        except (ConnectionError, RuntimeError, AttributeError):  # the client has gone
            return

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.provider.fault(self.provider.spec.faults.tls_failure):
            await self.push("454 4.7.0 TLS not available due to local problem")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_DATA(self, arg: str) -> None:
        p = self.provider
        if (self.envelope is not None and self.envelope.rcpt_tos and not arg
                and p.fault(p.spec.faults.disconnect_mid_data)):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader.read(512), timeout=2.0)
            for rcpt in self.envelope.rcpt_tos:
                p.sandbox.events.emit(
                    ts=p.sandbox.clock.now(), event="deferred", provider=p.name,
                    source_ip=self.source_ip, recipient=rcpt,
                    reason="fault:disconnect_mid_data", detail={"stage": "data"})
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Handler:
    """aiosmtpd hooks: each asks the model and turns its ``Reply`` into an SMTP line."""

    def __init__(self, provider: Provider) -> None:
        self.p = provider

    def _close_after(self, server: ModelSMTP, reply: Reply) -> None:
        if reply.code == 421 and server.transport is not None:
            asyncio.get_running_loop().call_soon(server.transport.close)

    async def handle_exception(self, error: Exception) -> str:
        log.warning("%s: session error: %r", self.p.name, error)
        return "451 4.3.0 Internal error, try again later"

    async def handle_MAIL(self, server: ModelSMTP, session: SmtpSession, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        p = self.p
        if server.ms is None:
            return "503 5.5.1 Bad sequence of commands"
        if p.fault(p.spec.faults.stall_probability):
            await asyncio.sleep(p.spec.faults.stall_s)
        size = 0
        for opt in mail_options:
            if opt.upper().startswith("SIZE=") and opt[5:].isdigit():
                size = int(opt[5:])
        reply = p.model.mail(server.ms, p.sandbox.clock.now(), address, size)
        p.log_reply(reply, source_ip=server.source_ip, stage="mail")
        if reply.ok:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            if p.fault(p.spec.faults.disconnect_after_mail):
                asyncio.get_running_loop().call_soon(server.transport.close)
        self._close_after(server, reply)
        return reply.line()

    async def handle_RCPT(self, server: ModelSMTP, session: SmtpSession, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        p = self.p
        if server.ms is None:
            return "503 5.5.1 Bad sequence of commands"
        domain = address.rsplit("@", 1)[-1].lower()
        if p.sandbox.config.strict_domains and p.spec.params.domains and \
                domain not in p.spec.params.domains:
            reply = p.model.reply("relay_denied", recipient=address)
        else:
            reply = p.model.rcpt(server.ms, p.sandbox.clock.now(), address)
        p.log_reply(reply, source_ip=server.source_ip, stage="rcpt", recipient=address)
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        self._close_after(server, reply)
        return reply.line()

    async def handle_RSET(self, server: ModelSMTP, session: SmtpSession,
                          envelope: Envelope) -> str:
        if server.ms is not None:
            self.p.model.reset(server.ms)
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: ModelSMTP, session: SmtpSession,
                          envelope: Envelope) -> str:
        p = self.p
        if server.ms is None:
            return "503 5.5.1 Bad sequence of commands"
        if p.fault(p.spec.faults.stall_probability):
            await asyncio.sleep(p.spec.faults.stall_s)
        data = envelope.original_content or b""
        recipients = tuple(envelope.rcpt_tos)
        cfg = p.sandbox.config
        facts = message_facts(
            data, mail_from=envelope.mail_from or "", recipients=recipients,
            source_ip=server.source_ip, dkim_keys=cfg.dkim_keys, spf=cfg.spf,
            dmarc=cfg.dmarc, auth=p.sandbox.auth, helo=session.host_name or "")
        now = p.sandbox.clock.now()
        outcome = p.model.data(server.ms, now, facts)
        reply = outcome.reply
        if reply.ok:
            p.stats["accepted"] += 1
            if facts.message_id:
                seen = p.message_ids.get(facts.message_id, 0)
                p.message_ids[facts.message_id] = seen + 1
                if seen:
                    p.stats["duplicates"] += 1
            p.store(recipients, data, facts.message_id)
            if outcome.consequences:  # keep the headers a report quotes, not the file
                head = split_message(data)[0]
                for c in outcome.consequences:
                    p.sandbox.pending_originals[(p.name, c.recipient, c.message_id)] = head
        for rcpt in recipients:
            p.log_reply(reply, source_ip=server.source_ip, stage="data", recipient=rcpt,
                        message_id=facts.message_id)
        self._close_after(server, reply)
        return reply.line()


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Sandbox:
    """All configured providers' SMTP servers in the running event loop."""

    def __init__(self, config: SandboxConfig, home: Path, *, run_id: str = "",
                 freeze_gc: bool | None = None) -> None:
        """``freeze_gc``: after start-up, move every live object to the collector's permanent
        generation (``gc.freeze``) so full collections stop re-walking the imported modules
        (one took ~70 ms at a time in the benchmark); undone at ``stop``. It is process-wide,
        so the default (None) does it only when run on the main thread, i.e. when the sandbox
        owns its process (CLI, benchmark), not when embedded by ``SandboxThread``.
        """
        self.config = config
        self._freeze_gc = (threading.current_thread() is threading.main_thread()
                           if freeze_gc is None else freeze_gc)
        self._frozen = False
        self.home = Path(home) / "sandbox"
        self.home.mkdir(parents=True, exist_ok=True)
        self.clock = Clock(config.time_scale)
        self.run_id = run_id or f"sandbox-{int(time.time())}"
        self.events = EventLog(self.home / "events.jsonl", self.run_id)
        self.store = MailStore(self.home)
        # auth facts from real DNS lookups when the config names a server (sim.dns.auth)
        self.auth: DnsAuth | None = None
        if config.dns:
            from sim.dns.auth import DnsAuth

            self.auth = DnsAuth(config.dns)
        self.providers = {spec.name: Provider(spec, self) for spec in config.providers}
        self.addresses: dict[str, tuple[str, int]] = {}
        self.pending_originals: dict[tuple[str, str, str], bytes] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="inboxlab-sandbox-tls-"))

    async def start(self) -> dict[str, tuple[str, int]]:
        from sim.sandbox.tls import server_context

        loop = asyncio.get_running_loop()
        host = self.config.host
        listen = [host] if _is_ip(host) else []
        tls = server_context(self._tmp, self.config.hostname, [*listen, "127.0.0.1"])
        # the public certificate, for clients that verify (``[serve] tls_ca_file``)
        shutil.copyfile(self._tmp / "sandbox-cert.pem", self.home / "tls-cert.pem")
        for name, p in self.providers.items():
            spec = p.spec

            def factory(p: Provider = p) -> ModelSMTP:
                return ModelSMTP(
                    p, hostname=p.spec.params.banner_host, ident="",
                    data_size_limit=p.spec.params.max_message_bytes,
                    tls_context=tls if p.spec.tls else None, require_starttls=False,
                    enable_SMTPUTF8=True, timeout=60)

            try:
                server = await loop.create_server(factory, host=self.config.host, port=spec.port)
            except OSError as exc:
                for opened in self._servers:
                    opened.close()
                self._servers.clear()
                raise InputError(f"{self.config.file}: provider {name}: cannot listen on "
                                 f"{self.config.host} port {spec.port}: "
                                 f"{exc.strerror or exc}") from None
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
            self.addresses[name] = (sock[0], sock[1])
        self._ticker = loop.create_task(self._tick())
        if self._freeze_gc:
            gc.collect()
            gc.freeze()
            self._frozen = True
        return dict(self.addresses)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._tasks:  # reports in flight get a moment; a vanished receiver gets no more
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_DRAIN_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
                log.warning("%d feedback reports still unsent at stop", len(pending))
        self.events.close()
        self.store.close()
        self._write_parquet()
        stats: dict[str, Any] = {name: {**p.stats, "model": dict(p.model.stats)}
                                 for name, p in self.providers.items()}
        if self.store.errors:
            log.warning("%d accepted messages could not be stored", self.store.errors)
        (self.home / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
        shutil.rmtree(self._tmp, ignore_errors=True)
        if self._frozen:
            gc.unfreeze()
            self._frozen = False

    def _write_parquet(self) -> None:
        try:
            from engine import eventio  # type: ignore[attr-defined]
        except ImportError:
            return
        try:
            eventio.write_events(self.events.rows, self.home / "events.parquet")
        except Exception as exc:  # the JSONL file is the record; Parquet is a convenience
            log.warning("parquet export failed: %s", exc)

    async def _tick(self) -> None:
        while True:
            now = self.clock.now()
            for p in self.providers.values():
                for c in p.model.due(now):
                    self._fire(p, c)
            self.events.flush()
            await asyncio.sleep(0.05)

    def _fire(self, p: Provider, c: Consequence) -> None:
        event = {"complaint": "complaint", "bounce": "bounced", "engagement": "engagement",
                 "trap_hit": "trap_hit"}[c.kind]
        self.events.emit(ts=c.at, event=event, provider=p.name, source_ip=c.source_ip,
                         recipient=c.recipient, message_id=c.message_id or None,
                         enhanced_code=c.status or None, response=c.text or None,
                         reason=f"async:{c.kind}", detail={"report": c.report})
        original = self.pending_originals.pop((p.name, c.recipient, c.message_id), b"")
        if not c.report or not self.config.feedback_port:
            return
        task = asyncio.get_running_loop().create_task(self._send_report(p, c, original))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_report(self, p: Provider, c: Consequence, original: bytes) -> None:
        import aiosmtplib

        cfg = self.config
        host = p.spec.params.banner_host.split()[0]
        if c.kind == "complaint":
            to = cfg.arf_to
            data = build_arf(c, original, reporter=cfg.feedback_from, to=to, provider_host=host)
        else:
            to = cfg.dsn_to or c.mail_from or cfg.arf_to
            data = build_dsn(c, original, reporter=cfg.feedback_from, to=to, provider_host=host)
        try:
            await aiosmtplib.send(data, sender=cfg.feedback_from, recipients=[to],
                                  hostname=cfg.feedback_host, port=cfg.feedback_port,
                                  start_tls=False, use_tls=False, timeout=10)
            p.stats["feedback_sent"] += 1
        except asyncio.CancelledError:  # stopped while the receiver had not answered
            p.stats["feedback_failed"] += 1
            raise
        except Exception as exc:
            p.stats["feedback_failed"] += 1
            log.warning("%s: feedback to %s failed: %s", p.name, to, exc)


class SandboxThread:
    """A ``Sandbox`` running in its own event loop on a background thread."""

    def __init__(self, config: SandboxConfig, home: Path) -> None:
        self.config = config
        self.home = home
        self.loop = new_event_loop()
        self.sandbox: Sandbox | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="inboxlab-sandbox")

    def start(self) -> dict[str, tuple[str, int]]:
        self.thread.start()

        async def boot() -> dict[str, tuple[str, int]]:
            self.sandbox = Sandbox(self.config, self.home)
            return await self.sandbox.start()

        return asyncio.run_coroutine_threadsafe(boot(), self.loop).result(30)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in the sandbox's loop thread and return its result."""

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        """Stop the servers, write the files and end the thread (safe to call twice)."""
        if self.loop.is_closed():
            return
        if self.sandbox is not None:
            asyncio.run_coroutine_threadsafe(self.sandbox.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
