"""The sandbox's mail store: one append-only data file and one index per provider.

Owns ``MailStore``: where accepted mail goes, how it is written and how it is read back.
Under the store's root (``HOME/sandbox``) each provider has a folder with two files:

- ``mail.dat``: the accepted messages' bytes, one after another, exactly as received
  (a message for several recipients is written once);
- ``index.tsv``: one line per (message, recipient): ``mailbox<TAB>offset<TAB>length<TAB>
  message-id`` where ``mailbox`` is the recipient lower-cased with unsafe characters as
  ``_`` (``mailbox_name``) and the message-id has tabs and line breaks turned into spaces.

Both files are only appended to, so a restarted sandbox continues where the last one
stopped. Messages accepted during one event-loop iteration are written together at the
end of that iteration (``loop.call_soon``), in the loop thread, with two ``os.write``
calls: the data first, then the index lines, so every complete index line points at
bytes already written and a reader (any thread or process) ignores a torn last line.
Every message is on disk before the server reads the client's next command. No fsync:
the store is a lab record, not a durable spool. ``close`` writes anything still pending.
Knows nothing of SMTP or the provider models.

Reading: ``mailboxes(provider)``, ``count(provider, mailbox)``, ``messages(provider,
mailbox)`` and ``get(provider, mailbox, i)`` read the files from disk, from any thread and
on a store another process wrote; they see what has been flushed (everything the server
has answered once it reads the client's next command, and everything after ``close``).
``export_eml`` copies a provider's mail out as ``<mailbox>/<n>.eml`` files for tools that
want one file per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import QueryError

log = logging.getLogger("inboxlab.sandbox")
_SAFE = re.compile(r"[^A-Za-z0-9@._+-]")
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
DATA_FILE = "mail.dat"
INDEX_FILE = "index.tsv"
_ID_CLEAN = str.maketrans("\t\r\n", "   ")


def mailbox_name(recipient: str) -> str:
    """The store's name of a recipient's mailbox (lower-case, unsafe characters as ``_``)."""
    return _SAFE.sub("_", recipient.lower())[:200] or "_"


@dataclass(frozen=True, slots=True)
class Stored:
    """One index entry: where a message for ``mailbox`` sits in its provider's data file."""

    mailbox: str
    offset: int
    length: int
    message_id: str


