"""Group commit for the intake: many concurrent requests, one transaction.

Owns the queue and the one writer task: each request queues its item and waits; the writer
commits everything queued (at most ``limit`` per transaction) with ``commit(items)`` and
only then answers each request with its own result. A request that goes away (client
disconnect, cancellation) cannot stop the writer, so no other request waits forever. It
knows nothing of HTTP or of what an item means: ``commit`` is ``Spool.accept_many``.

If a commit raises instead of returning per-item results, the group is committed again
one item at a time, so an item that makes the commit raise fails alone.

Rules: exactly one writer runs while anything is queued. The writer clears its "running"
flag in the same step in which it finds the queue empty (no await in between), so an item
queued at any later moment starts a new writer; an item is never left without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Offload = Callable[..., Awaitable[Any]]


class GroupCommit(Generic[T]):
    """``await submit(item)`` returns ``commit([..., item, ...])``'s result for ``item``
    (raises it when it is an exception). ``offload(fn, arg)`` runs the commit: by default
    ``asyncio.to_thread``, so a slow disk never blocks the event loop."""

    def __init__(self, commit: Callable[[list[T]], list[Any]], *, limit: int = 512,
                 offload: Offload = asyncio.to_thread) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._commit = commit
        self._limit = limit
        self._offload = offload
        self._queued: list[tuple[T, asyncio.Future[Any]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # a reference, so it is not collected
        self.groups = 0  # transactions run (for tests and figures)
        self.items = 0  # items committed

    async def submit(self, item: T) -> Any:
        """Queue ``item``; return its result once its group is committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queued.append((item, fut))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._write())
        res = await fut
        if isinstance(res, BaseException):
            raise res
        return res

    def _one_by_one(self, items: list[T]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            try:
                res = self._commit([item])
                out.append(res[0] if len(res) == 1 else RuntimeError(
                    f"commit returned {len(res)} results for 1 item"))
            except Exception as exc:
                out.append(exc)
        return out

    async def _write(self) -> None:
        group: list[tuple[T, asyncio.Future[Any]]] = []
        try:
            while self._queued:
                group = self._queued[:self._limit]
                del self._queued[:self._limit]
                try:
                    results: list[Any] = await self._offload(self._commit,
                                                             [item for item, _ in group])
                    if len(results) != len(group):
                        raise RuntimeError(f"commit returned {len(results)} results for "
                                           f"{len(group)} items")
                except Exception as exc:
                    # one item must not fail its group (e.g. a commit that raises for one
                    # request instead of returning its error): commit each item alone; a
                    # disk that is full fails them all, each with its own error
                    results = ([exc] if len(group) == 1 else
                               await self._offload(self._one_by_one, [i for i, _ in group]))
                self.groups += 1
                self.items += len(group)
                for (_, fut), res in zip(group, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
                group = []
        finally:
            # normally reached with the queue empty and no await since the check (see
            # "Rules"); if the writer itself was cancelled (loop shutdown), nobody is left
            # waiting: the group in flight may or may not be committed, so its requests
            # get an error (a retry with the same Idempotency-Key gets the stored id).
            for _, fut in group + self._queued:
                if not fut.done():
                    fut.set_result(RuntimeError("intake writer stopped before the commit"))
            self._queued.clear()
            self._running = False
            self._task = None
