"""Fixtures that start and stop the sandbox (and a feedback sink, and a plain accepting
receiver) on loopback."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.sandbox.config import load_config
from sim.sandbox.server import SandboxThread


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + "}"
    raise TypeError(v)


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    """Write a small TOML document (top-level keys and one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines.extend(f'"{kk}" = {_toml_value(vv)}' for kk, vv in v.items())
    path.write_text("\n".join(lines) + "\n")
    tomllib.loads(path.read_text())
    return path


@pytest.fixture
def sandbox_factory(tmp_path: Path) -> Iterator[Callable[..., SandboxThread]]:
    started: list[SandboxThread] = []

    def start(doc: dict[str, Any], name: str = "sb") -> SandboxThread:
        cfg_path = write_config(tmp_path / f"{name}.toml", {"seed": 1, **doc})
        box = SandboxThread(load_config(cfg_path), tmp_path / name)
        box.start()
        started.append(box)
        return box

    yield start
    for box in started:
        box.stop()


class FeedbackSink:
    """A tiny aiosmtpd receiver on an ephemeral loopback port that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.rcpts: list[list[str]] = []
        self.arrived = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None

    def start(self) -> int:
        from aiosmtpd.smtp import SMTP

        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(envelope.original_content)
                sink.rcpts.append(list(envelope.rcpt_tos))
                sink.arrived.set()
                return "250 2.0.0 OK"

        async def boot() -> int:
            self.server = await self.loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", 0)
            return self.server.sockets[0].getsockname()[1]

        self.thread.start()
        return asyncio.run_coroutine_threadsafe(boot(), self.loop).result(10)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def feedback_sink() -> Iterator[FeedbackSink]:
    sink = FeedbackSink()
    sink.port = sink.start()  # type: ignore[attr-defined]
    yield sink
    sink.stop()


class PeerSink:
    """Accepts every message; remembers the peer address per recipient, in arrival order."""

    def __init__(self) -> None:
        self.peers: dict[str, str] = {}
        self.port = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for r in envelope.rcpt_tos:
            self.peers[r] = session.peer[0]
        return "250 2.0.0 ok"


@pytest.fixture
def sink() -> Iterator[PeerSink]:
    """An aiosmtpd receiver on 127.0.0.1 (a free port, ``sink.port``)."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    handler = PeerSink()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    handler.port = port
    yield handler
    ctl.stop()
