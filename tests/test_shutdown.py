"""After `stopped`, nothing is left that the interpreter would wait for on its way out.

SIGTERM with nothing in flight must exit right after `stopped`: no task still pending on the
loop (a watcher's sleep, a supervisor), no worker thread still alive (the spool's database
thread, an executor) that the interpreter would join before exiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import yaml

from gateway import config as cfg
from gateway.serve.service import run
from tests.helpers import base_config, free_port, recording_upstream, route, tg_verify


def _non_daemon_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()}


async def test_nothing_left_after_stopped(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        raw = base_config(
            [
                route("bot", upstream=up.url, verify=tg_verify("env:TG_SECRET")),
                route("spooled", upstream=up.url, delivery="spool"),
            ],
            listen=f"127.0.0.1:{free_port()}",
            admin_listen=f"127.0.0.1:{free_port()}",
            spool={"path": str(tmp_path / "spool.db")},
        )
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        config = cfg.load(str(path), environ={"TG_SECRET": "shutdown-test-secret"})
        threads_before = _non_daemon_threads()
        tasks_before = asyncio.all_tasks()
        loop = asyncio.get_running_loop()
        # SIGTERM once serving (the file watcher, spool supervisor and its database thread are up).
        loop.call_later(1.5, os.kill, os.getpid(), signal.SIGTERM)
        try:
            assert await run(config, str(path)) == 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        left = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
        assert left == [], left
        assert _non_daemon_threads() <= threads_before
