"""The lazily moved deadline shared by the listener and the upstream connections."""

from __future__ import annotations

import asyncio

from gateway.http.deadline import Deadline


async def test_moved_later_fires_once_at_the_new_time_and_cleared_never() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    d = Deadline(loop, lambda: fired.append(loop.time()))
    start = loop.time()
    d.set_in(0.05)
    d.set_in(0.6)  # later: the first timer re-arms itself instead of firing
    await asyncio.sleep(0.2)
    assert fired == []
    await asyncio.sleep(0.8)
    assert len(fired) == 1 and fired[0] - start >= 0.6  # a timer never fires early

    d.set_in(0.05)
    d.clear()
    await asyncio.sleep(0.1)
    assert len(fired) == 1


async def test_moved_earlier_fires_at_the_earlier_time_and_cancel_stops_it() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    d = Deadline(loop, lambda: fired.append("x"))
    d.set_in(10)
    d.set_in(0.02)
    await asyncio.sleep(0.08)
    assert fired == ["x"]
    d.set_in(0.02)
    d.cancel()
    await asyncio.sleep(0.08)
    assert fired == ["x"]
    d.set_in(0)  # no deadline
    await asyncio.sleep(0.03)
    assert fired == ["x"]
