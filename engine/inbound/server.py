"""The inbound SMTP receiver (aiosmtpd) for bounces and feedback-loop reports.

Owns the SMTP surface only: it accepts RCPT TO for the configured feedback domains and
refuses every other domain with ``550 5.7.1`` (never an open relay), limits message size,
and hands each message to ``FeedbackProcessor.process`` in the event loop it runs in (so
``on_signal`` reaches the policy core on the runner's loop). It does not parse reports.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine.inbound.process import FeedbackProcessor

MAX_SIZE = 10 * 1024 * 1024


class _Handler:
    def __init__(self, processor: FeedbackProcessor, domains: frozenset[str]) -> None:
        self.processor = processor
        self.domains = domains

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        domain = address.rsplit("@", 1)[-1].strip().strip(">").lower()
        if "@" not in address or domain not in self.domains:
            self.processor.stats["relay_refused"] += 1
            return "550 5.7.1 relaying denied: not a feedback domain of this receiver"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        out = self.processor.process(raw, list(envelope.rcpt_tos))
        return f"250 2.0.0 OK {out.status}"


class InboundServer:
    """``await start()`` binds host:port (0: ephemeral) in the running loop; ``close()``."""

    def __init__(self, processor: FeedbackProcessor, domains: frozenset[str], *,
                 host: str = "127.0.0.1", port: int = 0, hostname: str = "inbound.local"
                 ) -> None:
        self.processor = processor
        self.domains = domains
        self.host = host
        self.port = port
        self.hostname = hostname
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        from aiosmtpd.smtp import SMTP

        handler = _Handler(self.processor, self.domains)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(handler, hostname=self.hostname, data_size_limit=MAX_SIZE,
                         decode_data=False), self.host, self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and wait for the server to close."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
