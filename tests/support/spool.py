"""Helpers for the spool tests: a route that spools, polling, reading the database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.inprocess import base_config, route

FAST_SPOOL = {"backoff_initial": "20ms", "backoff_max": "200ms"}


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
