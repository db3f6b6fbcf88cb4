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
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def reload(self, force: bool = False) -> bool:
        """Read, validate and apply the file. Returns True when a new snapshot is serving.

        Unchanged content does nothing unless `force` (SIGHUP: secret files may have changed).
        """
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
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def _digest(path: str) -> str | None:
    try:
        return hashlib.sha256(cfg.read_bytes(path)).hexdigest()
    except cfg.ConfigError:
        return None


def _show(value: object) -> str:
    return "unset" if value is None else str(value)


def _mode(mode: str, percent: int) -> str:
    return f"enforce {percent}%" if mode == "enforce" and percent < 100 else mode
