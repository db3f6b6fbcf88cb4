"""The spool after an outage: the upstream's return is noticed by a connect probe, not by the
grown retry delay; and a spool file from before ordering keys is upgraded in place."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
from aiohttp import web

from gateway.spool import worker
from gateway.spool.store import SCHEMA_VERSION, Store
from tests.support.inprocess import post, running_gateway
from tests.support.process import free_port
from tests.support.spool import eventually, rows, spool_config
from tests.support.upstream import RecordingUpstream, upstream_on


class StampingUpstream(RecordingUpstream):
    """Records the monotonic time of every request."""

    stamps: list[float] | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.stamps is None:
            self.stamps = []
        self.stamps.append(time.monotonic())
        return await super().handle(request)


def next_at(db: Path) -> float:
    conn = sqlite3.connect(db, timeout=5)
    try:
        return float(conn.execute("SELECT next_at FROM pending ORDER BY id LIMIT 1").fetchone()[0])
    finally:
        conn.close()


async def test_delivery_resumes_promptly_after_a_long_outage_without_hammering(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    port = free_port()
    # The default backoff (1 s doubling up to 60 s): after 20 s down the next retry is seconds away.
    conf = spool_config(
        db, f"http://127.0.0.1:{port}/webhook", spool={"backoff_initial": "1s", "backoff_max": "60s"}
    )
    async with running_gateway(conf) as gw:
        for i in range(5):
            assert (await post(gw.base + "/hook/bot", b'{"update_id":%d}' % i))[0] == 200
        await asyncio.sleep(20)
        # Bring the bot back only while the grown backoff alone would hold the head past the
        # recovery bound (an attempt may be landing right now: wait for its new schedule).
        await eventually(lambda: next_at(db) - time.time() > 4.0, what="the head's retry seconds away")
        retries = await gw.metric("webhook_gateway_spool_deliveries_total", route="bot", result="retry")
        restart = time.monotonic()
        async with upstream_on(port, factory=StampingUpstream) as up:
            await eventually(lambda: rows(db) == [], what="all delivered")
        assert isinstance(up, StampingUpstream) and up.stamps
        assert up.stamps[0] - restart < 2.0
        assert [json.loads(r.body)["update_id"] for r in up.received] == list(range(5))
        assert await gw.metric("webhook_gateway_spool_probe_recoveries_total", route="bot") == 1
    # Down for 20 s with probes every 0.5 s, yet only the backoff's few delivery attempts.
    assert 1 <= retries <= 6


class WallClockUpstream(RecordingUpstream):
    """Records the wall-clock time each update_id arrived (the spool schedules in wall time)."""

    arrived: dict[int, float] | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        answer = await super().handle(request)
        if self.arrived is None:
            self.arrived = {}
        self.arrived[json.loads(self.received[-1].body)["update_id"]] = time.time()
        return answer


def attempts_and_next(db: Path, update_id: int) -> tuple[int, float]:
    """(attempts, next_at) of the pending row holding `update_id`; (-1, 0.0) when there is none."""
    conn = sqlite3.connect(db, timeout=5)
    try:
        found = conn.execute("SELECT body, attempts, next_at FROM pending").fetchall()
    finally:
        conn.close()
    for body, attempts, at in found:
        if json.loads(body)["update_id"] == update_id:
            return int(attempts), float(at)
    return -1, 0.0


async def test_a_delivery_that_finds_the_bot_back_releases_every_waiting_chat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe is switched off: the first delivery that gets through (chat 1's short retry)
    must make chat 2's row, refused for longer and scheduled seconds away, due at once."""
    monkeypatch.setattr(worker, "PROBE_EVERY", 1e9)
    db = tmp_path / "spool.db"
    port = free_port()
    conf = spool_config(
        db,
        f"http://127.0.0.1:{port}/webhook",
        spool={"backoff_initial": "1s", "backoff_max": "60s"},
        spool_order_by="chat",
    )
    chat = b'{"update_id":%d,"message":{"chat":{"id":%d}}}'
    async with running_gateway(conf) as gw:
        assert (await post(gw.base + "/hook/bot", chat % (1, 2)))[0] == 200
        await eventually(lambda: attempts_and_next(db, 1)[0] >= 3, what="chat 2 refused three times")
        assert (await post(gw.base + "/hook/bot", chat % (2, 1)))[0] == 200
        await eventually(lambda: attempts_and_next(db, 2)[0] >= 1, what="chat 1 refused once")
        await eventually(
            lambda: attempts_and_next(db, 1)[1] - time.time() > 3.0, what="chat 2's retry seconds away"
        )
        _, scheduled = attempts_and_next(db, 1)
        async with upstream_on(port, factory=WallClockUpstream) as up:
            await eventually(lambda: rows(db) == [], what="both delivered")
        assert isinstance(up, WallClockUpstream) and up.arrived is not None
        assert up.arrived[2] <= up.arrived[1] < scheduled - 1.0
        assert await gw.metric("webhook_gateway_spool_probe_recoveries_total", route="bot") == 1


