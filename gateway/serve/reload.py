"""Hot reload: watch the config file (and SIGHUP), build a new snapshot, swap it; on error keep
the old one.

Polling `stat()` of the path (following symlinks) catches all three ways a file changes
under a running process: a rewrite in place, an editor's rename-over (new inode), and the
Kubernetes ConfigMap update (the `..data` symlink is swapped to a new directory, so the
resolved path and inode change while the file name stays the same). Polling also works on
every filesystem and inside containers, where inotify on a projected volume is unreliable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import config as cfg
from gateway.config.overrides import Overrides
from gateway.metrics import Metrics
from gateway.proxy.snapshot import SnapshotHolder, compile_snapshot, publish_route_gauges

log = logging.getLogger("webhook_gateway.reload")

# Settings bound to sockets or processes at start; a reload that changes them is refused.
# `store` compares without its on_store_error, which a reload may flip (see StoreConfig).
RESTART_ONLY = ("listen", "admin_listen", "workers", "tls", "store", "spool_path")
POLL_INTERVAL = 0.5
SETTLE = 0.15
# A signal-triggered reload waits at most this many settle intervals for the file to stop
# changing; a file still changing after that is left to the watcher (it applies it once settled).
SIGNAL_SETTLE_TRIES = 40


@dataclass(frozen=True)
class FileState:
    real: str
    inode: int
    mtime_ns: int
    size: int


def file_state(path: str) -> FileState | None:
    try:
        st = os.stat(path)
        return FileState(os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        return None


class Reloader:
    """Applies a config file to a running gateway, transactionally."""

    def __init__(
        self,
        path: str,
        holder: SnapshotHolder,
        metrics: Metrics,
        on_applied: Callable[[cfg.Config], None] | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        self.path = path
        self.holder = holder
        self.metrics = metrics
        self.on_applied = on_applied
        self.overrides = overrides or Overrides()
        self._state = file_state(path)
        self._digest = _digest(path)
        self._task: asyncio.Task[None] | None = None
        self._signalled: asyncio.Task[bool] | None = None

    def reload(self, force: bool = False, data: bytes | None = None) -> bool:
        """Read, validate and apply the file (or `data`, already read from it). Returns True
        when a new snapshot is serving.

        Unchanged content does nothing unless `force` (SIGHUP: secret files may have changed).
        """
        if data is None:
            try:
                data = cfg.read_bytes(self.path)
            except cfg.ConfigError as exc:
                return self._failed(exc.problems)
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest and not force:
            return False
        self._digest = digest
        try:
            new = cfg.build(cfg.parse_yaml(data.decode("utf-8"), self.path), source_path=self.path)
            # `run --listen` and friends hold for the process: the file's value never comes back.
            new = self.overrides.apply(new)
        except UnicodeDecodeError:
            return self._failed([f"{self.path}: config is not UTF-8"])
        except cfg.ConfigError as exc:
            return self._failed(exc.problems)
        old = self.holder.current
        refused = [
            f"{key}: changed from {_show(getattr(old.config, key, None))} to "
            f"{_show(getattr(new, key, None))}; this needs a restart, the running config is kept"
            for key in RESTART_ONLY
            if getattr(old.config, key, None) != getattr(new, key, None)
        ]
        if refused:
            return self._failed(refused)
        try:
            snapshot = compile_snapshot(new, self.metrics)
        except Exception as exc:  # a build error must never take down the running config
            log.exception("config build failed")
            return self._failed([f"{self.path}: {type(exc).__name__}"])
        self.holder.current = snapshot  # the one swap: new requests see the new config
        publish_route_gauges(old, snapshot, self.metrics)
        self.metrics.config_reloads.labels("success").inc()
        self.metrics.last_reload_success.set_to_current_time()
        self.metrics.last_reload_ok.set(1)
        modes = {r.name: _mode(r.mode, r.enforce_percent) for r in new.routes}
        log.info("config reloaded", extra={"path": self.path, "routes": modes})
        if self.on_applied is not None:
            self.on_applied(new)
        return True

    def _failed(self, problems: list[str]) -> bool:
        self.metrics.config_reloads.labels("error").inc()
        self.metrics.last_reload_ok.set(0)
        for problem in problems:
            log.error("config reload refused", extra={"path": self.path, "problem": problem})
        return False

    def signal(self) -> None:
        """SIGHUP: reload once the file has settled. A signal while one is already waiting adds
        nothing: that one reads the file after settling, i.e. after this signal."""
        if self._signalled is not None and not self._signalled.done():
            return
        self._signalled = asyncio.get_running_loop().create_task(self.reload_settled())

    async def reload_settled(self, tries: int = SIGNAL_SETTLE_TRIES) -> bool:
        """Like the watcher, never build from a file caught mid-write: wait until its mtime is
        at least a settle interval old, then read it twice a settle interval apart; build only
        when both reads agree (bytes and stat), else start over."""
        for _ in range(tries):
            before = file_state(self.path)
            if before is None:
                await asyncio.sleep(SETTLE)  # mid-swap: look again
                continue
            age = time.time() - before.mtime_ns / 1e9
            if age < SETTLE:
                self.metrics.config_reload_waits.inc()
                await asyncio.sleep(SETTLE - age)
                continue
            first = _read(self.path)
            await asyncio.sleep(SETTLE)
            second = _read(self.path)
            if first is not None and first == second and file_state(self.path) == before:
                self._state = before
                return self.reload(force=True, data=second)
            self.metrics.config_reload_waits.inc()
        log.warning(
            "config reload deferred: the file kept changing; the watcher applies it once it settles",
            extra={"path": self.path},
        )
        return False

    async def poll_once(self) -> bool:
        state = file_state(self.path)
        if state == self._state:
            return False
        # Let a writer finish: act only on a file that stays the same for a moment, so a
        # half-written file is not reported as a failed reload.
        await asyncio.sleep(SETTLE)
        if file_state(self.path) != state:
            return False
        self._state = state
        if state is None:
            # Mid-swap or deleted: keep serving; the next appearance is picked up.
            return False
        return self.reload()

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:  # the watcher must outlive any surprise
                log.exception("config watch failed")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.watch())

    async def stop(self) -> None:
        for task in (self._task, self._signalled):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(cfg.read_bytes(path)).hexdigest()
    except cfg.ConfigError:
        return None


def _read(path: str) -> bytes | None:
    try:
        return cfg.read_bytes(path)
    except cfg.ConfigError:
        return None


def _show(value: object) -> str:
    return "unset" if value is None else str(value)


def _mode(mode: str, percent: int) -> str:
    return f"enforce {percent}%" if mode == "enforce" and percent < 100 else mode
