"""A recording upstream on loopback: in the test's loop, on a fixed port, or in its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class RecordingUpstream:
    """An upstream that records exactly what it got and answers what it is told."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "application/json")])
    delay: float = 0.0
    port: int = 0
    runner: web.ServerRunner | None = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.received.append(Received(request.method, request.raw_path, raw, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        resp = web.Response(status=self.status, body=self.body)
        for k, v in self.headers:
            resp.headers.add(k, v)
        return resp

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"


@contextlib.asynccontextmanager
async def recording_upstream(**kwargs: Any) -> AsyncIterator[RecordingUpstream]:
    up = RecordingUpstream(**kwargs)
    server = web.Server(up.handle, auto_decompress=False)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    up.runner = runner
    try:
        yield up
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def upstream_on(
    port: int, factory: type[RecordingUpstream] = RecordingUpstream, **kwargs: Any
) -> AsyncIterator[RecordingUpstream]:
    """A recording upstream on a fixed port, so it can be "down" first and come back later."""
    up = factory(port=port, **kwargs)
    runner = web.ServerRunner(web.Server(up.handle, auto_decompress=False))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    up.runner = runner
    try:
        yield up
    finally:
        await runner.cleanup()


class ThreadedUpstream:
    """`RecordingUpstream` on its own event loop in a daemon thread, for sync tests."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.up: RecordingUpstream | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recording upstream did not start")
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test thread by __enter__
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with recording_upstream(**self._kwargs) as up:
            self.up = up
            self._ready.set()
            await self._stop.wait()

    @property
    def port(self) -> int:
        assert self.up is not None
        return self.up.port

    @property
    def received(self) -> list[Any]:
        assert self.up is not None
        return self.up.received

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"
