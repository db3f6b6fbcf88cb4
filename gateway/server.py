"""The public listener: aiohttp's low-level server plus the deadlines aiohttp lacks.

aiohttp has no deadline for a client that connects and then sends its headers slowly (or
never): `DeadlineProtocol` closes such connections after `header_timeout`. It also answers
requests aiohttp cannot parse with a plain JSON 400: aiohttp's own answer, and the error line
it logs for each one, quote the raw request bytes (header values, a secret token among them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

# Set on a request whose request line named a version other than HTTP/1.0 or HTTP/1.1 (aiohttp
# parses `HTTP/2.0`, and its pure-Python parser `HTTP/1.2`, as if they were HTTP/1.1). The
# handler refuses it; the 400 goes out as HTTP/1.1, never as the version the client claimed.
UNSUPPORTED_VERSION = web.RequestKey("unsupported_version", bool)
_MALFORMED_BODY = b'{"error": "bad_request"}'

# How long an idle keep-alive connection may wait for its next request.
KEEPALIVE_TIMEOUT = 75.0


class DeadlineProtocol(RequestHandler):
    """A RequestHandler whose request headers must arrive within a deadline."""

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: Callable[[], float],
        on_malformed: Callable[[str | None, int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        self._on_malformed = on_malformed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # The first bytes of a new request start its clock; bytes of a body being read don't.
        if self._header_deadline is None and not self._request_in_progress:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.request_started()
        super().connection_lost(exc)

    def request_started(self) -> None:
        """Called by the handler: the headers are in, stop the clock."""
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _arm(self) -> None:
        self._header_deadline = self._loop.call_later(self._header_timeout(), self._expired)

    def _expired(self) -> None:
        self._header_deadline = None
        if not self._request_in_progress:
            self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # the handler itself failed: aiohttp logs it and answers a bare 500
            return super().handle_error(request, status, exc, message)
        # A request aiohttp could not parse. Its message quotes the raw bytes: never log or echo
        # it; count it, and answer the contract's 400 on a connection that then closes.
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        if self._on_malformed is not None:
            self._on_malformed(request.remote, status)
        resp = web.Response(status=status, body=_MALFORMED_BODY, content_type="application/json")
        resp.force_close()
        return resp


class GatewayServer(web.Server):
    def __init__(
        self,
        handler: Any,
        *,
        header_timeout: Callable[[], float],
        on_malformed: Callable[[str | None, int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout
        self._on_malformed = on_malformed

    def __call__(self) -> RequestHandler:
        return DeadlineProtocol(
            self,
            loop=self._loop,
            header_timeout=self._header_timeout,
            on_malformed=self._on_malformed,
            **self._kwargs,
        )

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        unsupported = message.version not in (HttpVersion10, HttpVersion11)
        if unsupported:
            message = message._replace(version=HttpVersion11, should_close=True)
        request = super()._make_request(message, payload, protocol, writer, task)
        if unsupported:
            request[UNSUPPORTED_VERSION] = True
        return request


def make_server(handler: Any, header_timeout: Callable[[], float]) -> GatewayServer:
    return GatewayServer(
        handler,
        header_timeout=header_timeout,
        on_malformed=getattr(handler, "malformed", None),
        auto_decompress=False,  # what was verified is what is forwarded
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        access_log=None,  # the gateway writes its own JSON lines
        max_line_size=8190,
        max_field_size=8190,
        max_headers=100,
        lingering_time=2.0,
        handler_cancellation=False,
    )
