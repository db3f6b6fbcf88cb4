"""Opt-in watcher: getWebhookInfo for each route with `telegram.watch: true`, as metrics.

It answers the questions behind "the bot went quiet": is Telegram queueing updates it cannot
deliver (pending_updates), did its last delivery fail and when (last_error_timestamp), and is
the webhook still pointing here at all (webhook_url_matches; 0 after someone ran setWebhook
with another URL, or deleteWebhook). Routes are read from the current snapshot every tick, so
a config reload adds, changes or removes watches without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
from yarl import URL

from gateway.config import RouteConfig
from gateway.metrics import Metrics
from gateway.proxy.snapshot import SnapshotHolder
from gateway.telegram.api import BotApi, BotApiError

log = logging.getLogger("webhook_gateway.telegram")

TICK = 1.0


def same_url(a: str, b: str) -> bool:
    try:
        return URL(a) == URL(b)
    except ValueError:
        return a == b


class TelegramWatcher:
    def __init__(
        self,
        holder: SnapshotHolder,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.metrics = metrics
        self.clock = clock
        self._due: dict[str, float] = {}
        self._matched: dict[str, bool] = {}  # last URL comparison per route: log changes only
        self._task: asyncio.Task[None] | None = None

    def _watched(self) -> list[RouteConfig]:
        return [
            r.config
            for r in self.holder.current.routes.values()
            if r.config.telegram is not None and r.config.telegram.watch
        ]

    async def check(self, route: RouteConfig, session: aiohttp.ClientSession) -> None:
        """One getWebhookInfo for one route, into the metrics."""
        tg = route.telegram
        assert tg is not None and tg.expected_url is not None
        m = self.metrics
        try:
            info = await BotApi(tg, session).get_webhook_info()
        except BotApiError as exc:
            m.telegram_watch_up.labels(route.name).set(0)
            log.warning("getWebhookInfo failed", extra={"route": route.name, "problem": str(exc)})
            return
        url = str(info.get("url") or "")
        matches = same_url(url, tg.expected_url)
        m.telegram_watch_up.labels(route.name).set(1)
        m.telegram_pending.labels(route.name).set(_number(info.get("pending_update_count")))
        m.telegram_last_error.labels(route.name).set(_number(info.get("last_error_date")))
        m.telegram_url_matches.labels(route.name).set(1 if matches else 0)
        if not matches and self._matched.get(route.name, True):
            log.warning(
                "telegram webhook points elsewhere",
                extra={"route": route.name, "webhook_url": url or "(none: webhook deleted)"},
            )
        self._matched[route.name] = matches

    def _forget(self, gone: set[str]) -> None:
        for name in gone:
            self._due.pop(name, None)
            self._matched.pop(name, None)
            for gauge in (
                self.metrics.telegram_pending,
                self.metrics.telegram_last_error,
                self.metrics.telegram_url_matches,
                self.metrics.telegram_watch_up,
            ):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                routes = self._watched()
                self._forget(set(self._due) - {r.name for r in routes})
                now = self.clock()
                for route in routes:
                    if self._due.get(route.name, 0.0) <= now:
                        assert route.telegram is not None
                        self._due[route.name] = now + route.telegram.watch_interval
                        try:
                            await self.check(route, session)
                        except Exception:  # one bad answer must not stop the watcher
                            log.exception("telegram watch failed", extra={"route": route.name})
                # Wake for the next due check, and at least every TICK to notice a reload.
                wait = min([TICK, *(d - self.clock() for d in self._due.values())])
                await asyncio.sleep(max(wait, 0.01))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
