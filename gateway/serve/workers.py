"""`workers: N`: N gateway processes on one port, one admin listener, metrics summed.

The parent (this module) serves nothing public. It starts N workers, each a fresh
`webhook-gateway worker` process that binds the public port with SO_REUSEPORT (the kernel
spreads new connections over them), and it serves the admin listener once:

- `/metrics`: every worker records into prometheus_client's multiprocess files, in a
  directory the parent creates (and removes) and hands over in `PROMETHEUS_MULTIPROC_DIR`; the
  parent adds them up at each scrape (counters and histograms summed, in-flight summed over
  live workers, route modes and reload times as the workers last set them);
- `/readyz`: ready while every worker is up and none is stopping;
- SIGTERM/SIGINT: not ready at once, passed to every worker, each drains its in-flight
  requests (within `shutdown_timeout`), then the parent exits; SIGHUP is passed on (each
  worker re-reads the config; each also watches the file itself);
- a worker that dies is logged and started again, so the port keeps its capacity.

Workers are spawned, not forked: no event loop, socket or lock is shared by accident.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.config import Config
from gateway.config.overrides import Overrides
from gateway.metrics import MULTIPROC_ENV
from gateway.serve.admin import admin_app
from gateway.serve.service import settle_garbage_collector

log = logging.getLogger("webhook_gateway")

RESTART_DELAY = 1.0


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False


class Supervisor:
    def __init__(self, config: Config, path: str, over: Overrides | None = None) -> None:
        self.config = config
        self.path = path
        self.overrides = over or Overrides()
        self.workers = [Worker(i) for i in range(config.workers)]
        self.stopping = False
        self.stopped = asyncio.Event()
        self.metrics_dir = tempfile.mkdtemp(prefix="webhook-gateway-metrics-")
        self._admin: web.AppRunner | None = None
        self._watchers: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ workers

    async def _spawn(self, worker: Worker) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, MULTIPROC_ENV: self.metrics_dir}
        cmd = [sys.executable, "-m", "gateway", "worker", "--config", self.path, "--ready-fd", str(write_fd)]
        cmd += self.overrides.argv()  # the worker binds what `run --listen` said, not the file
        worker.ready = False
        try:
            worker.proc = await asyncio.create_subprocess_exec(*cmd, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        try:
            worker.ready = (await reader.readline()) == b"ready\n"  # b"" if it died first
        finally:
            transport.close()

    async def _watch(self, worker: Worker) -> None:
        """Keep one worker running until the gateway stops."""
        while True:
            assert worker.proc is not None
            code = await worker.proc.wait()
            worker.ready = False
            mark_process_dead(worker.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            log.error("worker exited; starting it again", extra={"worker": worker.index, "code": code})
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            await self._spawn(worker)

    def _signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.send_signal(sig)

    # ------------------------------------------------------------ admin

    def _admin_app(self) -> web.Application:
        return admin_app(self._metrics, self._readiness, lambda: {"workers": len(self.workers)})

    def _metrics(self) -> bytes:
        # Every worker's values, from prometheus_client's files in the shared directory.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def _readiness(self) -> tuple[bool, dict[str, object]]:
        up = sum(1 for w in self.workers if w.ready and w.proc is not None and w.proc.returncode is None)
        if self.stopping or up < len(self.workers):
            return False, {"status": "not ready", "workers_ready": up}
        return True, {"status": "ready", "workers_ready": up}

    # ------------------------------------------------------------ lifecycle

    def begin_stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True  # not ready from this instant
        self._signal_all(signal.SIGTERM)
        self.stopped.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._signal_all(signal.SIGHUP))
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
            if not all(w.ready for w in self.workers):
                log.error("a worker failed to start")
                self.begin_stop()
                await self._wait_workers()
                return 1
            cfg = self.config
            self._admin = web.AppRunner(self._admin_app(), access_log=None)
            await self._admin.setup()
            await web.TCPSite(self._admin, cfg.admin_listen.host, cfg.admin_listen.port).start()
            self._watchers = [loop.create_task(self._watch(w)) for w in self.workers]
            log.info(
                "listening",
                extra={"public": str(cfg.listen), "admin": str(cfg.admin_listen), "workers": cfg.workers},
            )
            # As a worker does once serving (docs/decisions/0003-garbage-collector.md): the
            # collector, and the one at exit, then skip everything built at start.
            settle_garbage_collector()
            await self.stopped.wait()
            log.info("shutting down", extra={"timeout_s": cfg.shutdown_timeout, "workers": cfg.workers})
            failed = await self._wait_workers()
            for task in self._watchers:
                task.cancel()
            log.info("stopped")
            return 1 if failed else 0
        finally:
            if self._admin is not None:
                await self._admin.cleanup()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _wait_workers(self) -> int:
        """Wait for every worker to drain and exit; -> how many did not exit cleanly."""
        # Each worker bounds its own drain by shutdown_timeout; past that and a margin, kill.
        deadline = time.monotonic() + self.config.shutdown_timeout + 10
        failed = 0
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    code = await w.proc.wait()
            except TimeoutError:
                log.error("worker did not stop in time: killing it", extra={"worker": w.index})
                w.proc.kill()
                code = await w.proc.wait()
            failed += code != 0
        return failed


async def supervise(config: Config, path: str, over: Overrides | None = None) -> int:
    return await Supervisor(config, path, over).run()
