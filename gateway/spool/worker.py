"""One delivery worker per route: oldest first per ordering key, retries with backoff, dead
letters.

Rows carry an ordering key (`gateway/spool/order.py`). Up to `spool_concurrency` keys are in
flight at once; within a key, a row goes out only after the one before it was delivered (or
dead-lettered), so a key whose head is backing off holds back only that key. The worker looks
its route up by name in the current snapshot at every pass, so a reload that changes the
upstream (or the concurrency) applies to the next attempt; a route removed by a reload has no
worker, and its rows stay pending (the supervisor warns).

Deliveries are recorded in batches: a delivered row is skipped at once and its DELETE joins
the next transaction (one fsync for many rows). A crash before that commit delivers those rows
again, which the contract allows (byte-identical duplicates).
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
from gateway.spool.probe import PROBE_EVERY, reachable
from gateway.spool.store import Row, SpoolError

if TYPE_CHECKING:
    from gateway.spool.service import Spool

log = logging.getLogger("webhook_gateway.spool")

IDLE_POLL = 1.0  # an idle worker looks again this often (the CLI's `retry` needs no signal)
RETRY_AFTER_CAP = 3600.0  # an upstream's Retry-After is honoured up to this many seconds
# The sender's request was fine: these ask for a later retry, like any 5xx or network error.
RETRYABLE_4XX = frozenset({408, 429})
# Failures that mean "nothing listens there" (the bot is down or restarting): the probe watches
# for its return. A timeout or a 5xx is a bot that is up but unwell: plain backoff.
UNREACHABLE = frozenset({"refused", "reset", "closed"})
# Rows looked at per scheduling pass, per unit of concurrency: keys beyond this window of the
# oldest rows wait their turn (the window moves as rows are delivered).
WINDOW_PER_SLOT = 16
# Delivered rows are forgotten in batches of this many, or this often while deliveries are in
# flight: a crash in between redelivers at most these (the contract allows byte-identical
# duplicates).
RECORD_BATCH = 64
RECORD_EVERY = 0.05
MIN_WINDOW = 64


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
        # Delivered, DELETE not committed yet (batched, or it failed: disk full, lock). Skipped
        # by the scheduler until the delete lands, so none is redelivered in a loop.
        self.unrecorded: set[int] = set()
        self._record_again_at = 0.0
        self._recorded_at = 0.0
        self.inflight: dict[str, asyncio.Task[None]] = {}  # order key -> its delivery
        self._inflight_ids: set[int] = set()
        # Probe state: `down` after a connection-level failure; a success counts only after a
        # probe saw the upstream refuse (so a bot that accepts connections and then fails is
        # never retried at probe speed).
        self.down = False
        self._probe_saw_down = False
        self._next_probe = 0.0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"spool:{self.name}")

    def wake(self) -> None:
        self.wakeup.set()

    async def stop(self, grace: float) -> None:
        """Let the attempts in flight finish (up to `grace`), then cancel them: those rows are
        still pending and are delivered again later, byte-identical."""
        self.stopping = True
        self.wakeup.set()
        if self.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            for t in list(self.inflight.values()):
                t.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            await self._record()
        except asyncio.CancelledError:
            self.task.cancel()
            raise

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0 and not self.wakeup.is_set():
            try:
                async with asyncio.timeout(seconds):
                    await self.wakeup.wait()
            except TimeoutError:
                pass
        self.wakeup.clear()

    async def run(self) -> None:
        while not self.stopping or self.inflight:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker outlives any surprise; the rows stay pending
                log.exception("spool worker failed", extra={"route": self.name})
                self.spool.metrics.deliveries.labels(self.name, "error").inc()
                await self._sleep(IDLE_POLL)
        await self._record()

    async def _record(self, force: bool = True) -> None:
        """Commit the DELETEs of delivered rows, all in one transaction. Unless `force` (nothing
        else in flight), wait for a batch of RECORD_BATCH rows or RECORD_EVERY seconds: each
        commit is an fsync, and the listener's acknowledgements wait behind it."""
        now = self.spool.clock()
        if not self.unrecorded or now < self._record_again_at:
            return
        if not force and len(self.unrecorded) < RECORD_BATCH and now - self._recorded_at < RECORD_EVERY:
            return
        batch = sorted(self.unrecorded)
        self._recorded_at = now
        if await self._db("delivered_many", batch):
            self.unrecorded.difference_update(batch)
        else:
            self._record_again_at = self.spool.clock() + IDLE_POLL

    async def step(self) -> None:
        await self._record(force=not self.inflight)
        route = self.spool.route(self.name)
        if route is None or self.stopping:
            await self._sleep(IDLE_POLL)
            return
        wait = IDLE_POLL * 5
        now = self.spool.clock()
        if self.down:
            if now >= self._next_probe:
                self._next_probe = now + PROBE_EVERY
                await self._probe(route.config.upstream)
            if self.down:
                wait = min(wait, max(0.0, self._next_probe - now))
        limit = route.config.spool_concurrency
        free = limit - len(self.inflight)
        if free > 0:
            window = max(MIN_WINDOW, WINDOW_PER_SLOT * limit)
            head = await self.spool.read("head_keys", self.name, window + len(self.unrecorded))
            if not head and not self.inflight and not self.unrecorded:
                await self._sleep(IDLE_POLL)
                return
            now = self.spool.clock()
            seen: set[str] = set()
            chosen: list[tuple[int, str]] = []
            for row_id, key, next_at in head:
                if row_id in self.unrecorded:
                    continue  # delivered: the next row of its key may go
                if key in seen:
                    continue  # not the oldest of its key
                seen.add(key)
                if key in self.inflight or row_id in self._inflight_ids:
                    continue
                if next_at > now:
                    wait = min(wait, next_at - now)
                    continue  # this key waits for its retry; other keys go on
                chosen.append((row_id, key))
                if len(chosen) >= free:
                    break
            if chosen:
                rows = await self.spool.read("pending_rows", [i for i, _ in chosen])
                keys = dict(chosen)
                for row in rows:
                    self._launch(keys[row.id], row)
        if self.inflight or self.unrecorded:
            # A finished delivery wakes us; a row due later or the probe bound the wait.
            await self._sleep(wait if self.inflight or not self.unrecorded else 0.0)
        else:
            await self._sleep(wait)

    def _launch(self, key: str, row: Row) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver(row))
        self.inflight[key] = task
        self._inflight_ids.add(row.id)

        def done(_: asyncio.Task[None]) -> None:
            if self.inflight.get(key) is task:
                del self.inflight[key]
            self._inflight_ids.discard(row.id)
            self.wakeup.set()

        task.add_done_callback(done)

    async def _probe(self, upstream: Any) -> None:
        if not await reachable(upstream):
            self._probe_saw_down = True
            return
        if not self._probe_saw_down:
            return  # it never looked down to the probe: keep the normal backoff
        await self._back_up()

    async def _back_up(self) -> None:
        """The bot takes connections again after refusing them: every waiting row of the route
        is due now, not after its grown backoff (whichever of the probe or a delivery saw it)."""
        self.down = False
        self._probe_saw_down = False
        self.spool.metrics.probe_recoveries.labels(self.name).inc()
        if await self._db("due_now", self.name, self.spool.clock()):
            log.info("upstream reachable again: spooled retries resume now", extra={"route": self.name})

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
            if exc.reason in UNREACHABLE and not self.down:
                self.down = True
                self._probe_saw_down = False
                self._next_probe = self.spool.clock() + PROBE_EVERY
            if exc.reason == "refused":
                self._probe_saw_down = True  # the same evidence a probe would have found
        now = self.spool.clock()
        metrics = self.spool.metrics
        if status is not None and 200 <= status < 300:
            self.unrecorded.add(row.id)  # its DELETE joins the next batch
            if self._probe_saw_down:
                await self._back_up()  # a delivery, not the probe, was first to find it back
            self.down = False
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
