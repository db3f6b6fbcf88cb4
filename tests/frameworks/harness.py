"""What the framework tests share: realistic Telegram updates, the bots with their Bot API pointed
at a loopback stand-in that records every call, a wire tap that keeps the exact responses a
framework wrote, and a real gateway process in front of it all."""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import httptools
import yaml
from aiohttp import web

from tests.frameworks import aiogram_bot, ptb_bot
from tests.support.botapi import BOT_TOKEN, FakeBotApi, fake_bot_api
from tests.support.env import TELEGRAM_IP, TG_SECRET
from tests.support.leaks import record_output
from tests.support.process import GatewayProcess, free_port

FORGED = "forged-token_0123456789"

# Non-ASCII on purpose: a name with diacritics and an emoji outside the BMP, and right-to-left text.
FIRST_NAME = "Zoë Łukasiewicz 🚀"
RTL_TEXT = "مرحبا بالعالم — שלום עולם"


def message_update(update_id: int, text: str, *, command: bool = False) -> dict[str, Any]:
    """A private-chat message update as Telegram sends it (entity offsets count UTF-16 units)."""
    user = {"id": 5551234, "is_bot": False, "first_name": FIRST_NAME, "language_code": "pl"}
    message: dict[str, Any] = {
        "message_id": 100 + update_id % 1000,
        "from": user,
        "chat": {"id": 5551234, "first_name": FIRST_NAME, "type": "private"},
        "date": 1_767_225_600,
        "text": text,
    }
    if command:
        length = len(text.split(" ", 1)[0].encode("utf-16-le")) // 2
        message["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
    return {"update_id": update_id, "message": message}


def wire(update: dict[str, Any]) -> bytes:
    """The bytes Telegram puts on the wire: compact JSON, non-ASCII as UTF-8."""
    return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()


def telegram_headers(token: str | None = TG_SECRET) -> dict[str, str]:
    """Headers of a delivery that came through a trusted proxy from Telegram's network."""
    headers = {"Content-Type": "application/json", "X-Forwarded-For": f"203.0.113.50, {TELEGRAM_IP}"}
    if token is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = token
    return headers


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name (raw bytes of each part)."""
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert isinstance(parsed, Message) and parsed.is_multipart(), content_type
    fields: dict[str, bytes] = {}
    for part in parsed.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload if isinstance(payload, bytes) else b""
    return fields


# ---------------------------------------------------------------- what the framework saw and wrote
@dataclass
class SeenRequest:
    """A request as it reached the framework's web server (recorded before the framework ran)."""

    path: str
    headers: dict[str, str]
    body: bytes


@web.middleware
async def _record(request: web.Request, handler: Any) -> web.StreamResponse:
    body = await request.read()
    request.app[SEEN].append(SeenRequest(request.path, dict(request.headers), body))
    return await handler(request)  # type: ignore[no-any-return]


SEEN: web.AppKey[list[SeenRequest]] = web.AppKey("seen_requests", list)


def recorded(app: web.Application) -> web.Application:
    """`app` with a first middleware that records what arrived; read it with `app[SEEN]`."""
    app[SEEN] = []
    app.middlewares.insert(0, _record)
    return app


@dataclass
class WireResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class WireTap:
    """A TCP relay in front of an upstream that parses every response it relays, so a test can
    compare what the client got with the exact bytes the framework wrote (framing aside)."""

    target_port: int
    responses: list[WireResponse] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        collector = _ResponseCollector(self.responses)
        parser = collector.parser = httptools.HttpResponseParser(collector)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, parse: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await r.read(65536):
                    if parse:
                        parser.feed_data(chunk)
                    w.write(chunk)
                    await w.drain()
            with contextlib.suppress(OSError):
                w.close()

        await asyncio.gather(pipe(client_r, up_w, False), pipe(up_r, client_w, True))


class _ResponseCollector:
    """httptools callbacks: one WireResponse per complete response (chunked framing removed)."""

    def __init__(self, into: list[WireResponse]) -> None:
        self.into = into
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_begin(self) -> None:
        self.headers, self.body = {}, bytearray()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code() if self.parser is not None else 0
        self.into.append(WireResponse(status, self.headers, bytes(self.body)))


# ---------------------------------------------------------------- the gateway in front
@dataclass
class Client:
    """What a test talks to: the gateway, and the tap between the gateway and the framework."""

    gateway: GatewayProcess
    tap: WireTap

    def url(self, route: str) -> str:
        return f"{self.gateway.base}/tg/{route}/k7Qx2vR9"

    async def deliver(self, route: str, body: bytes, token: str | None = TG_SECRET) -> tuple[int, bytes, str]:
        """POST an update like Telegram (through a trusted proxy): status, body, Content-Type."""
        async with (
            aiohttp.ClientSession(auto_decompress=False) as s,
            s.post(self.url(route), data=body, headers=telegram_headers(token)) as r,
        ):
            answer = await r.read()
        if r.status >= 400:
            record_output("error body", answer)
        return r.status, answer, r.headers.get("Content-Type", "")


def gateway_config(upstream_port: int, framework: str) -> dict[str, Any]:
    """Two routes to the same bot, one enforcing and one in report-only, both with the framework's
    secret and Telegram's source networks (the test client stands behind a trusted proxy)."""
    routes = [
        {
            "name": f"{framework}-{mode}",
            "path": f"/tg/{framework}-{mode}/k7Qx2vR9",
            "upstream": f"http://127.0.0.1:{upstream_port}/webhook",
            "mode": mode,
            "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
            "allow_sources": ["telegram"],
        }
        for mode in ("enforce", "report-only")
    ]
    return {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "trusted_proxies": ["127.0.0.1/32"],
        "routes": routes,
    }


@contextlib.asynccontextmanager
async def gateway_in_front(app: web.Application, framework: str, tmp: Path) -> AsyncIterator[Client]:
    """Serve `app` on loopback, a wire tap in front of it, and a gateway process in front of that."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tap = WireTap(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    await tap.start()
    config = gateway_config(tap.port, framework)
    port, admin = free_port(), free_port()
    config["listen"], config["admin_listen"] = f"127.0.0.1:{port}", f"127.0.0.1:{admin}"
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    gateway = GatewayProcess(path)
    try:
        await gateway.start(port, admin)
        yield Client(gateway, tap)
    finally:
        if gateway.proc is not None:
            await gateway.stop()
        record_output("gateway stderr", gateway.stderr)
        await tap.close()
        await runner.cleanup()


# ---------------------------------------------------------------- one bot per framework
@dataclass(frozen=True)
class Framework:
    name: str
    build: Callable[[list[Any], str], web.Application]  # (seen, Bot API base URL) -> the bot's app
    refusal: tuple[int, bytes]  # how the bot's own secret check answers a forged update
    api_calls: list[str]  # what the bot may ask the Bot API (nothing a reply needs)


FRAMEWORKS = {
    "aiogram": Framework(
        "aiogram",
        lambda seen, api: aiogram_bot.build_app(BOT_TOKEN, TG_SECRET, seen, api_base=api),
        (401, b"Unauthorized"),
        [],
    ),
    "ptb": Framework(
        "ptb",
        lambda seen, api: ptb_bot.build_app(BOT_TOKEN, TG_SECRET, seen, base_url=f"{api}/bot"),
        (403, b"Request had the wrong secret token"),
        ["getMe"],  # Application.initialize() asks who the bot is
    ),
}


@dataclass
class Bot:
    framework: Framework
    client: Client
    api: FakeBotApi  # the Bot API stand-in: the only server the bot's token is ever sent to
    seen: list[Any]  # what the handlers got
    arrived: list[SeenRequest]  # what reached the bot's web server

    @property
    def enforce(self) -> str:
        return f"{self.framework.name}-enforce"

    @property
    def report_only(self) -> str:
        return f"{self.framework.name}-report-only"


@contextlib.asynccontextmanager
async def bot_behind_gateway(framework: Framework, tmp: Path) -> AsyncIterator[Bot]:
    """The framework's bot, its Bot API pointed at the recording stand-in, behind a gateway."""
    seen: list[Any] = []
    async with fake_bot_api() as api:
        app = recorded(framework.build(seen, api.base))
        async with gateway_in_front(app, framework.name, tmp) as client:
            yield Bot(framework, client, api, seen, app[SEEN])
        assert api.methods() == framework.api_calls
