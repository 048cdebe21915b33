"""The sandbox's mail store: accepted mail as ``HOME/sandbox/<provider>/<mailbox>/<n>.eml``.

Owns ``MailStore``: the mailbox naming (the recipient, lower-cased, unsafe characters as
``_``), the per-mailbox numbering (continued from files already there) and the writing.
Messages accepted during one event-loop iteration are written together at the end of that
iteration (``loop.call_soon``), in the loop thread: plain ``os`` calls, no thread hand-off
(a writer thread cost more CPU per message in GIL hand-overs than the writes themselves),
and every file exists before the server reads the client's next command. No fsync: the
store is a lab record, not a durable spool. ``close`` writes anything still pending.
Knows nothing of SMTP or the provider models.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("inboxlab.sandbox")
_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def mailbox_name(recipient: str) -> str:
    """The folder name of a recipient's mailbox."""
    return _SAFE.sub("_", recipient.lower())[:200] or "_"


class MailStore:
    """Numbered ``.eml`` files per mailbox, written once per event-loop iteration."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.errors = 0
        self.written = 0
        self._pending: list[tuple[str, bytes]] = []

    def put(self, folder: Path, recipient: str, data: bytes) -> str:
        """Queue one message for ``recipient`` under ``folder``; returns the file's path.

        Without a running event loop (a synchronous caller) the file is written at once.
        """
        key = f"{folder}/{recipient}"
        name = self.names.get(key)
        if name is None:
            name = f"{folder}/{mailbox_name(recipient)}"
            self.names[key] = name
        n = self.counters.get(name)
        if n is None:
            Path(name).mkdir(parents=True, exist_ok=True)
            n = sum(1 for _ in Path(name).glob("*.eml"))
        n += 1
        self.counters[name] = n
        path = f"{name}/{n}.eml"
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self._pending.append((path, data))
                self.flush()
                return path
        self._pending.append((path, data))
        return path

    def flush(self) -> None:
        """Write every pending message."""
        batch, self._pending = self._pending, []
        for path, data in batch:
            try:
                fd = os.open(path, _FLAGS, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self.written += 1
            except OSError as exc:
                self.errors += 1
                log.warning("cannot store %s: %s", path, exc)

    def close(self) -> None:
        """Write what is pending (safe to call twice)."""
        self.flush()
