"""Builds and runs the gateway: public listener, admin listener, lifecycle and signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import IO

from aiohttp import web
from prometheus_client import generate_latest

from gateway.config import Config, Limits, Listen
from gateway.config.overrides import Overrides
from gateway.http.listener import HttpServer
from gateway.metrics import Metrics
from gateway.proxy.accesslog import AccessLog
from gateway.proxy.forward import Forwarder
from gateway.proxy.handler import Gateway
from gateway.proxy.snapshot import SnapshotHolder, compile_snapshot, publish_route_gauges
from gateway.serve.admin import admin_app
from gateway.serve.reload import Reloader
from gateway.serve.telegram_watch import TelegramWatcher
from gateway.spool.service import Spool
from gateway.store import build_store
from gateway.tls.store import CertStore

log = logging.getLogger("webhook_gateway")


class Service:
    """One running gateway. `start()` binds, `stop()` drains and closes."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics | None = None,
        log_stream: IO[str] | None = None,
        clock: Callable[[], float] = time.time,
        worker: bool = False,
    ) -> None:
        # A worker (one of `workers: N`) shares the public port and leaves the admin listener
        # to the supervising parent, which sums every worker's metrics.
        self.worker = worker
        self.metrics = metrics or Metrics()
        self.holder = SnapshotHolder(compile_snapshot(config, self.metrics))
        publish_route_gauges(None, self.holder.current, self.metrics)
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.last_reload_success.set_to_current_time()
        self.metrics.last_reload_ok.set(1)
        self.forwarder = Forwarder()
        self.access_log = AccessLog(log_stream)
        # The spool outlives reloads: its workers read the current route at every attempt.
        self.spool = Spool(self.holder, self.forwarder, self.metrics)
        # Replay marks and rate windows outlive reloads: the store belongs to the Service,
        # and a reload that changes `store:` (other than on_store_error) needs a restart.
        self.store = build_store(config.store, self.metrics, clock)
        self.gateway = Gateway(
            self.holder,
            self.forwarder,
            self.metrics,
            self.access_log,
            clock=clock,
            store=self.store,
            spool=self.spool,
        )
        # TLS is bound to the listener: a reload may not add, drop or move it (reload.py refuses
        # such a change), but the certificate files themselves are re-read when they change.
        self.certs = CertStore(config.tls, self.metrics) if config.tls is not None else None
        self.telegram = TelegramWatcher(self.holder, self.metrics)
        self.ready = False
        self.stopping = asyncio.Event()
        self._http: HttpServer | None = None
        self._listener: asyncio.Server | None = None
        self._admin_runner: web.AppRunner | None = None
        self.public_port = 0
        self.admin_port = 0

    def begin_shutdown(self) -> None:
        """Signal handler: not ready from this instant, then the drain starts."""
        self.ready = False
        self.stopping.set()

    @property
    def serving(self) -> bool:
        """The public listener accepts, and the last connection it took could be set up."""
        return (
            self._listener is not None
            and self._listener.is_serving()
            and (self._http is None or self._http.healthy)
        )

    @property
    def config(self) -> Config:
        return self.holder.current.config

    async def start(self) -> None:
        cfg = self.config
        await self.store.start()
        # Before the listener: pending rows resume, and the first request finds the spool open.
        await self.spool.start()

        def limits() -> Limits:  # read per connection: a reload applies to the next one
            return self.holder.current.config.limits

        self._http = HttpServer(
            self.gateway,
            header_timeout=lambda: limits().header_timeout,
            max_body_bytes=lambda: limits().max_body_bytes,
            on_malformed=getattr(self.gateway, "malformed", None),
            on_error=lambda where: self.metrics.listener_errors.labels(where).inc(),
        )
        loop = asyncio.get_running_loop()
        tls = self.certs.context if self.certs is not None else None
        self._listener = await loop.create_server(
            self._http,
            cfg.listen.host,
            cfg.listen.port,
            backlog=1024,
            ssl=tls,
            # The TLS handshake counts against header_timeout (as set at start: the listener
            # is not rebuilt by a reload); asyncio's own default is 60 s.
            ssl_handshake_timeout=cfg.limits.header_timeout if tls is not None else None,
            reuse_port=self.worker or None,
        )
        self.public_port = int(self._listener.sockets[0].getsockname()[1])
        if self.certs is not None:
            self.certs.start()
        self.telegram.start()
        if self.worker:
            self.ready = True
            return
        self._admin_runner = web.AppRunner(self._admin_app(), access_log=None)
        await self._admin_runner.setup()
        admin = web.TCPSite(self._admin_runner, cfg.admin_listen.host, cfg.admin_listen.port)
        await admin.start()
        self.admin_port = _bound_port(admin)
        self.ready = True
        log.info(
            "listening",
            extra={
                "public": _show(cfg.listen, self.public_port),
                "tls": self.certs is not None,
                "admin": _show(cfg.admin_listen, self.admin_port),
            },
        )

    async def stop(self) -> None:
        """Graceful: not ready at once, stop accepting, let in-flight requests finish."""
        self.ready = False
        await self.telegram.stop()
        if self.certs is not None:
            await self.certs.stop()
        if self._listener is not None:
            self._listener.close()  # stop accepting at once
        if self._http is not None:
            # Answer what is in flight within shutdown_timeout (read now: a reload may have
            # changed it), then close every connection.
            await self._http.shutdown(self.config.shutdown_timeout)
        if self._listener is not None:
            await self._listener.wait_closed()
        # No request can add a row now; attempts in flight get a short grace, then stay pending.
        await self.spool.stop(grace=min(5.0, self.config.shutdown_timeout))
        await self.forwarder.close()
        await self.store.close()
        self.access_log.flush()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()

    def _admin_app(self) -> web.Application:
        return admin_app(lambda: generate_latest(self.metrics.registry), self._readiness)

    def _readiness(self) -> tuple[bool, dict[str, object]]:
        if not self.ready or not self.serving:
            return False, {"status": "not ready"}
        return True, {"status": "ready"}


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # the asyncio server: the only place the bound port (for :0) lives
    assert server is not None
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0


