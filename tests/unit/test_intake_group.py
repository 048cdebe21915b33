"""Group commit: every submitted item gets its own result after its group's commit, groups
respect the limit, and no arrival pattern leaves an item without a writer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.intake.group import GroupCommit


async def _direct(fn: Any, arg: Any) -> Any:
    """Run the commit on the loop: the writer ends in the same step as its last commit,
    the tightest window for an item queued just after."""
    return fn(arg)


async def _yielding(fn: Any, arg: Any) -> Any:
    await asyncio.sleep(0)
    return fn(arg)


class Store:
    def __init__(self) -> None:
        self.groups: list[list[int]] = []

    def commit(self, items: list[int]) -> list[Any]:
        self.groups.append(list(items))
        return [ValueError(f"odd {i}") if i % 7 == 3 else i * 10 for i in items]


@settings(max_examples=80, deadline=None)
@given(gaps=st.lists(st.integers(0, 3), min_size=1, max_size=60),
       limit=st.integers(1, 8), offload=st.sampled_from([_direct, _yielding, None]))
def test_every_item_gets_its_own_result(gaps: list[int], limit: int, offload: Any) -> None:
    store = Store()

    async def go() -> list[Any]:
        kw = {} if offload is None else {"offload": offload}
        gc: GroupCommit[int] = GroupCommit(store.commit, limit=limit, **kw)

        async def one(i: int) -> Any:
            try:
                return await gc.submit(i)
            except ValueError as exc:
                return str(exc)

        tasks = []
        for i, gap in enumerate(gaps):
            tasks.append(asyncio.ensure_future(one(i)))
            for _ in range(gap):  # let the writer run, finish, or not, between arrivals
                await asyncio.sleep(0)
        out = await asyncio.wait_for(asyncio.gather(*tasks), timeout=2)
        assert (gc.items, gc.groups) == (len(gaps), len(store.groups))
        return out

    out = asyncio.run(go())
    assert out == [f"odd {i}" if i % 7 == 3 else i * 10 for i in range(len(gaps))]
    assert sorted(i for g in store.groups for i in g) == list(range(len(gaps)))
    assert all(1 <= len(g) <= limit for g in store.groups)


def test_an_item_queued_right_after_the_last_commit_is_written() -> None:
    """The window the writer must not leave open: request B arrives in the loop step right
    after the writer answered A and found the queue empty."""
    store = Store()

    async def both() -> tuple[Any, Any]:
        gc: GroupCommit[int] = GroupCommit(store.commit, offload=_direct)
        a = await gc.submit(1)
        b = await gc.submit(2)  # directly: the very step A is answered in
        return a, b

    async def go() -> tuple[Any, Any]:
        return await asyncio.wait_for(both(), timeout=2)

    assert asyncio.run(go()) == (10, 20)
    assert store.groups == [[1], [2]]


def test_an_item_that_makes_the_commit_raise_fails_alone() -> None:
    calls = []

    def commit(items: list[int]) -> list[Any]:
        calls.append(list(items))
        if 0 in items:
            raise OSError("bad item")
        return items

    async def go() -> list[Any]:
        gc: GroupCommit[int] = GroupCommit(commit, limit=2)
        return await asyncio.gather(*(gc.submit(i) for i in range(4)),
                                    return_exceptions=True)

    out = asyncio.run(go())
    assert type(out[0]).__name__ == "OSError"
    assert out[1:] == [1, 2, 3]
    assert calls == [[0, 1], [0], [1], [2, 3]]


def test_a_commit_that_always_fails_fails_every_item() -> None:
    def commit(items: list[int]) -> list[Any]:
        raise OSError("disk full")

    async def go() -> list[Any]:
        gc: GroupCommit[int] = GroupCommit(commit)
        return await asyncio.gather(*(gc.submit(i) for i in range(5)),
                                    return_exceptions=True)

    assert all(isinstance(x, OSError) for x in asyncio.run(go()))


def test_a_commit_returning_the_wrong_number_of_results_is_an_error() -> None:
    async def go() -> Any:
        gc: GroupCommit[int] = GroupCommit(lambda items: items[:-1])
        return await asyncio.gather(gc.submit(1), gc.submit(2), return_exceptions=True)

    out = asyncio.run(go())
    assert all(isinstance(x, RuntimeError) for x in out)


def test_a_cancelled_waiter_does_not_stop_the_others() -> None:
    store = Store()

    async def go() -> list[Any]:
        gc: GroupCommit[int] = GroupCommit(store.commit)
        first = asyncio.ensure_future(gc.submit(1))
        rest = [asyncio.ensure_future(gc.submit(i)) for i in (2, 4)]
        await asyncio.sleep(0)
        first.cancel()
        return await asyncio.wait_for(asyncio.gather(*rest), timeout=2)

    assert asyncio.run(go()) == [20, 40]
    assert [1, 2, 4] in store.groups  # the cancelled request's item was still written


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GroupCommit(lambda items: items, limit=0)
