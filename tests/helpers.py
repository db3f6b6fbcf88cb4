"""Real servers on loopback for tests: a recording upstream and an in-process gateway."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway import config as cfg
from gateway.serve.service import Service

ROOT_DIR = Path(__file__).resolve().parent.parent
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
    needles: dict[str, str] = {}
    for name, value in ENV.items():
        raw = value.encode()
        needles[f"secret {name}"] = value
        needles[f"secret {name} (JSON-escaped)"] = json.dumps(value)[1:-1]
        needles[f"secret {name} (URL-encoded)"] = urllib.parse.quote(value, safe="")
        needles[f"secret {name} (hex)"] = raw.hex()
        needles[f"secret {name} (base64)"] = base64.b64encode(raw).decode().rstrip("=")
        needles[f"secret {name} (bytes repr)"] = repr(raw)[2:-1]
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


def raw_request(
    path: str,
    body: bytes = b"{}",
    headers: list[tuple[str, str | bytes]] | None = None,
    method: str = "POST",
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes, headers sent exactly as given (even non-ASCII or repeated)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: gateway.test"]
    for name, value in headers or []:
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    lines.append(f"Content-Length: {len(body)}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    """Status code of the first response in raw bytes (0 when the server just closed)."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m gateway run` as a real child process on free loopback ports."""

    def __init__(
        self, config_path: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.config_path = config_path
        self.args = list(args)  # after `run --config PATH`, e.g. ["--listen", "127.0.0.1:8081"]
        self.env = {**ENV, "PATH": "/usr/bin:/bin", **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        # A file, not a pipe: a child blocked on a full pipe would look like a hang.
        self.stderr_path = config_path.with_suffix(".stderr")
        self._stderr_file = open(self.stderr_path, "wb")  # noqa: SIM115

    async def start(self, port: int, admin_port: int) -> None:
        import sys

        self.port, self.admin_port = port, admin_port
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config_path),
            *self.args,
            cwd=ROOT_DIR,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._stderr_file,
        )
        async with asyncio.timeout(30):
            while True:
                try:
                    async with aiohttp.ClientSession() as s, s.get(f"{self.admin}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    raise RuntimeError(self.stderr)
                await asyncio.sleep(0.05)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    async def metric(self, name: str, **labels: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(self.admin + "/metrics") as r:
            return metric_value(await r.text(), name, labels)

    async def stop(self, sig: int | None = 15) -> int:
        """Send `sig` (None: it was already signalled) and wait for the exit code."""
        assert self.proc is not None
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), 60)
        finally:
            self._stderr_file.close()

    @property
    def stderr(self) -> str:
        if not self._stderr_file.closed:
            self._stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        self._stderr_file.close()