class _Files:
    """One provider's open data and index files and the data file's current end."""

    __slots__ = ("data_fd", "end", "index_fd")

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.data_fd = os.open(folder / DATA_FILE, _FLAGS, 0o644)
        self.index_fd = os.open(folder / INDEX_FILE, _FLAGS, 0o644)
        self.end = os.fstat(self.data_fd).st_size

    def close(self) -> None:
        for fd in (self.data_fd, self.index_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class MailStore:
    """Accepted mail per provider and mailbox under ``root``, written once per loop tick."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.errors = 0
        self.written = 0
        self._files: dict[str, _Files | None] = {}
        self._names: dict[str, str] = {}
        # provider -> [(data, [index line per recipient]), ...] waiting for ``flush``
        self._pending: dict[str, list[tuple[bytes, list[str], str]]] = {}

    # ------------------------------------------------------------------ writing
    def put(self, provider: str, recipients: tuple[str, ...] | list[str], data: bytes,
            message_id: str = "") -> None:
        """Queue one message for ``recipients`` of ``provider`` (stored once, indexed per
        recipient). Without a running event loop (a synchronous caller) it is written at once.
        """
        names = self._names
        boxes = []
        for rcpt in recipients:
            name = names.get(rcpt)
            if name is None:
                name = names[rcpt] = mailbox_name(rcpt)
            boxes.append(name)
        item = (data, boxes, message_id.translate(_ID_CLEAN) if message_id else "")
        pending = self._pending
        batch = pending.get(provider)
        if batch is None:
            if not pending:
                try:
                    asyncio.get_running_loop().call_soon(self.flush)
                except RuntimeError:
                    pending[provider] = [item]
                    self.flush()
                    return
            batch = pending[provider] = []
        batch.append(item)

    def _open(self, provider: str) -> _Files | None:
        if provider in self._files:
            return self._files[provider]
        try:
            files: _Files | None = _Files(self.root / provider)
        except OSError as exc:
            log.warning("cannot open the mail store of %s: %s", provider, exc)
            files = None
        self._files[provider] = files
        return files

    def flush(self) -> None:
        """Write every pending message: per provider one data write and one index write."""
        pending, self._pending = self._pending, {}
        for provider, batch in pending.items():
            files = self._open(provider)
            count = sum(len(boxes) for _, boxes, _ in batch)
            if files is None:
                self.errors += count
                continue
            offset = files.end
            lines = []
            for data, boxes, mid in batch:
                tail = f"\t{offset}\t{len(data)}\t{mid}\n"
                lines.extend(name + tail for name in boxes)
                offset += len(data)
            try:
                blob = b"".join(item[0] for item in batch)
                if os.write(files.data_fd, blob) != len(blob):
                    raise OSError("short write")
                files.end = offset
                os.write(files.index_fd, "".join(lines).encode("utf-8", "surrogateescape"))
                self.written += count
            except OSError as exc:
                self.errors += count
                files.end = os.fstat(files.data_fd).st_size
                log.warning("cannot store %d messages for %s: %s", count, provider, exc)

    def close(self) -> None:
        """Write what is pending and close the files (safe to call twice)."""
        self.flush()
        for files in self._files.values():
            if files is not None:
                files.close()
        self._files.clear()

    # ------------------------------------------------------------------ reading
    def providers(self) -> list[str]:
        """Providers that have a store under the root, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / INDEX_FILE).is_file())

    def entries(self, provider: str) -> Iterator[Stored]:
        """Every complete index entry of ``provider`` in the order the mail was stored."""
        path = self.root / provider / INDEX_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise QueryError(f"cannot read {path}: {exc.strerror or exc}") from None
        end = raw.rfind(b"\n")  # a torn last line (a writer mid-append) is not an entry
        for n, line in enumerate(raw[: end + 1].decode("utf-8", "surrogateescape").splitlines()):
            parts = line.split("\t", 3)
            if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
                raise QueryError(f"{path}: line {n + 1}: not a mail index entry")
            yield Stored(parts[0], int(parts[1]), int(parts[2]), parts[3])

    def mailboxes(self, provider: str) -> dict[str, int]:
        """Mailbox name -> number of messages stored for it."""
        out: dict[str, int] = {}
        for e in self.entries(provider):
            out[e.mailbox] = out.get(e.mailbox, 0) + 1
        return out

    def index(self, provider: str, mailbox: str) -> list[Stored]:
        """The entries of one mailbox (a recipient address or its mailbox name), oldest first."""
        name = mailbox_name(mailbox)
        return [e for e in self.entries(provider) if e.mailbox == name]

    def count(self, provider: str, mailbox: str | None = None) -> int:
        """Messages stored for ``mailbox`` (every mailbox when None)."""
        if mailbox is None:
            return sum(1 for _ in self.entries(provider))
        return len(self.index(provider, mailbox))

    def _read(self, provider: str, entries: list[Stored]) -> list[bytes]:
        path = self.root / provider / DATA_FILE
        out = []
        try:
            with path.open("rb") as fh:
                for e in entries:
                    fh.seek(e.offset)
                    data = fh.read(e.length)
                    if len(data) != e.length:
                        raise QueryError(f"{path}: message at {e.offset} is cut short")
                    out.append(data)
        except OSError as exc:
            raise QueryError(f"cannot read {path}: {exc.strerror or exc}") from None
        return out

    def messages(self, provider: str, mailbox: str) -> list[bytes]:
        """The messages stored for ``mailbox``, oldest first."""
        return self._read(provider, self.index(provider, mailbox))

    def get(self, provider: str, mailbox: str, i: int) -> bytes:
        """Message ``i`` (0 the oldest, -1 the newest) of ``mailbox``; QueryError if none."""
        entries = self.index(provider, mailbox)
        try:
            entry = entries[i]
        except IndexError:
            raise QueryError(f"{provider}/{mailbox_name(mailbox)}: no message {i} "
                             f"({len(entries)} stored)") from None
        return self._read(provider, [entry])[0]

    def export_eml(self, provider: str, dest: Path | None = None) -> int:
        """Write ``provider``'s mail as ``dest/<mailbox>/<n>.eml`` (n from 1 per mailbox;
        ``dest`` defaults to the provider's folder); returns the number of files written."""
        dest = Path(dest) if dest is not None else self.root / provider
        entries = list(self.entries(provider))
        numbers: dict[str, int] = {}
        for e, data in zip(entries, self._read(provider, entries), strict=True):
            n = numbers[e.mailbox] = numbers.get(e.mailbox, 0) + 1
            folder = dest / e.mailbox
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{n}.eml").write_bytes(data)
        return len(entries)
