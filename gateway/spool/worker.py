"""One delivery worker per route: oldest first, retries with backoff, dead letters.

The worker looks its route up by name in the current snapshot at every attempt, so a reload
that changes the upstream (or the concurrency) applies to the next attempt; a route removed by
a reload has no worker, and its rows stay pending (the supervisor warns).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import sqlite3
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from gateway.proxy.forward import UpstreamError
from gateway.spool.store import Row, SpoolError

if TYPE_CHECKING:
    from gateway.spool.service import Spool

log = logging.getLogger("webhook_gateway.spool")

IDLE_POLL = 1.0  # an idle worker looks again this often (the CLI's `retry` needs no signal)
RETRY_AFTER_CAP = 3600.0  # an upstream's Retry-After is honoured up to this many seconds
# The sender's request was fine: these ask for a later retry, like any 5xx or network error.
RETRYABLE_4XX = frozenset({408, 429})


def backoff(attempts: int, initial: float, cap: float, rng: random.Random) -> float:
    """Exponential in the attempts made so far, capped, with "equal jitter": half the delay is
    fixed (it still grows), half is random (workers of many gateways do not retry in step)."""
    base = min(cap, initial * 2.0 ** max(0, attempts - 1))
    return base / 2 + rng.uniform(0, base / 2)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), capped; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now), RETRY_AFTER_CAP)


class RouteWorker:
    def __init__(self, name: str, spool: Spool, rng: random.Random | None = None) -> None:
        self.name = name
        self.spool = spool
        self.rng = rng or random.Random()  # jitter, not security
        self.wakeup = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        # Delivered, but the DELETE failed (disk full, lock): skipped until the delete lands, so
        # one such row is not redelivered in a loop while later rows wait. After a crash these
        # are delivered again, which the contract allows (byte-identical duplicates).
        self.unrecorded: set[int] = set()
        self._record_again_at = 0.0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"spool:{self.name}")

    def wake(self) -> None:
        self.wakeup.set()

    async def stop(self, grace: float) -> None:
        """Let the attempt in flight finish (up to `grace`), then cancel it: the row is still
        pending and is delivered again later, byte-identical."""
        self.stopping = True
        self.wakeup.set()
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        except asyncio.CancelledError:
            self.task.cancel()
            raise

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self.stopping:
            try:
                async with asyncio.timeout(seconds):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
        self.wakeup.clear()

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker outlives any surprise; the rows stay pending
                log.exception("spool worker failed", extra={"route": self.name})
                self.spool.metrics.deliveries.labels(self.name, "error").inc()
                await self._sleep(IDLE_POLL)

    async def step(self) -> None:
        route = self.spool.route(self.name)
        if route is None:
            await self._sleep(IDLE_POLL)
            return
        if self.unrecorded and self.spool.clock() >= self._record_again_at:
            for row_id in sorted(self.unrecorded):
                if not await self._db("delivered", row_id):
                    self._record_again_at = self.spool.clock() + IDLE_POLL
                    break
                self.unrecorded.discard(row_id)
        limit = route.config.spool_concurrency
        rows = await self.spool.db("head", self.name, limit + len(self.unrecorded))
        rows = [r for r in rows if r.id not in self.unrecorded][:limit]
        if not rows:
            await self._sleep(IDLE_POLL)
            return
        now = self.spool.clock()
        # Only a due prefix goes out: with concurrency 1 the head holds back later rows while it
        # waits for its retry, as Telegram does per chat.
        due: list[Row] = []
        for row in rows:
            if row.next_at > now:
                break
            due.append(row)
        if not due:
            await self._sleep(min(rows[0].next_at - now, IDLE_POLL * 5))
            return
        await asyncio.gather(*(self.deliver(row) for row in due))

    async def deliver(self, row: Row) -> None:
        route = self.spool.route(self.name)
        if route is None:
            return
        settings = self.spool.settings()
        timeout = self.spool.upstream_timeout()
        headers: CIMultiDict[str] = CIMultiDict(row.headers)
        status: int | None = None
        wait: float | None = None
        try:
            answer = await self.spool.forwarder.send(
                route.config.upstream, row.query, headers, row.body, timeout
            )
            status = answer.status
            error = f"upstream answered {status}"
            wait = retry_after(answer.headers.get("Retry-After"), self.spool.clock())
        except UpstreamError as exc:
            error = "upstream timed out" if exc.timeout else f"upstream unreachable ({exc})"
        now = self.spool.clock()
        metrics = self.spool.metrics
        if status is not None and 200 <= status < 300:
            if not await self._db("delivered", row.id):
                self.unrecorded.add(row.id)
                self._record_again_at = self.spool.clock() + IDLE_POLL
            metrics.deliveries.labels(self.name, "delivered").inc()
            return
        attempts = row.attempts + 1
        refused = status is not None and status < 500 and status not in RETRYABLE_4XX
        reason = None
        if refused and attempts >= settings.max_attempts:
            reason = f"{error}, {attempts} attempt(s)"
        elif now - row.received > settings.max_age:
            reason = f"{error}; older than max_age ({settings.max_age:g}s)"
        if reason is not None:
            if not await self._db("bury", row.id, now, reason):
                await self._sleep(IDLE_POLL)  # the row stays pending: do not spin on it
            metrics.deliveries.labels(self.name, "dead_letter").inc()
            metrics.dead_letters.labels(self.name).inc()
            log.warning(
                "spooled update dead-lettered",
                extra={"route": self.name, "id": row.id, "attempts": attempts, "reason": reason},
            )
            return
        delay = (
            wait
            if wait is not None
            else backoff(attempts, settings.backoff_initial, settings.backoff_max, self.rng)
        )
        if not await self._db("failed", row.id, now + delay, error):
            await self._sleep(delay)  # its next_at is not stored: wait here instead
        metrics.deliveries.labels(self.name, "retry").inc()
        if attempts == 1 or attempts % 10 == 0:
            log.warning(
                "spooled delivery failed, will retry",
                extra={
                    "route": self.name,
                    "id": row.id,
                    "attempts": attempts,
                    "error": error,
                    "retry_in_s": round(delay, 3),
                },
            )

    async def _db(self, op: str, *args: Any) -> bool:
        """A bookkeeping write after an attempt. If it fails the row stays as it was: at worst
        it is delivered again (allowed, byte-identical), never lost."""
        try:
            await self.spool.db(op, *args)
            return True
        except (sqlite3.Error, SpoolError) as exc:
            self.spool.metrics.deliveries.labels(self.name, "error").inc()
            log.error("spool bookkeeping failed", extra={"route": self.name, "op": op, "error": str(exc)})
            return False
