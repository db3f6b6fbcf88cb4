"""A real gateway process: SIGTERM stops the delivery workers cleanly, pending rows survive it."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.support.inprocess import post
from tests.support.process import GatewayProcess, free_port
from tests.support.spool import FAST_SPOOL, eventually, rows
from tests.support.upstream import upstream_on


async def test_sigterm_stops_workers_cleanly_and_a_restart_resumes(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    up_port, port, admin = free_port(), free_port(), free_port()
    conf = {
        "listen": f"127.0.0.1:{port}",
        "admin_listen": f"127.0.0.1:{admin}",
        "shutdown_timeout": "5s",
        "routes": [
            {
                "name": "bot",
                "path": "/hook/bot",
                "upstream": f"http://127.0.0.1:{up_port}/webhook",
                "delivery": "spool",
            }
        ],
        "spool": {"path": str(db), **FAST_SPOOL},
    }
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(conf))
    sent = [b'{"update_id":%d}' % i for i in range(6)]
    # A slow upstream: SIGTERM arrives while a delivery is in flight.
    async with upstream_on(up_port, delay=0.5) as up:
        gw = GatewayProcess(config)
        await gw.start(port, admin)
        try:
            for body in sent:
                assert (await post(gw.base + "/hook/bot", body))[0] == 200
            await eventually(lambda: len(up.received) >= 1, what="a delivery in flight")
            assert await gw.stop(signal.SIGTERM) == 0
        finally:
            gw.kill()
        assert '"level": "error"' not in gw.stderr
        left = [r[2] for r in rows(db)]
        assert left and left == sent[len(sent) - len(left) :]  # what is left is the tail, in order
        up.delay = 0.0
        gw = GatewayProcess(config)
        await gw.start(port, admin)
        try:
            await eventually(lambda: rows(db) == [], what="the rest delivered after the restart")
            await eventually(
                lambda: _eq(gw.metric("webhook_gateway_spool_depth", route="bot"), 0.0), what="depth 0"
            )
        finally:
            assert await gw.stop(signal.SIGTERM) == 0
    # Each update arrived; one cut off by the shutdown may arrive twice, byte-identical.
    assert list(dict.fromkeys(r.body for r in up.received)) == sent


async def _eq(value: object, expected: float) -> bool:
    return await value == expected  # type: ignore[misc]
