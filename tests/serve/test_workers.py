"""`workers: N`: real multi-process gateways on loopback.

Requests go over fresh connections, so SO_REUSEPORT spreads them over the workers; the
upstream sees which worker sent each one (the request id starts with a per-process prefix).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway import config as cfg
from tests.support.env import TG_SECRET
from tests.support.inprocess import base_config, route, tg_verify
from tests.support.metrics import metric_value
from tests.support.process import GatewayProcess, free_port
from tests.support.upstream import recording_upstream

TG = "X-Telegram-Bot-Api-Secret-Token"


def workers_config(tmp_path: Path, upstream: str, workers: int, **extra: Any) -> tuple[Path, int, int]:
    port, admin = free_port(), free_port()
    d = base_config([route(upstream=upstream, verify=tg_verify())])
    d.update(listen=f"127.0.0.1:{port}", admin_listen=f"127.0.0.1:{admin}", workers=workers, **extra)
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(d))
    return path, port, admin


async def post_fresh(url: str, token: str, i: int) -> int:
    """One POST on its own connection (a new connection may land on any worker)."""
    body = json.dumps({"update_id": i}).encode()
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers={TG: token}) as r:
        await r.read()
        return r.status


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


async def metrics_text(gw: GatewayProcess) -> str:
    async with aiohttp.ClientSession() as s, s.get(gw.admin + "/metrics") as r:
        assert r.status == 200
        return await r.text()


async def test_two_workers_share_the_port_and_metrics_add_up(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        path, port, admin = workers_config(tmp_path, up.url, 2)
        gw = GatewayProcess(path)
        await gw.start(port, admin)
        try:
            assert gw.proc is not None
            assert len(children(gw.proc.pid)) == 2
            url = gw.base + "/hook/bot"
            good = await asyncio.gather(*(post_fresh(url, TG_SECRET, i) for i in range(40)))
            forged = await asyncio.gather(*(post_fresh(url, "forged", i) for i in range(12)))
            assert good == [200] * 40
            assert forged == [401] * 12
            text = await metrics_text(gw)
        finally:
            assert await gw.stop() == 0
    # Every request counted exactly once, whichever worker took it.
    forwarded = {"route": "bot", "outcome": "forwarded"}
    assert metric_value(text, "webhook_gateway_requests_total", forwarded) == 40
    assert metric_value(text, "webhook_gateway_requests_total", {"route": "bot", "outcome": "rejected"}) == 12
    failures = {"route": "bot", "check": "signature", "reason": "mismatch", "mode": "enforce"}
    assert metric_value(text, "webhook_gateway_check_failures_total", failures) == 12
    assert metric_value(text, "webhook_gateway_request_duration_seconds_count", {"route": "bot"}) == 52
    assert metric_value(text, "webhook_gateway_upstream_duration_seconds_count", {"route": "bot"}) == 40
    assert metric_value(text, "webhook_gateway_secret_matches_total", {"route": "bot", "secret": "0"}) == 40
    assert metric_value(text, "webhook_gateway_route_enforced", {"route": "bot"}) == 1
    assert metric_value(text, "webhook_gateway_inflight_requests", {}) == 0
    # Both workers served: the request ids carry two different process prefixes.
    prefixes = {r.header("X-Request-Id")[:16] for r in up.received}  # type: ignore[index]
    assert len(prefixes) == 2
    assert sorted(json.loads(r.body)["update_id"] for r in up.received) == list(range(40))


async def test_sigterm_to_the_parent_drains_every_worker(tmp_path: Path) -> None:
    async with recording_upstream(delay=0.5) as up:
        path, port, admin = workers_config(tmp_path, up.url, 2, shutdown_timeout="10s")
        gw = GatewayProcess(path)
        await gw.start(port, admin)
        assert gw.proc is not None
        workers = children(gw.proc.pid)
        assert len(workers) == 2
        url = gw.base + "/hook/bot"
        inflight = [asyncio.create_task(post_fresh(url, TG_SECRET, i)) for i in range(16)]
        while len(up.received) < 16:  # all accepted and waiting on the slow upstream
            await asyncio.sleep(0.01)
        gw.proc.send_signal(signal.SIGTERM)
        statuses = await asyncio.gather(*inflight)
        code = await gw.stop(sig=None)
    assert statuses == [200] * 16
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    assert '"event": "stopped"' in gw.stderr


async def test_a_dead_worker_is_replaced_and_its_counts_are_kept(tmp_path: Path) -> None:
    async with recording_upstream() as up:
        path, port, admin = workers_config(tmp_path, up.url, 2)
        gw = GatewayProcess(path)
        await gw.start(port, admin)
        try:
            assert gw.proc is not None
            url = gw.base + "/hook/bot"
            first = await asyncio.gather(*(post_fresh(url, TG_SECRET, i) for i in range(20)))
            victim = children(gw.proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            # Ready again once a replacement worker is listening.
            async with asyncio.timeout(30), aiohttp.ClientSession() as s:
                while True:
                    kids = children(gw.proc.pid)
                    if victim not in kids and len(kids) == 2:
                        async with s.get(gw.admin + "/readyz") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.05)
            second = await asyncio.gather(*(post_fresh(url, TG_SECRET, i) for i in range(20, 40)))
            text = await metrics_text(gw)
        finally:
            assert await gw.stop() == 0
    assert first + second == [200] * 40
    # The killed worker's counts stay in the total: nothing served is forgotten.
    forwarded = {"route": "bot", "outcome": "forwarded"}
    assert metric_value(text, "webhook_gateway_requests_total", forwarded) == 40
    assert "worker exited; starting it again" in gw.stderr


def test_workers_need_a_fixed_port() -> None:
    d = base_config([route(upstream="http://127.0.0.1:1/x")], workers=2)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build(d, environ={})
    assert any(p.startswith("workers:") and "port 0" in p for p in err.value.problems)
    assert cfg.build({**d, "workers": 1}, environ={}).workers == 1


@pytest.mark.parametrize("value", [0, 65, "2", True])
def test_workers_value_is_checked(value: object) -> None:
    d = base_config([route(upstream="http://127.0.0.1:1/x")], listen="127.0.0.1:8080", workers=value)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build(d, environ={})
    assert any(p.startswith("workers:") for p in err.value.problems)


@pytest.mark.parametrize(
    ("extra", "route_extra", "says"),
    [
        ({}, {"replay": {"key": "update_id"}}, "need `store: {backend: redis}`"),
        ({}, {"delivery": "spool"}, "the spool is owned by one process"),
    ],
)
def test_workers_refuse_state_that_lives_in_one_process(
    tmp_path: Path, extra: dict[str, Any], route_extra: dict[str, Any], says: str
) -> None:
    r = route(upstream="http://127.0.0.1:1/x", verify=tg_verify(), **route_extra)
    d = base_config([r], listen="127.0.0.1:8080", workers=2, **extra)
    if route_extra.get("delivery") == "spool":
        d["spool"] = {"path": str(tmp_path / "spool.db")}
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build(d, environ={"TG_SECRET": TG_SECRET})
    assert any(p.startswith("workers:") and says in p for p in err.value.problems), err.value.problems
