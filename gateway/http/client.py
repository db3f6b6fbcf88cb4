"""The upstream side of forwarding: pooled keep-alive HTTP/1.1 connections, nothing more.

aiohttp's ClientSession was most of the cost of a forwarded request (URL objects, tracing
hooks, cookie and redirect machinery, a task per connection). A webhook upstream needs none of
it: one POST (or the Meta GET handshake), a body already in memory, one answer. This client
writes the request in one `write`, parses the answer with llhttp (httptools) and hands back
status, reason, headers and the body bytes, never decompressed.

Correctness over speed where they meet:
- an answer it cannot parse, an upstream that closes or resets mid-answer, an answer over a
  limit: `UpstreamClosed` / `UpstreamProtocolError` (the gateway's 502), never a partial or
  guessed answer; the connection is closed, never reused; `reason` says which, in one word;
- the head limit counts head bytes only; the body, chunk framing and trailers have limits of
  their own; trailers are read and dropped, never merged into the headers (RFC 9110 6.5);
- bytes after a complete answer (in the same read, or later on an idle connection) put the
  connection out of step: it is closed, never reused; the answer already read is delivered;
- the deadline covers connecting, writing and the whole answer (`UpstreamTimeout`, the 504);
- a request is never sent twice: an idle connection the upstream has already closed is
  dropped when it is taken from the pool, *before* a byte is written; once bytes are written,
  a failure is the caller's 502 (a POST is not idempotent: the bot may have acted on it);
- idle connections are kept only `IDLE_SECONDS`, below the 5 s keep-alive timeout of Node.js
  servers, so the pool does not race an upstream that is about to close an idle connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from dataclasses import dataclass
from typing import Literal

import httptools

from gateway.http.deadline import Deadline

IDLE_SECONDS = 4.0
MAX_IDLE_PER_POOL = 256
MAX_RESPONSE_HEAD_BYTES = 64 * 1024  # status line and headers, interim 1xx answers included
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # the body, as delivered
# Chunk-size lines, chunk extensions and trailers on top of the body: a body sent in tiny
# chunks costs parsing, never memory, and this bounds the parsing.
MAX_RESPONSE_FRAMING_BYTES = 16 * 1024 * 1024

# Why an exchange failed, for the access log: a fixed vocabulary, never bytes from the upstream.
Reason = Literal["refused", "reset", "closed", "timeout", "head_too_large", "too_large", "malformed"]


class UpstreamFailure(Exception):
    """Base: nothing usable came back."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


class UpstreamTimeout(UpstreamFailure):
    def __init__(self) -> None:
        super().__init__("timeout")


class UpstreamClosed(UpstreamFailure):
    """Refused, reset, or closed before a complete answer."""


class UpstreamProtocolError(UpstreamFailure):
    """An answer that is not well-formed HTTP/1.x, or too large."""


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp mid-buffer; the callback settled the answer."""


@dataclass(slots=True)
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]  # as received, in order
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Where one upstream lives, parsed once."""

    host: str  # for TCP; for a unix socket, the Host header's value
    port: int
    unix_socket: str | None
    tls: bool
    host_header: bytes


