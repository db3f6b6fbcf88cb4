"""A spool that cannot store answers 503 (the sender retries), never 200."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.inprocess import post, running_gateway
from tests.support.process import free_port
from tests.support.spool import eventually, rows, spool_config
from tests.support.upstream import upstream_on

URL = "/hook/bot"


async def _fails_with(gw: object, body: bytes, reason: str) -> None:
    status, answer, headers = await post(gw.base + URL, body)  # type: ignore[attr-defined]
    assert (status, answer) == (503, b'{"error": "spool_unavailable"}')
    assert headers["Retry-After"] == "5"
    metric = "webhook_gateway_spool_write_failures_total"
    assert await gw.metric(metric, route="bot", reason=reason) >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("bounds", "body_size"),
    [({"max_items": 3}, 10), ({"max_bytes": 4096}, 1000)],
    ids=["max_items", "max_bytes"],
)
async def test_a_full_spool_answers_503_until_deliveries_make_room(
    tmp_path: Path, bounds: dict[str, int], body_size: int
) -> None:
    db = tmp_path / "spool.db"
    port = free_port()
    conf = spool_config(db, f"http://127.0.0.1:{port}/webhook", spool=bounds)
    async with running_gateway(conf) as gw:
        bodies = [bytes([65 + i]) * body_size for i in range(4)]
        for body in bodies[:3]:
            assert (await post(gw.base + URL, body))[0] == 200
        await _fails_with(gw, bodies[3], "full")
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="spool_error") == 1
        assert [r[2] for r in rows(db)] == bodies[:3]  # the refused one was not stored
        async with upstream_on(port) as up:
            await eventually(lambda: rows(db) == [], what="drained")
            # The sender's retry of the refused update now fits.
            assert (await post(gw.base + URL, bodies[3]))[0] == 200
            await eventually(lambda: len(up.received) == 4, what="the retried update delivered")
        assert [r.body for r in up.received] == bodies


@contextlib.contextmanager
def immutable(directory: Path) -> Iterator[None]:
    """A directory nobody, root included, can create files in (tests run as root, so a chmod
    would not stop the gateway)."""
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a filesystem supporting it)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


async def test_a_read_only_spool_directory_answers_503_then_recovers(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    db = spool_dir / "spool.db"
    async with upstream_on(free_port()) as up:
        conf = spool_config(db, up.url)
        with immutable(spool_dir):
            async with running_gateway(conf) as gw:
                await _fails_with(gw, b'{"update_id":1}', "unavailable")
                assert await gw.metric("webhook_gateway_spool_available") == 0
                assert not db.exists()
                # Writable again: the supervisor opens the spool without a restart.
                subprocess.run(["chattr", "-i", str(spool_dir)], check=True)

                async def stored() -> bool:
                    return (await post(gw.base + URL, b'{"update_id":1}'))[0] == 200

                await eventually(stored, what="the spool opens once the directory is writable")
                await eventually(lambda: len(up.received) == 1, what="delivered")
                assert await gw.metric("webhook_gateway_spool_available") == 1


@contextlib.contextmanager
def tiny_filesystem(mountpoint: Path, size: str) -> Iterator[None]:
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_answers_503_and_keeps_every_acknowledged_update(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    with tiny_filesystem(mnt, "400k"):
        db = mnt / "spool.db"
        port = free_port()
        conf = spool_config(db, f"http://127.0.0.1:{port}/webhook", spool={"dedup": False})
        acked: list[str] = []
        async with running_gateway(conf) as gw:
            for i in range(200):
                body = os.urandom(4000) + b"%d" % i
                status, _, _ = await post(gw.base + URL, body)
                if status == 200:
                    acked.append(hashlib.sha256(body).hexdigest())
                    continue
                assert status == 503
                break
            else:
                pytest.fail("a 400 KiB filesystem took 800 KB of updates")
            metric = "webhook_gateway_spool_write_failures_total"
            assert await gw.metric(metric, route="bot", reason="disk_full") == 1
            assert acked
            stored = [hashlib.sha256(r[2]).hexdigest() for r in rows(db)]
            assert stored == acked
            # After the failure the database is still sound and still serves what it holds.
            conn = sqlite3.connect(db)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            conn.close()
            # Deliveries go on. Deleting a delivered row needs disk space too: while the disk
            # stays full, a row may be delivered again after a restart, never lost.
            async with upstream_on(port) as up:

                def firsts() -> list[str]:
                    return list(dict.fromkeys(r.sha256 for r in up.received))

                await eventually(lambda: firsts() == acked, what="every acknowledged update delivered")


async def test_a_write_lock_held_too_long_answers_503(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    conf = spool_config(db, "http://127.0.0.1:9/webhook", spool={"lock_timeout": "200ms"})
    async with running_gateway(conf) as gw:
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # e.g. an operator's long-running write
        try:
            status, _, _ = await post(gw.base + URL, b'{"update_id":5}')
            assert status == 503
            metric = "webhook_gateway_spool_write_failures_total"
            assert await gw.metric(metric, route="bot", reason="locked") == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Nothing was stored by the refused attempt: the retry is stored, not a duplicate.
        status, answer, _ = await post(gw.base + URL, b'{"update_id":5}')
        assert (status, answer) == (200, b'{"status": "spooled"}')
