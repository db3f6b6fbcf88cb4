"""Helpers for the spool tests: an upstream on a chosen port, polling, reading the database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers import RecordingUpstream, base_config, route

FAST_SPOOL = {"backoff_initial": "20ms", "backoff_max": "200ms"}


@contextlib.asynccontextmanager
async def upstream_on(
    port: int, factory: type[RecordingUpstream] = RecordingUpstream, **kwargs: Any
) -> AsyncIterator[RecordingUpstream]:
    """A recording upstream on a fixed port, so it can be "down" first and come back later."""
    up = factory(port=port, **kwargs)
    runner = web.ServerRunner(web.Server(up.handle, auto_decompress=False))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    up.runner = runner
    try:
        yield up
    finally:
        await runner.cleanup()


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], deadline: float = 30.0, what: str = ""
) -> None:
    """Poll until `check()` is true; fail after a generous deadline (not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"not reached within {deadline}s: {what}")
        await asyncio.sleep(0.05)


def spool_config(
    db: Path, upstream: str, spool: dict[str, Any] | None = None, **route_kw: Any
) -> dict[str, Any]:
    r = route(upstream=upstream, delivery="spool", **route_kw)
    return base_config([r], spool={"path": str(db), **FAST_SPOOL, **(spool or {})})


def rows(db: Path, table: str = "pending") -> list[tuple[Any, ...]]:
    """(id, route, body, attempts) of a table, read with a separate connection (as the CLI does)."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        return conn.execute(f"SELECT id, route, body, attempts FROM {table} ORDER BY id").fetchall()  # noqa: S608
    finally:
        conn.close()
