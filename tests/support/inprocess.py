"""The gateway's `Service` started in the test's own event loop, and its configuration dicts."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway import config as cfg
from gateway.serve.service import Service
from tests.support.env import ENV
from tests.support.leaks import record_output
from tests.support.metrics import metric_value


def route(name: str = "bot", upstream: str = "", **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": name, "path": f"/hook/{name}", "upstream": upstream}
    r.update(kw)
    return r


def tg_verify(*secrets: str) -> dict[str, Any]:
    return {"scheme": "telegram", "secrets": list(secrets or ["env:TG_SECRET"])}


def base_config(routes: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "mode": "enforce",
        "trusted_proxies": ["127.0.0.1/32"],
        "routes": routes,
    }
    c.update(kw)
    return c


@dataclass
class RunningGateway:
    service: Service
    log: io.StringIO

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.service.public_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.service.admin_port}"

    async def metrics_text(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.admin + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        record_output("metrics", text)
        return text

    async def metric(self, name: str, **labels: str) -> float:
        return metric_value(await self.metrics_text(), name, labels)

    def log_lines(self) -> list[str]:
        return [line for line in self.log.getvalue().splitlines() if line]


@contextlib.asynccontextmanager
async def running_gateway(
    config: dict[str, Any], environ: Mapping[str, str] | None = None
) -> AsyncIterator[RunningGateway]:
    built = cfg.build(config, environ=dict(ENV if environ is None else environ))
    log = io.StringIO()
    service = Service(built, log_stream=log)
    await service.start()
    try:
        yield RunningGateway(service, log)
    finally:
        await service.stop()
        record_output("access log", log.getvalue())


async def post(
    url: str, body: bytes = b"{}", headers: Mapping[str, str] | list[tuple[str, str]] | None = None
) -> tuple[int, bytes, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.post(url, data=body, headers=headers or {}) as r,
    ):
        answer = await r.read()
    record_output("response headers", "\n".join(f"{k}: {v}" for k, v in r.headers.items()))
    if r.status >= 400:
        record_output("error body", answer)
    return r.status, answer, r.headers
