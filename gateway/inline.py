"""Drive a request's handler coroutine from the event loop's callbacks, without a task.

Most webhooks need no task at all: the request arrives whole in one read, is verified and
either refused on the spot or written to a pooled upstream connection whose answer is one
future. A task per request (its creation, its scheduling through `call_soon`, its context
copy) was a large share of what a forged request cost. So the server starts the handler's
coroutine right in the read callback and steps it by hand:

- it finishes without suspending (a rejection): the answer is written in the same callback;
- it suspends on a future (the upstream's answer): a done-callback steps it again;
- it reaches code that needs a task (`asyncio.timeout`, Redis, the spool, a slow body): it
  first awaits `need_task`, which hands the suspended coroutine to a real task from there on.

Code that runs inline must not need a current task. The handler awaits `need_task` before
every such step; anything it misses fails the request (a 500, counted), never silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")
Done = Callable[[Any, BaseException | None], None]  # (result, error): called once at the end


class _TaskNeeded:
    """What the coroutine yields to its inline driver to ask for a task."""

    __slots__ = ()


TASK_NEEDED = _TaskNeeded()


# True while `drive` steps a coroutine. Not `asyncio.current_task() is None`: an answer
# written from a task (the previous request's) may start the next queued request inline,
# and that one must still not take the finishing task for its own.
_inline = False


class _NeedTask:
    """`await need_task`: a no-op inside a task; inline, the hand-over to one."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        if _inline:
            yield TASK_NEEDED


need_task = _NeedTask()


def drive(
    coro: Coroutine[Any, Any, T],
    done: Done,
    loop: asyncio.AbstractEventLoop,
) -> bool:
    """Step `coro` until it finishes, suspends on a future, or asks for a task. `done(result,
    error)` is called exactly once when it ends, possibly before this returns. -> whether it
    already ended (the caller may then go on with the next request in this same callback)."""
    global _inline
    outer = _inline
    _inline = True
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        _inline = outer
        done(stop.value, None)
        return True
    except BaseException as exc:  # the handler's own exception: the caller answers for it
        _inline = outer
        done(None, exc)
        return True
    _inline = outer
    _suspend(coro, yielded, done, loop)
    return False


def _suspend(
    coro: Coroutine[Any, Any, T],
    yielded: Any,
    done: Done,
    loop: asyncio.AbstractEventLoop,
) -> None:
    if yielded is TASK_NEEDED:
        ended = [False]

        def end(result: Any, error: BaseException | None) -> None:
            ended[0] = True
            done(result, error)

        def cancelled_early(task: asyncio.Task[None]) -> None:
            # Cancelled before its first step, the task never ran `_in_task`: close the
            # coroutine here, so its `finally` blocks run and `done` is still called once.
            if not ended[0]:
                coro.close()
                end(None, asyncio.CancelledError())

        loop.create_task(_in_task(coro, end)).add_done_callback(cancelled_early)
        return
    add = getattr(yielded, "add_done_callback", None)
    if add is None:  # a bare `yield` (asyncio.sleep(0)): step again on the next loop pass
        loop.call_soon(drive, coro, done, loop)
        return
    yielded._asyncio_future_blocking = False  # as a task does before it waits on a future
    add(lambda _f: drive(coro, done, loop))


async def _in_task(coro: Coroutine[Any, Any, T], done: Done) -> None:
    """Go on stepping `coro` inside this task: it awaits what the coroutine yields, passes
    cancellation (an `asyncio.timeout` in the handler cancels this task) into it."""
    outcome: T | None = None
    error: BaseException | None = None
    try:
        yielded: Any = TASK_NEEDED
        while True:
            try:
                if yielded is None:
                    await asyncio.sleep(0)
                elif yielded is not TASK_NEEDED:
                    yielded._asyncio_future_blocking = False
                    await yielded
            except BaseException as exc:  # cancelled while waiting: into the coroutine
                yielded = coro.throw(exc)
                continue
            # The future is done: the coroutine reads its result itself when resumed.
            yielded = coro.send(None)
    except StopIteration as stop:
        outcome = stop.value
    except BaseException as exc:
        error = exc
    done(outcome, error)
