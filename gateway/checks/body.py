"""Body limits: refuse over-limit bodies from Content-Length before reading, and while reading."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.checks import Failure

if TYPE_CHECKING:
    from gateway.server import Request

TOO_LARGE = Failure("body", "too_large")


class BodyTooLarge(Exception):
    pass


def body_in_memory(request: Request, limit: int) -> bytes:
    """A body that has all arrived (`request.content.done`), at most `limit` bytes: taken in
    one call, with nothing to wait for."""
    data = request.content.take_all()
    if len(data) > limit:
        raise BodyTooLarge
    return data


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The raw body bytes exactly as received (never decompressed), at most `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge
    if length is not None:
        data = await request.content.readexactly(length) if length else b""
        return data
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        parts.append(chunk)
    return b"".join(parts)
