"""The inline driver: a handler coroutine stepped from callbacks, handed to a task on demand.

Real event loop, real futures and timeouts: what is checked is that a coroutine driven this
way ends exactly as it would in a task (its value, its exception, its timeout), and that it
is answered in the same call when it never waits.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.inline import drive, need_task


class Ended:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []
        self.event = asyncio.Event()

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.calls.append((result, error))
        self.event.set()


async def test_a_coroutine_that_never_waits_ends_inside_drive() -> None:
    async def answer() -> str:
        return "401"

    ended = Ended()
    assert drive(answer(), ended, asyncio.get_running_loop()) is True
    assert ended.calls == [("401", None)]
    assert asyncio.current_task() is not None  # the test's own task; the driver made none


async def test_suspending_on_a_future_resumes_without_a_task() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    seen: list[asyncio.Task[Any] | None] = []

    async def forward() -> int:
        value = await fut
        seen.append(asyncio.current_task())
        return value * 2

    ended = Ended()
    tasks_before = len(asyncio.all_tasks())
    assert drive(forward(), ended, loop) is False
    assert ended.calls == []
    loop.call_soon(fut.set_result, 21)
    await asyncio.wait_for(ended.event.wait(), 5)
    assert ended.calls == [(42, None)]
    assert seen == [None]  # resumed from the future's callback, not from a task
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_future_that_fails_raises_inside_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    async def forward() -> str:
        try:
            await fut
        except ConnectionResetError:
            return "502"
        return "200"

    ended = Ended()
    drive(forward(), ended, loop)
    fut.set_exception(ConnectionResetError())
    await asyncio.wait_for(ended.event.wait(), 5)
    assert ended.calls == [("502", None)]


async def test_need_task_hands_over_and_timeouts_work_there() -> None:
    loop = asyncio.get_running_loop()
    inside: list[asyncio.Task[Any] | None] = []

    async def slow_body() -> str:
        await need_task
        inside.append(asyncio.current_task())
        try:
            async with asyncio.timeout(0.05):  # needs a current task: fails inline
                await asyncio.sleep(10)
        except TimeoutError:
            return "408"
        return "200"

    ended = Ended()
    assert drive(slow_body(), ended, loop) is False
    await asyncio.wait_for(ended.event.wait(), 5)
    assert ended.calls == [("408", None)]
    assert inside[0] is not None


async def test_need_task_is_a_no_op_inside_a_task() -> None:
    async def body() -> str:
        await need_task
        return "ok"

    assert await body() == "ok"


async def test_an_exception_reaches_done_once() -> None:
    loop = asyncio.get_running_loop()

    async def broken() -> None:
        raise ValueError("boom")

    ended = Ended()
    assert drive(broken(), ended, loop) is True
    assert len(ended.calls) == 1
    assert isinstance(ended.calls[0][1], ValueError)

    async def broken_later() -> None:
        await need_task
        await asyncio.sleep(0)
        raise KeyError("later")

    ended = Ended()
    drive(broken_later(), ended, loop)
    await asyncio.wait_for(ended.event.wait(), 5)
    assert len(ended.calls) == 1
    assert isinstance(ended.calls[0][1], KeyError)


async def test_a_bare_yield_inline_is_stepped_on_the_next_pass() -> None:
    async def yields() -> str:
        await asyncio.sleep(0)  # a bare yield, no future
        await asyncio.sleep(0)
        return "done"

    ended = Ended()
    assert drive(yields(), ended, asyncio.get_running_loop()) is False
    await asyncio.wait_for(ended.event.wait(), 5)
    assert ended.calls == [("done", None)]


@pytest.mark.parametrize("cancel_after", [0.0, 0.02])
async def test_cancelling_the_task_reaches_the_coroutine(cancel_after: float) -> None:
    loop = asyncio.get_running_loop()
    cleaned: list[bool] = []

    async def waits() -> None:
        await need_task
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(True)

    ended = Ended()
    drive(waits(), ended, loop)
    await asyncio.sleep(cancel_after)
    handed = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert len(handed) == 1
    handed[0].cancel()
    await asyncio.wait_for(ended.event.wait(), 5)
    assert cleaned == [True]
    assert isinstance(ended.calls[0][1], asyncio.CancelledError)
