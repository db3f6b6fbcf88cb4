"""The public listener: aiohttp's low-level server plus the deadlines aiohttp lacks.

aiohttp has no deadline for a client that connects and then sends its headers slowly (or
never): `DeadlineProtocol` closes such connections after `header_timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# How long an idle keep-alive connection may wait for its next request.
KEEPALIVE_TIMEOUT = 75.0


class DeadlineProtocol(RequestHandler):
    """A RequestHandler whose request headers must arrive within a deadline."""

    def __init__(self, manager: web.Server, *, header_timeout: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None

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


class GatewayServer(web.Server):
    def __init__(self, handler: Any, *, header_timeout: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return DeadlineProtocol(self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs)


def make_server(handler: Any, header_timeout: Callable[[], float]) -> GatewayServer:
    return GatewayServer(
        handler,
        header_timeout=header_timeout,
        auto_decompress=False,  # what was verified is what is forwarded
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        access_log=None,  # the gateway writes its own JSON lines
        max_line_size=8190,
        max_field_size=8190,
        max_headers=100,
        lingering_time=2.0,
        handler_cancellation=False,
    )