class _Connection(asyncio.Protocol):
    """One upstream connection; answers one request at a time."""

    __slots__ = (
        "_answered",
        "_body",
        "_eof_body",
        "_head_size",
        "_header_done",
        "_headers",
        "_parser",
        "_reason",
        "_waiter",
        "_wire",
        "closed",
        "deadline",
        "idle_since",
        "keep_alive",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = False
        self._waiter: asyncio.Future[RawResponse] | None = None
        # The answer in flight must be in by then; made with the transport (it needs the loop).
        self.deadline: Deadline | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answered = False  # the answer to the request in flight is complete
        self._reset()

    def _reset(self) -> None:
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        # The first piece as it came (the usual answer is one piece); more: one growing buffer.
        self._body: bytes | bytearray = b""
        self._head_size = 0  # bytes read while no final head was complete
        self._wire = 0  # every byte read for this answer: head, body, framing, trailers
        self._header_done = False
        self._eof_body = False  # no Content-Length, not chunked: the body ends at close

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.deadline = Deadline(asyncio.get_running_loop(), self.expire)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._waiter is None:
            # Bytes nobody asked for (an idle connection): the stream is out of step.
            self.close()
            return
        self._wire += len(data)
        rest: bytes | memoryview = data
        if not self._header_done:
            budget = MAX_RESPONSE_HEAD_BYTES - self._head_size
            if len(data) > budget:
                # Only head bytes count against the head limit: feed what fits, and the rest
                # only if the head ended within it.
                view = memoryview(data)
                if not self._feed(view[:budget]):
                    return
                if self._waiter is not None and not self._header_done:
                    self._fail(UpstreamProtocolError("head_too_large"))
                    return
                rest = view[budget:]
            else:
                self._head_size += len(data)
        if not self._feed(rest):
            return
        if self._waiter is not None and self._wire > (
            MAX_RESPONSE_HEAD_BYTES + MAX_RESPONSE_BYTES + MAX_RESPONSE_FRAMING_BYTES
        ):
            self._fail(UpstreamProtocolError("too_large"))

    def _feed(self, data: bytes | memoryview) -> bool:
        """Parse `data`; whether to go on (the connection still usable)."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("malformed"))
            return False
        except httptools.HttpParserError:
            # After a complete answer (a callback raised _Stop, or bytes after `Connection:
            # close`) the answer stands and this only closes the connection.
            self._fail(UpstreamProtocolError("malformed"))
            return False
        return not self.closed

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost finishes the story

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.keep_alive = False
        self._stop_timer()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._eof_body and self._header_done and exc is None:
                self._complete(keep_alive=False)  # the close is the body's end
            else:
                self._waiter = None
                waiter.set_exception(UpstreamClosed("closed" if exc is None else "reset"))
        # The parser holds this connection for its callbacks: break the cycle so a closed
        # connection is freed by reference counting, not at the collector's next full pass.
        self._parser = None  # type: ignore[assignment]

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._header_done:
            return  # a trailer: dropped (its bytes count against the framing limit)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue / 103 Early Hints: interim, the real answer follows (its head
            # shares the head limit with them).
            self._reason = b""
            self._headers = []
            return
        self._header_done = True
        framed = False
        for name, value in self._headers:
            low = name.lower()
            if low == b"content-length" or (low == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
        self._eof_body = not framed and status not in (204, 304)

    def on_body(self, data: bytes) -> None:
        body = self._body
        if len(body) + len(data) > MAX_RESPONSE_BYTES:
            self._fail(UpstreamProtocolError("too_large"))
            raise _Stop
        if isinstance(body, bytearray):
            body += data
        elif body:
            self._body = bytearray(body) + data
        else:
            self._body = data

    def on_message_begin(self) -> None:
        if self._answered:
            # A byte after the answer starts another one nobody asked for: the answer stands,
            # the connection is out of step. (llhttp skips bare CR/LF between answers: those
            # leave it in step.)
            self.close()
            raise _Stop

    def on_message_complete(self) -> None:
        if not self._header_done:
            return  # the end of an interim 1xx answer
        self._answered = True
        self._complete(keep_alive=self._parser.should_keep_alive())

    # the request

    def _complete(self, keep_alive: bool) -> None:
        waiter = self._waiter
        self._waiter = None
        self.keep_alive = keep_alive and not self.closed
        body = self._body
        response = RawResponse(
            self._parser.get_status_code(),
            self._reason.decode("latin-1"),
            self._headers,
            body if isinstance(body, bytes) else bytes(body),
        )
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: UpstreamFailure) -> None:
        waiter = self._waiter
        self._waiter = None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[RawResponse]:
        assert self.transport is not None and self._waiter is None
        self._waiter = waiter = loop.create_future()
        self.keep_alive = False
        self._answered = False
        # Written at the end of this pass of the event loop, with the other requests parsed
        # in it: the upstream is woken once per burst (see HttpServer.defer_write).
        loop.call_soon(self._write, data)
        return waiter

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def expire(self) -> None:
        """The deadline passed: fail the request in flight (an answer may still come: abort)."""
        self._fail(UpstreamTimeout())

    def close(self) -> None:
        self.closed = True
        self.keep_alive = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.keep_alive = False
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _stop_timer(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()


class Pool:
    """Keep-alive connections to one target, reused last-in first-out (the warmest first)."""

    def __init__(self, target: Target, ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = target
        self._ssl = ssl_context
        self._idle: collections.deque[_Connection] = collections.deque()
        self._open: set[_Connection] = set()
        self.connects = 0  # new connections made (tests and stats read it)

    def _take_idle(self) -> _Connection | None:
        deadline = time.monotonic() - IDLE_SECONDS
        while self._idle:
            conn = self._idle.pop()
            transport = conn.transport
            if conn.closed or transport is None or transport.is_closing() or conn.idle_since < deadline:
                # Found dead (or too old to trust) before a byte was written: drop it and
                # take another; the request itself is untouched.
                conn.close()
                self._open.discard(conn)
                continue
            return conn
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        t = self.target
        conn = _Connection()
        try:
            if t.unix_socket is not None:
                await loop.create_unix_connection(lambda: conn, t.unix_socket)
            elif t.tls:
                ctx = self._ssl or ssl.create_default_context()
                await loop.create_connection(lambda: conn, t.host, t.port, ssl=ctx, server_hostname=t.host)
            else:
                await loop.create_connection(lambda: conn, t.host, t.port)
        except OSError:
            raise UpstreamClosed("refused") from None
        self.connects += 1
        self._open.add(conn)
        return conn

    async def request(self, data: bytes, timeout: float) -> RawResponse:
        """Send one serialised request; the whole exchange within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = self._take_idle()
        if conn is None:
            try:
                async with asyncio.timeout(timeout):
                    conn = await self._connect(loop)
            except TimeoutError:
                raise UpstreamTimeout() from None
        waiter = conn.send(data, loop)
        assert conn.deadline is not None  # connected
        conn.deadline.set_at(deadline)
        try:
            response = await waiter
        except BaseException:
            # Timed out, failed, or cancelled mid-exchange: the connection is out of step.
            conn.abort()
            self._open.discard(conn)
            raise
        finally:
            conn.deadline.clear()
        if conn.keep_alive and len(self._idle) < MAX_IDLE_PER_POOL:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
            self._open.discard(conn)
        return response

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