V1_SCHEMA = """
CREATE TABLE pending (id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, received REAL NOT NULL,
    query TEXT NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, last_error TEXT);
CREATE INDEX pending_by_route ON pending (route, id);
CREATE TABLE dead (id INTEGER PRIMARY KEY, route TEXT NOT NULL, received REAL NOT NULL, query TEXT NOT NULL,
    headers TEXT NOT NULL, body BLOB NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    attempts INTEGER NOT NULL, died REAL NOT NULL, reason TEXT NOT NULL);
CREATE INDEX dead_by_route ON dead (route, id);
CREATE TABLE marks (route TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (route, key)) WITHOUT ROWID;
CREATE INDEX marks_by_expiry ON marks (expires);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def v1_file(db: Path, bodies: list[bytes]) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(V1_SCHEMA)
    now = time.time()
    for body in bodies:
        conn.execute(
            "INSERT INTO pending (route, received, query, headers, body, sha256, size, next_at)"
            " VALUES ('bot', ?, '', '[]', ?, '', ?, ?)",
            (now, body, len(body), now),
        )
    conn.execute(
        "INSERT INTO dead (id, route, received, query, headers, body, sha256, size, attempts, died, reason)"
        " VALUES (99, 'bot', ?, '', '[]', X'7B7D', '', 2, 5, ?, 'refused')",
        (now, now),
    )
    conn.commit()
    conn.close()


def test_a_v1_spool_file_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    v1_file(db, [b'{"update_id":1}', b'{"update_id":2}'])
    store = Store.open(str(db), 2.0, create=False)
    try:
        version = store.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert int(version[0]) == SCHEMA_VERSION == 2
        assert [(i, k) for i, k, _ in store.head_keys("bot", 10)] == [(1, ""), (2, "")]
        assert store.retry(99, None, time.time()) == 1  # a v1 dead row revives with the route key
        assert [k for _, k, _ in store.head_keys("bot", 10)] == ["", "", ""]
    finally:
        store.close()


async def test_rows_of_a_v1_file_are_delivered_in_order_after_the_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    bodies = [b'{"update_id":%d,"message":{"chat":{"id":%d}}}' % (i, i) for i in range(6)]
    v1_file(db, bodies)
    async with upstream_on(free_port()) as up:
        conf = spool_config(db, up.url, spool_order_by="chat")
        async with running_gateway(conf) as gw:
            await eventually(lambda: rows(db) == [], what="the v1 rows delivered")
            assert (await post(gw.base + "/hook/bot", b'{"update_id":7}'))[0] == 200
            await eventually(lambda: len(up.received) == 7, what="a new row delivered")
    # Rows stored before keys existed share the route's key: still one queue, in order.
    assert [r.body for r in up.received[:6]] == bodies
