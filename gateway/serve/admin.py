"""The admin listener's app, the same for one process and for the supervisor of several:
`/metrics`, `/healthz`, `/readyz`. Never served on the public listener."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

# -> (ready, the JSON body to answer with)
Readiness = Callable[[], tuple[bool, dict[str, object]]]


def admin_app(
    metrics: Callable[[], bytes], readiness: Readiness, health: Callable[[], dict[str, object]] | None = None
) -> web.Application:
    async def metrics_(_: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **(health() if health is not None else {})})

    async def readyz(_: web.Request) -> web.Response:
        ready, body = readiness()
        return web.json_response(body, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
