"""Real servers on loopback for tests: a recording upstream and an in-process gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway import config as cfg
from gateway.app import Service

TG_SECRET = "tg-secret_TOKEN-0123456789"
TG_SECRET_2 = "second-secret-token_abcdef"
HMAC_SECRET = "hmac secret: bytes and spaces!"
ENV = {"TG_SECRET": TG_SECRET, "TG_SECRET_2": TG_SECRET_2, "HMAC_SECRET": HMAC_SECRET}
TELEGRAM_IP = "149.154.167.220"


# ---------------------------------------------------------------- what came out of gateways
# Every log stream, error body, raw response and /metrics text the suite sees a gateway produce
# is kept here; tests/adversarial/test_zz_secret_leaks.py scans all of it at the end of the
# session for every secret in ENV and every signature noted below. Helpers that talk to a
# gateway record on their own; a test reading gateway output some other way calls
# `record_output` itself.
OUTPUTS: list[tuple[str, str]] = []
SIGNATURES: set[str] = set()


def record_output(kind: str, data: str | bytes) -> None:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    if text:
        OUTPUTS.append((kind, text))


def note_signature(value: str) -> str:
    """Remember a signature a test computed (it must never come back out); returns it."""
    if value:
        SIGNATURES.add(value)
    return value


def hmac_signature(
    secret: str | bytes,
    body: bytes,
    *,
    algorithm: str = "sha256",
    encoding: str = "hex",
    prefix: str = "",
) -> str:
    """A header value for the `hmac` scheme, noted for the leak scan."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, body, algorithm).digest()
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    note_signature(encoded)
    return prefix + encoded


def secret_leaks(outputs: list[tuple[str, str]] | None = None) -> list[str]:
    """Where a configured secret or a noted signature shows up, described without the value."""
    needles = {f"secret {name}": value for name, value in ENV.items()}
    for i, sig in enumerate(sorted(SIGNATURES)):
        needles[f"signature #{i} ({len(sig)} chars)"] = sig
    found = []
    for index, (kind, text) in enumerate(OUTPUTS if outputs is None else outputs):
        for label, needle in needles.items():
            if needle and needle in text:
                found.append(f"{label} in output #{index} ({kind})")
    return found


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
        self.received.append(Received(request.method, request.path_qs, raw, body))
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


def metric_value(text: str, name: str, labels: Mapping[str, str]) -> float:
    """Value of one sample, 0.0 when it is absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


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


async def raw_exchange(port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh socket, return everything read until close or timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(read_timeout):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        record_output("raw response", b"".join(chunks))
        return b"".join(chunks)
    finally:
        writer.close()
