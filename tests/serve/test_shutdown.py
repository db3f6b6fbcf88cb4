"""After `stopped`, nothing is left that the interpreter would wait for on its way out.

SIGTERM with nothing in flight must exit right after `stopped`: no task still pending on the
loop (a watcher's sleep, a supervisor), no worker thread still alive (the spool's database
thread, an executor) that the interpreter would join before exiting, and no heap left for the
exit-time garbage collection to walk (it took 0.1-0.5 s in the `workers: N` parent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway import config as cfg
from gateway.serve.service import run
from tests.support.env import ROOT_DIR
from tests.support.inprocess import base_config, route, tg_verify
from tests.support.process import free_port
from tests.support.upstream import recording_upstream


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
        served = loop.create_task(run(config, str(path)))
        # Traffic first, as a newcomer's session has: a forwarded update, a spooled one, a 502,
        # a scrape, each client keeping its keep-alive connection open through the SIGTERM.
        base, admin = f"http://{config.listen}", f"http://{config.admin_listen}"
        session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        async with session.get(admin + "/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
            headers = {"X-Telegram-Bot-Api-Secret-Token": "shutdown-test-secret"}
            async with session.post(base + "/hook/bot", data=b'{"update_id":1}', headers=headers) as r:
                assert r.status == 200
            async with session.post(base + "/hook/spooled", data=b'{"update_id":2}') as r:
                assert r.status == 200
            async with session.get(admin + "/metrics") as r:
                assert r.status == 200
            async with asyncio.timeout(20):  # the spooled update delivered too: nothing in flight
                while len(up.received) < 2:
                    await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
            assert await served == 0
        finally:
            await session.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        assert len(up.received) == 2
        left = [t for t in asyncio.all_tasks() - tasks_before - {served} if not t.done()]
        assert left == [], left
        assert _non_daemon_threads() <= threads_before


# Runs `webhook-gateway run` in a process that reports, once `main` returned, how many objects
# the exit-time collection would still walk (every generation but the permanent one).
_REPORT_HEAP = """
import gc, sys
from gateway.cli import main
code = main(sys.argv[1:])
print("collectable", len(gc.get_objects()), "frozen", gc.get_freeze_count(), flush=True)
sys.exit(code)
"""


@pytest.mark.parametrize("workers", [1, 2])
async def test_exit_leaves_no_heap_to_collect(tmp_path: Path, workers: int) -> None:
    async with recording_upstream() as up:
        port, admin = free_port(), free_port()
        raw = base_config(
            [route("bot", upstream=up.url, verify=tg_verify("env:TG_SECRET"))],
            listen=f"127.0.0.1:{port}",
            admin_listen=f"127.0.0.1:{admin}",
            workers=workers,
        )
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(raw))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _REPORT_HEAP,
            "run",
            "--config",
            str(path),
            cwd=ROOT_DIR,
            env={"PATH": "/usr/bin:/bin", "TG_SECRET": "heap-test-secret"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            async with session.get(f"http://127.0.0.1:{admin}/readyz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.05)
                headers = {"X-Telegram-Bot-Api-Secret-Token": "heap-test-secret"}
                async with session.post(
                    f"http://127.0.0.1:{port}/hook/bot", data=b"{}", headers=headers
                ) as r:
                    assert r.status == 200
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        words = out.decode().split()
        collectable, frozen = (
            int(words[words.index("collectable") + 1]),
            int(words[words.index("frozen") + 1]),
        )
        assert frozen > 10_000  # the heap is there ...
        assert collectable < 50  # ... and the exit-time collection has nothing to walk
