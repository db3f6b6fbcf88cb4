"""The running spool: one database thread, the write path, the workers and their supervisor.

Every SQLite call runs on one dedicated thread, so the event loop never waits for an fsync
and the connection is never shared between threads. The supervisor (once a second) opens the
database when it is wanted and not open yet (a read-only or missing directory at start is
retried, not fatal), refreshes the gauges, starts and stops route workers, and forgets
expired dedup marks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.config import SpoolConfig
from gateway.metrics import Metrics
from gateway.proxy.forward import Forwarder
from gateway.proxy.snapshot import Route, SnapshotHolder
from gateway.spool.order import order_key
from gateway.spool.store import SpoolError, Store
from gateway.spool.worker import RouteWorker

log = logging.getLogger("webhook_gateway.spool")

SUPERVISE_EVERY = 1.0
EXPIRE_MARKS_EVERY = 60.0
WRITE_DEADLINE_MARGIN = 1.0
# The bounds are checked against counters this process keeps; only the CLI changes rows behind
# its back (purge, which frees room), so a full recount now and then is enough.
RECOUNT_EVERY = 10.0


def dedup_key(body: bytes) -> str:
    """The mark a spooled update leaves when its route has no `replay:` key: the raw body's
    sha256 (a sender's retry repeats the same bytes)."""
    return "body-sha256:" + hashlib.sha256(body).hexdigest()


class Spool:
    def __init__(
        self,
        holder: SnapshotHolder,
        forwarder: Forwarder,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.forwarder = forwarder
        self.metrics = metrics.spool
        self.clock = clock
        self.store: Store | None = None
        # A second connection on a thread of its own for the workers' scheduling reads: under a
        # flood of acknowledgements they would otherwise queue behind every accept's fsync, and
        # delivery would starve (WAL lets this reader run beside the writer).
        self.reader: Store | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self.workers: dict[str, RouteWorker] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._open_error: str | None = None
        self._orphans_warned: set[str] = set()
        self._gauged: set[str] = set()
        self._marks_expired_at = 0.0
        self._recounted_at = 0.0

    # ------------------------------------------------------------ config views

    def settings(self) -> SpoolConfig:
        return self.holder.current.config.spool_settings

    def upstream_timeout(self) -> float:
        return self.holder.current.config.limits.upstream_timeout

    def route(self, name: str) -> Route | None:
        for route in self.holder.current.routes.values():
            if route.name == name:
                return route
        return None

    # ------------------------------------------------------------ the database thread

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            raise SpoolError("unavailable", "the spool is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def db(self, op: str, *args: Any) -> Any:
        """Run `Store.<op>(*args)` on the database thread."""

        def run() -> Any:
            store = self.store
            if store is None:
                raise SpoolError("unavailable", self._open_error or "the spool database is not open")
            return getattr(store, op)(*args)

        return await self.call(run)

    async def read(self, op: str, *args: Any) -> Any:
        """Run the read-only `Store.<op>(*args)` on the reader's thread (the database thread
        while there is no reader)."""
        reader, executor = self.reader, self._read_executor
        if reader is None or executor is None:
            return await self.db(op, *args)
        return await asyncio.get_running_loop().run_in_executor(executor, getattr(reader, op), *args)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-db")
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-read")
        if self.holder.current.config.spool_wanted:
            await self._open()
            if self.store is not None:
                await self._supervise_once()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="spool")

    async def stop(self, grace: float) -> None:
        """After the listener stopped: no new rows. Finish (or abandon) attempts in flight,
        then close the database (the WAL is checkpointed on the last close)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(w.stop(grace) for w in self.workers.values()))
        self.workers.clear()
        store, self.store = self.store, None
        reader, self.reader = self.reader, None
        executor, self._executor = self._executor, None
        read_executor, self._read_executor = self._read_executor, None
        await _close_on(executor, store)
        await _close_on(read_executor, reader)

    async def _open(self) -> None:
        path = self.settings().path
        try:
            self.store = await self.call(Store.open, path, self.settings().lock_timeout)
        except SpoolError as exc:
            self.metrics.available.set(0)
            if self._open_error != str(exc):  # once per distinct problem, not every second
                log.error("spool unavailable: updates for spool routes get 503", extra={"error": str(exc)})
            self._open_error = str(exc)
            return
        self._open_error = None
        self.metrics.available.set(1)
        if self._read_executor is not None:
            try:
                self.reader = await asyncio.get_running_loop().run_in_executor(
                    self._read_executor, Store.open, path, self.settings().lock_timeout, False
                )
            except SpoolError as exc:  # the workers read through the writer instead
                log.warning("spool reader not opened", extra={"error": str(exc)})
        log.info("spool open", extra={"path": path, "rows": self.store.items})

    # ------------------------------------------------------------ the write path

    async def accept(
        self,
        route: Route,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        key: str | None = None,
    ) -> bool:
        """Store one update durably. True: stored (answer 200). False: a duplicate of an update
        already spooled (answer 200, store nothing). Raises `SpoolError`: answer 503.

        `key` is the route's replay key (`replay:`): its mark is written in the same transaction
        as the row, so a retry of a spooled update is a duplicate even after a crash, when the
        replay store (memory) has forgotten it."""
        if self.store is None:
            raise SpoolError("unavailable", self._open_error or "the spool database is not open")
        s = self.settings()
        mark = (key or dedup_key(body)) if s.dedup else None
        digest = hashlib.sha256(body).hexdigest()
        args = (route.name, mark, query, list(headers), body, digest, self.clock())
        ordering = order_key(route.config, body)
        try:
            # SQLite gives up waiting for the lock after lock_timeout (busy_timeout): nothing is
            # stored, 503. This outer deadline (queue + lock + fsync) catches a stuck disk; the
            # write may still land after its 503, and then the sender's retry finds the mark.
            async with asyncio.timeout(s.lock_timeout + WRITE_DEADLINE_MARGIN):
                row_id = await self.db("accept", *args, s.dedup_window, s.max_items, s.max_bytes, ordering)
        except TimeoutError:
            raise SpoolError("timeout", "spool write did not finish in time") from None
        if row_id is None:
            return False
        worker = self.workers.get(route.name)
        if worker is not None:
            worker.wake()
        return True

    # ------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_EVERY)
            try:
                await self._supervise_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep supervising; each problem is logged
                log.exception("spool supervisor failed")

    async def _supervise_once(self) -> None:
        config = self.holder.current.config
        if self.store is None:
            if not config.spool_wanted:
                return
            await self._open()
            if self.store is None:
                return
        try:
            stats = await self.db("stats")
            if self.clock() - self._recounted_at >= RECOUNT_EVERY:
                self._recounted_at = self.clock()
                await self.db("refresh_totals")
        except Exception as exc:
            log.error("spool read failed", extra={"error": str(exc)})
            return
        store = self.store
        if store is not None:
            self.metrics.items.set(store.items)
            self.metrics.bytes.set(store.bytes)
        now = self.clock()
        spool_routes = {r.name for r in config.routes if r.delivery == "spool"}
        configured = {r.name for r in config.routes}
        for name in spool_routes | set(stats) | self._gauged:
            st = stats.get(name)
            if st is None and name not in spool_routes:
                for gauge in (self.metrics.depth, self.metrics.oldest_age, self.metrics.dead):
                    try:
                        gauge.remove(name)
                    except KeyError:
                        pass
                self._gauged.discard(name)
                continue
            self._gauged.add(name)
            self.metrics.depth.labels(name).set(st.pending if st else 0)
            oldest = st.oldest if st and st.oldest is not None else None
            self.metrics.oldest_age.labels(name).set(max(0.0, now - oldest) if oldest else 0.0)
            self.metrics.dead.labels(name).set(st.dead if st else 0)
        # Workers: every configured route that spools or still has pending rows.
        wanted = {n for n in spool_routes | {n for n, st in stats.items() if st.pending} if n in configured}
        for name in wanted - set(self.workers):
            worker = RouteWorker(name, self)
            self.workers[name] = worker
            worker.start()
        for name in set(self.workers) - wanted:
            await self.workers.pop(name).stop(0)
        for name, st in stats.items():
            if st.pending and name not in configured and name not in self._orphans_warned:
                self._orphans_warned.add(name)
                log.warning(
                    "spooled updates for a route that is no longer configured stay pending",
                    extra={"route": name, "pending": st.pending},
                )
        self._orphans_warned &= {n for n in stats if n not in configured}
        if now - self._marks_expired_at >= EXPIRE_MARKS_EVERY:
            self._marks_expired_at = now
            await self.db("expire_marks", now)


async def _close_on(executor: ThreadPoolExecutor | None, store: Store | None) -> None:
    """Close `store` on the thread that used it, then that thread (the connection's last close
    checkpoints the WAL)."""
    if executor is None:
        return
    if store is not None:
        await asyncio.get_running_loop().run_in_executor(executor, store.close)
    executor.shutdown(wait=True)