def _show(listen: Listen, port: int) -> str:
    return str(Listen(listen.host, port))


# Young-generation threshold once serving (Python's default is 700): docs/decisions/0003-garbage-collector.md
GC_YOUNG_THRESHOLD = 7000


def settle_garbage_collector() -> None:
    """Once serving: everything built so far (modules, config, metrics) moves to the
    collector's permanent generation, so its passes walk only what requests make."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


_early_hangups = 0


def hold_sighup() -> None:
    """SIGHUP's default action ends the process. From the moment `run` is asked for until the
    reloader takes the signal over, a SIGHUP (a deploy tool's reload) is only remembered, and
    the reloader applies it once it is up."""

    def remember(signum: int, frame: object) -> None:
        global _early_hangups
        _early_hangups += 1

    signal.signal(signal.SIGHUP, remember)


def _take_early_hangups() -> int:
    global _early_hangups
    seen, _early_hangups = _early_hangups, 0
    return seen


async def run(
    config: Config,
    path: str | None = None,
    ready_fd: int | None = None,
    over: Overrides | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully and return the exit code.

    With `path`, the file is watched and SIGHUP reloads it. With `ready_fd` this process is one
    worker of several: it shares the port, and writes to that pipe once it is listening.
    """
    service = Service(config, worker=ready_fd is not None)
    await service.start()
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.begin_shutdown)
    reloader = None
    if path is not None:
        reloader = Reloader(path, service.holder, service.metrics, overrides=over)
        reloader.start()
        loop.add_signal_handler(signal.SIGHUP, reloader.signal)
        if _take_early_hangups():
            reloader.signal()
    settle_garbage_collector()
    await service.stopping.wait()
    # Not ready at once (the load balancer stops sending), then drain.
    service.ready = False
    log.info("shutting down", extra={"timeout_s": service.config.shutdown_timeout})
    if reloader is not None:
        await reloader.stop()
    await service.stop()
    log.info("stopped")
    return 0
