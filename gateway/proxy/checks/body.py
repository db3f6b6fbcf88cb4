"""Body limits: refuse over-limit bodies from Content-Length before reading, and while reading
(the listener stops keeping a body once it passes the limit it was given)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.http.listener import BodyTooLarge
from gateway.proxy.checks import Failure

if TYPE_CHECKING:
    from gateway.http.listener import Request

__all__ = ["TOO_LARGE", "BodyTooLarge", "body_in_memory", "read_body"]

TOO_LARGE = Failure("body", "too_large")


def body_in_memory(request: Request, limit: int) -> bytes:
    """A body that has all arrived (`request.content.done`), at most `limit` bytes: taken in
    one call, with nothing to wait for."""
    data = request.content.take_all()
    if len(data) > limit:
        raise BodyTooLarge
    return data


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body bytes exactly as received (never decompressed), at most `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge
    data = await request.content.read()
    if len(data) > limit:
        raise BodyTooLarge  # the limit was lowered by a reload while it arrived
    return data
