"""The admin listener's app (`/metrics`, `/healthz`, `/readyz`) in-process, through
pytest-aiohttp's `aiohttp_client`: the app of one gateway (`Service`) and the app of the
supervisor that `workers: N` runs, each built exactly as the admin listener builds it."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import config as cfg
from gateway.metrics import MULTIPROC_ENV
from gateway.serve.service import Service
from gateway.serve.workers import Supervisor
from tests.support.env import ENV, ROOT_DIR, TELEGRAM_IP, TG_SECRET
from tests.support.inprocess import base_config, post, route, tg_verify
from tests.support.leaks import record_output
from tests.support.metrics import metric_value
from tests.support.process import free_port
from tests.support.upstream import RecordingUpstream, recording_upstream

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
REQUESTS = "webhook_gateway_requests_total"


# The one place these tests reach the admin app: the app each admin listener serves.
def service_admin_app(service: Service) -> web.Application:
    return service._admin_app()


def supervisor_admin_app(supervisor: Supervisor) -> web.Application:
    return supervisor._admin_app()


async def get(client: Client, path: str) -> tuple[int, str, str]:
    """-> (status, Content-Type, body text); the body is kept for the session's leak scan."""
    async with client.get(path) as r:
        text = await r.text()
    record_output(f"admin {path}", text)
    return r.status, r.headers.get("Content-Type", ""), text


# ---------------------------------------------------------------- one gateway


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream() as up:
        yield up


@pytest.fixture
def service(upstream: RecordingUpstream) -> Service:
    """Built, not started: a test starts it when it needs the public listener."""
    config = base_config([route(upstream=upstream.url, verify=tg_verify(), allow_sources=["telegram"])])
    return Service(cfg.build(config, environ=dict(ENV)), log_stream=io.StringIO())


@pytest.fixture
async def started(service: Service) -> AsyncIterator[Service]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def update_from_telegram(token: str) -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": token, "X-Forwarded-For": TELEGRAM_IP}


async def test_metrics_count_what_the_public_listener_handled(
    started: Service, upstream: RecordingUpstream, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(service_admin_app(started))
    status, content_type, text = await get(client, "/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert f"# TYPE {REQUESTS} counter" in text
    assert metric_value(text, REQUESTS, {"route": "bot", "outcome": "forwarded"}) == 0

    public = f"http://127.0.0.1:{started.public_port}/hook/bot"
    assert (await post(public, b'{"update_id": 1}', update_from_telegram(TG_SECRET)))[0] == 200
    assert (await post(public, b'{"update_id": 2}', update_from_telegram("forged-token")))[0] == 401
    assert [r.body for r in upstream.received] == [b'{"update_id": 1}']

    _, _, text = await get(client, "/metrics")
    assert metric_value(text, REQUESTS, {"route": "bot", "outcome": "forwarded"}) == 1
    assert metric_value(text, REQUESTS, {"route": "bot", "outcome": "rejected"}) == 1


async def test_healthz_answers_json_ok(service: Service, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(service_admin_app(service))
    status, content_type, text = await get(client, "/healthz")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(text) == {"status": "ok"}


async def test_readyz_follows_start_and_shutdown(service: Service, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(service_admin_app(service))
    assert await get(client, "/readyz") == (503, "application/json; charset=utf-8", '{"status": "not ready"}')
    await service.start()
    try:
        assert await get(client, "/readyz") == (200, "application/json; charset=utf-8", '{"status": "ready"}')
        service.begin_shutdown()  # what SIGTERM does first: not ready before the drain starts
        assert (await get(client, "/readyz"))[0] == 503
    finally:
        await service.stop()


async def test_only_the_three_routes_and_only_reads(service: Service, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(service_admin_app(service))
    assert (await get(client, "/"))[0] == 404
    assert (await get(client, "/hook/bot"))[0] == 404
    async with client.post("/metrics", data=b"{}") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "GET,HEAD"
    async with client.head("/metrics") as r:
        assert (r.status, await r.read()) == (200, b"")


# ---------------------------------------------------------------- workers: N


@pytest.fixture
def supervisor(tmp_path: Any) -> Iterator[Supervisor]:
    config = base_config([route(upstream="http://127.0.0.1:9/webhook")], workers=2)
    config["listen"] = f"127.0.0.1:{free_port()}"
    path = tmp_path / "gateway.yaml"
    sup = Supervisor(cfg.build(config, environ=dict(ENV)), str(path))
    try:
        yield sup
    finally:
        for w in sup.workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.kill()
        shutil.rmtree(sup.metrics_dir, ignore_errors=True)


def record_in_worker(metrics_dir: str, forwarded: int) -> None:
    """What a worker process does: count into prometheus_client's multiprocess files."""
    code = (
        "from gateway.metrics import Metrics\n"
        f"Metrics().requests.labels('bot', 'forwarded').inc({forwarded})\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT_DIR), MULTIPROC_ENV: metrics_dir}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT_DIR, check=True, timeout=60)


async def test_supervisor_metrics_sum_every_worker(
    supervisor: Supervisor, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(supervisor_admin_app(supervisor))
    record_in_worker(supervisor.metrics_dir, 3)
    record_in_worker(supervisor.metrics_dir, 4)
    status, content_type, text = await get(client, "/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert metric_value(text, REQUESTS, {"route": "bot", "outcome": "forwarded"}) == 7


async def test_supervisor_readyz_counts_live_workers(
    supervisor: Supervisor, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(supervisor_admin_app(supervisor))
    status, _, text = await get(client, "/healthz")
    assert (status, json.loads(text)) == (200, {"status": "ok", "workers": 2})
    assert (await get(client, "/readyz"))[0] == 503  # no worker started yet

    for w in supervisor.workers:  # stand-ins for worker processes: alive until killed
        w.proc = await asyncio.create_subprocess_exec("sleep", "60")
        w.ready = True
    status, content_type, text = await get(client, "/readyz")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(text) == {"status": "ready", "workers_ready": 2}

    first = supervisor.workers[0].proc
    assert first is not None
    first.kill()
    await first.wait()
    status, _, text = await get(client, "/readyz")
    assert (status, json.loads(text)) == (503, {"status": "not ready", "workers_ready": 1})

    supervisor.begin_stop()  # SIGTERM: not ready at once, the live worker is signalled
    assert (await get(client, "/readyz"))[0] == 503
    second = supervisor.workers[1].proc
    assert second is not None
    assert await second.wait() == -15
