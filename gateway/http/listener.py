"""The public listener: a small HTTP/1.1 server on llhttp (httptools). Why our own and not
aiohttp's: docs/decisions/0001-own-listener.md.

What a client can cost, and how it is bounded (docs/limits.md, "Limits and flow control"):

- one request is served at a time per connection, in order. While one is being served and the
  next head is complete, reading stops (uvicorn's flow control), and bytes already read wait
  unparsed: one read is parsed `SLICE` bytes at a time, so at most one slice of pipelined
  requests is ever turned into objects;
- the next request is not started while the answers already written wait in the transport
  above its high-water mark (`pause_writing`): a client that never reads costs one buffer;
- a body is one growing buffer, refused past `max_body_bytes`, and its bytes on the wire
  (chunk framing, trailers) past that plus `FRAMING_ALLOWANCE`; trailers are dropped;
- a deadline is armed whenever the connection waits on the client: the head must arrive within
  `header_timeout` (also behind a request in progress: the connection then closes after that
  request's answer), an idle keep-alive connection or one whose client does not read its
  answers closes after `KEEPALIVE_TIMEOUT`. The body deadline is the handler's;
- anything llhttp refuses, any version but 1.0 and 1.1, an Upgrade or CONNECT, and the limits
  of the request line, header fields and head are a JSON 4xx on a connection that then closes;
  nothing from the request is echoed or logged (a header may hold a secret);
- an error of ours inside the protocol closes that connection and is counted, never leaks it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

import httptools
from aiohttp import HttpVersion
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.http.deadline import Deadline

log = logging.getLogger("webhook_gateway")

KEEPALIVE_TIMEOUT = 75.0  # idle keep-alive, or a client that does not read its answers
MAX_LINE = 8190  # request target
MAX_FIELD = 8190  # one header name or value
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024  # the whole request head; also the trailers, which are dropped
SLICE = 8 * 1024  # one read is parsed this much at a time (see the module docstring)
FRAMING_ALLOWANCE = 64 * 1024  # chunk framing and trailers a body may add on the wire
WRITE_HIGH_WATER = 64 * 1024  # answers made in one loop pass before the next request waits
# (the transport's own high-water mark, 64 KiB by default in asyncio and uvloop, pauses us too)

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_OWS = " \t\r\n\x0b\x0c"  # what bytes.strip() strips: str.strip() would take more
_H10 = HttpVersion(1, 0)
_H11 = HttpVersion(1, 1)
# Framing is the server's own: these never pass from a reply to the wire.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
# What the server itself refuses, with the error code of its JSON body.
_REFUSALS = {
    400: "bad_request",
    413: "body_too_large",
    414: "uri_too_long",
    431: "header_fields_too_large",
}


class BodyTooLarge(Exception):
    """The body, or its bytes on the wire, went over the limit."""


class Reply:
    """An answer to write: status, headers, body bytes. Attribute names follow aiohttp's
    `web.Response`, so either can be returned by the handler."""

    __slots__ = ("body", "headers", "keep_alive", "raw_head", "reason", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        reason: str | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        # A CIMultiDict is taken as it is (no copy), others are copied.
        h = headers if isinstance(headers, CIMultiDict) else CIMultiDict(headers or ())
        if content_type is not None:
            h["Content-Type"] = content_type
        self.headers = h
        self.keep_alive: bool | None = None
        # Header lines passed through as they came (an upstream's answer), written after
        # `headers`; and whether they hold a Date. Never framing: the server frames the answer.
        self.raw_head: tuple[bytes, bool] | None = None

    def force_close(self) -> None:
        self.keep_alive = False


class Body:
    """The request body as it arrives (de-chunked, never decompressed): one buffer, complete
    when llhttp says so. The handler awaits `read()` for all of it."""

    __slots__ = (
        "_buf",
        "_conn",
        "_continue",
        "_first",
        "_limit",
        "_waiter",
        "done",
        "error",
        "malformed",
        "size",
        "wire",
    )

    def __init__(self, conn: HttpProtocol, expect_continue: bool, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        self._first = b""  # the body while it is one piece (the usual case: never copied)
        self._buf: bytearray | None = None  # from the second piece on
        self._waiter: asyncio.Future[None] | None = None
        self._continue = expect_continue
        self.size = 0  # body bytes
        self.wire = 0  # bytes read while this body was arriving: framing and trailers too
        self.done = False
        self.error: BaseException | None = None
        self.malformed = False  # the framing broke (bad chunk): the server answers 400

    # fed by the protocol

    def feed(self, data: bytes) -> None:
        if self.error is not None:
            return  # refused already: nothing more is kept
        self.size += len(data)
        if self.size > self._limit:
            self.fail(BodyTooLarge())
        elif self._buf is not None:
            self._buf += data
        elif not self._first:
            self._first = data
        else:
            self._buf = bytearray(self._first)
            self._buf += data
            self._first = b""

    def count_wire(self, n: int) -> None:
        self.wire += n
        if self.wire > self._limit + FRAMING_ALLOWANCE and not self.done:
            self.fail(BodyTooLarge())

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.done and self.error is None:
            self.error = exc
            self._first = b""
            self._buf = None
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # read by the handler

    async def read(self) -> bytes:
        """The whole body, once it is all in. Raises what failed it: `BodyTooLarge`, or a
        `ConnectionError` when the client left or broke the framing."""
        while self.error is None and not self.done:
            if self._continue:
                self._continue = False
                self._conn.write_raw(_CONTINUE)
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take_all()

    def take_all(self) -> bytes:
        """Once `done`: the whole body at once, with nothing to wait for."""
        if self.error is not None:
            raise self.error
        assert self.done
        data = self._first if self._buf is None else bytes(self._buf)
        self._first = b""
        self._buf = None
        return data


class Request:
    """One parsed request. Attribute names follow aiohttp's `BaseRequest` where they overlap."""

    __slots__ = (
        "content",
        "headers",
        "keep_alive",
        "method",
        "raw_headers",
        "raw_path",
        "remote",
        "secure",
        "version",
    )

    def __init__(
        self,
        protocol: HttpProtocol,
        method: str,
        version: HttpVersion,
        raw_path: str,
        raw_headers: list[tuple[bytes, bytes]],
        headers: CIMultiDict[str],
        keep_alive: bool,
        expect_continue: bool,
        body_limit: int,
    ) -> None:
        self.remote = protocol.remote
        self.secure = protocol.secure
        self.method = method
        self.version = version
        self.raw_path = raw_path
        self.raw_headers = raw_headers
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.keep_alive = keep_alive
        self.content = Body(protocol, expect_continue, body_limit)

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None  # llhttp accepted it: digits only


class Answer(Protocol):
    status: int
    reason: str | None
    headers: Any
    body: Any
    keep_alive: bool | None


Handler = Callable[[Request], Awaitable[Answer]]


class _Dates:
    """The Date header, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._value = formatdate(t, usegmt=True).encode("ascii")
        return self._value


class HttpServer:
    """Shared by every connection of one listener: the handler, limits, and the drain."""

    def __init__(
        self,
        handler: Handler,
        header_timeout: Callable[[], float],
        max_body_bytes: Callable[[], int],
        on_malformed: Callable[[str | None, int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.header_timeout = header_timeout
        self.max_body_bytes = max_body_bytes
        self.on_malformed = on_malformed
        self.on_error = on_error  # an error of ours closed a connection (counted by the caller)
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self.dates = _Dates()
        # False from a connection that could not be set up until one that could: /readyz.
        self.healthy = True
        self._idle = asyncio.Event()
        self._unflushed: list[HttpProtocol] = []  # connections with answers not yet written

    def defer_write(self, conn: HttpProtocol) -> None:
        """`conn` has an answer to send: written once this pass of the event loop is over, with
        every other answer made in it (why: docs/decisions/0002-write-batching.md)."""
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed.append(conn)

    def _flush(self) -> None:
        conns, self._unflushed = self._unflushed, []
        for conn in conns:
            conn.flush()
            conn.flushed()

    def __call__(self) -> HttpProtocol:
        return HttpProtocol(self)

    def failed(self, where: str, conn: HttpProtocol) -> None:
        """An exception of ours inside `conn`: logged and counted, the connection aborted."""
        log.exception("listener error in %s", where)
        if self.on_error is not None:
            try:
                self.on_error(where)
            except Exception:
                log.exception("on_error failed")
        conn.abort()

    def busy_changed(self) -> None:
        if self.closing and not any(c.busy for c in self.connections):
            self._idle.set()

    async def shutdown(self, timeout: float) -> None:
        """Answer what is in flight (each answer then closes its connection), close the rest."""
        self.closing = True
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        if any(c.busy for c in self.connections):
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("shutdown timeout: closing connections with requests in flight")
        for conn in list(self.connections):
            conn.close()


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.secure = False
        self.busy = False  # a request is being handled
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[Request | int] = collections.deque()  # int: refuse status
        self._current: Request | None = None  # the request whose body is arriving
        self._unparsed: collections.deque[bytes] = collections.deque()  # read, waiting to be parsed
        self._out: list[bytes] = []  # written by flush, once per loop pass
        self._out_size = 0
        self._closed = False
        self._read_paused = False
        self._write_paused = False
        self._stop_parsing = False  # nothing more is parsed: refused, or a head timed out
        # head being parsed
        self._in_head = False
        self._head_size = 0  # bytes read since the head began (over-counts by one slice at most)
        self._head_started = 0.0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._trailer_size = 0
        # One timer, re-armed lazily: what the connection waits for decides which deadline.
        self._deadline = Deadline(self.loop, self._deadline_passed)
        self._idle_since = 0.0
        self._idle_timeout = 0.0  # header_timeout until a first answer, then KEEPALIVE_TIMEOUT
        self._write_paused_since = 0.0

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        try:
            peer = transport.get_extra_info("peername")
            self.remote = peer[0] if isinstance(peer, tuple) and peer else None
            self.secure = transport.get_extra_info("sslcontext") is not None
            self.server.connections.add(self)
            self._idle_since = self.loop.time()
            self._idle_timeout = self.server.header_timeout()
            self._rearm()
        except Exception:
            self.server.healthy = False
            self.server.failed("connection_made", self)
        else:
            self.server.healthy = True

    def data_received(self, data: bytes) -> None:
        if self._closed or self._stop_parsing:
            return
        try:
            if self._unparsed or self._read_paused:
                self._unparsed.append(data)  # arrived before pause_reading took effect
            else:
                self._parse(data)
            if self._queue and not self.busy:
                self._next()  # a refusal queued by this read
            self._rearm()
        except Exception:
            self.server.failed("data_received", self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._deadline.cancel()
        lost = ConnectionResetError("client closed the connection")
        if self._current is not None:
            self._current.content.fail(lost)
        for item in self._queue:
            if isinstance(item, Request):
                item.content.fail(lost)
        # The parser holds this protocol for its callbacks, and queued requests hold it too:
        # break those cycles so a closed connection is freed now by reference counting.
        self._parser = None  # type: ignore[assignment]  # data_received stops at _closed
        self._queue.clear()
        self._unparsed.clear()
        self._current = None
        if self.busy:
            return  # the handler finishes on its own; its answer goes nowhere
        self.server.busy_changed()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_paused_since = self.loop.time()
        self._rearm()

    def resume_writing(self) -> None:
        self._write_paused = False
        try:
            self._next()
            self._resume_parsing()
            self._rearm()
        except Exception:
            self.server.failed("resume_writing", self)

    # ------------------------------------------------------------ parsing

    def _parse(self, data: bytes) -> None:
        """Feed `data` to llhttp a slice at a time; stop, keeping the rest, once the request
        stream must wait (see `_must_wait`)."""
        view = memoryview(data) if len(data) > SLICE else None
        start = 0
        while start < len(data):
            if self._must_wait():
                rest = data[start:]
                self._unparsed.append(rest)
                self._pause_reading()
                return
            piece = data if view is None else view[start : start + SLICE]
            start += SLICE
            self._feed(piece)
            if self._closed or self._stop_parsing:
                return

    def _feed(self, piece: bytes | memoryview) -> None:
        body = self._current  # a body in progress owns the bytes of this piece (and framing)
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: no protocol but HTTP/1.1 is spoken here, and the body of
            # such a request is not framed for llhttp. Refused, never forwarded without it.
            self._refuse(400)
            return
        except httptools.HttpParserError as exc:
            # A limit of ours raised inside a callback arrives as the error's context.
            cause = exc.__context__
            self._refuse(cause.status if isinstance(cause, _Refuse) else 400)
            return
        if body is not None:
            body.content.count_wire(len(piece))
        if self._in_head:
            self._head_size += len(piece)
            if self._head_size > MAX_HEAD + SLICE:
                self._refuse(431)

    def _must_wait(self) -> bool:
        """Parse no further for now: a request is served and the next one is already queued,
        the answers already written wait for the client to read them, or the server closes."""
        return (self.busy and bool(self._queue)) or self._write_paused or self._out_size > WRITE_HIGH_WATER

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self._closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_parsing(self) -> None:
        """The request stream may go on: parse what waits, then read again."""
        while self._unparsed and not self._must_wait() and not self._closed and not self._stop_parsing:
            self._parse(self._unparsed.popleft())
        if self._unparsed or self._must_wait() or self._closed or self._stop_parsing:
            return
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_size = 0
        self._head_started = self.loop.time()
        self._url = b""
        self._headers = []
        self._trailer_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LINE:
            raise _Refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # A trailer field (after a chunked body): read and dropped, never a header.
            self._trailer_size += len(name) + len(value)
            if self._trailer_size > MAX_HEAD:
                raise _Refuse(431)
            return
        if len(name) > MAX_FIELD or len(value) > MAX_FIELD:
            raise _Refuse(431)
        if len(self._headers) >= MAX_HEADERS:
            raise _Refuse(431)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._parser
        version = p.get_http_version()
        if version not in ("1.1", "1.0"):
            # llhttp reads `HTTP/2.0` on an HTTP/1 request line: refuse it, in HTTP/1.1.
            raise _Refuse(400)
        if p.should_upgrade():
            raise _Refuse(400)  # Upgrade with `Connection: upgrade`, or CONNECT: see _feed
        raw = self._headers
        headers = CIMultiDict(
            [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw]
        )
        hosts = len(headers.getall("Host", ()))
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise _Refuse(400)  # RFC 9112 section 3.2: exactly one Host in HTTP/1.1
        codings = headers.getall("Transfer-Encoding", None)
        if codings is not None and (len(codings) > 1 or codings[0].strip(_OWS).lower() != "chunked"):
            # One unambiguous framing: `chunked` alone. llhttp takes `gzip, chunked`, whose
            # decoded body the upstream would get with nothing saying it is compressed.
            raise _Refuse(400)
        length = headers.get("Content-Length")
        limit = self.server.max_body_bytes()
        expect = version == "1.1" and headers.get("Expect", "").strip(_OWS).lower() == "100-continue"
        request = Request(
            self,
            p.get_method().decode("ascii"),
            _H11 if version == "1.1" else _H10,
            self._url.decode("utf-8", "surrogateescape"),
            raw,
            headers,
            p.should_keep_alive() and not self.server.closing,
            # Over the limit by its Content-Length: refused on its head, never sent a 100.
            expect and (length is None or int(length) <= limit),
            limit,
        )
        self._current = request
        self._queue.append(request)
        if not self.busy:
            self._next()  # its task runs once this read is parsed: a body in it is then in

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current.content.feed(body)

    def on_message_complete(self) -> None:
        if self._current is not None:
            self._current.content.finish()
            self._current = None

    # ------------------------------------------------------------ serving

    def _next(self) -> None:
        """Start the next queued request (one at a time, in order), unless the answers already
        written wait for the client to read them."""
        if self.busy or self._closed or not self._queue or self._write_paused:
            return
        item = self._queue.popleft()
        if isinstance(item, int):
            self._write_refusal(item)
            return
        self.busy = True
        self.loop.create_task(self._serve(item))

    async def _serve(self, request: Request) -> None:
        reply: Answer | None = None
        try:
            reply = await self.server.handler(request)
        except asyncio.CancelledError:
            log.error("handler ended without an answer: cancelled")
            raise
        except Exception:
            log.exception("handler failed")
            reply = Reply(500, b'{"error": "internal"}', content_type="application/json")
            reply.force_close()
        finally:
            self._answered(request, reply)

    def _answered(self, request: Request, reply: Answer | None) -> None:
        keep = False
        try:
            if reply is None:
                pass  # cancelled: the connection ends
            elif request.content.malformed:
                # Its body broke llhttp's framing: the answer is the plain 400 (queued next),
                # whatever the handler made of a body it could not finish.
                keep = True
            else:
                keep = self._write_reply(request, reply)
        except Exception:
            log.exception("writing the answer failed")
        finally:
            self.busy = False
            self.server.busy_changed()
        if self._closed:
            return
        if not keep:
            self.close()
            return
        try:
            self._idle_since = self.loop.time()
            self._idle_timeout = KEEPALIVE_TIMEOUT
            self._next()
            self._resume_parsing()
            self._rearm()
        except Exception:
            self.server.failed("serving", self)

    def _write_reply(self, request: Request, reply: Answer) -> bool:
        """Write the answer; -> whether the connection stays open for another request."""
        keep = (
            request.keep_alive
            and reply.keep_alive is not False
            and request.content.done
            and not self.server.closing
            and not self._stop_parsing
        )
        status = reply.status
        reason = reply.reason or _REASONS.get(status, "")
        body = reply.body
        if body is None:
            body = b""
        elif not isinstance(body, bytes | bytearray):
            raise TypeError(f"reply body must be bytes, not {type(body).__name__}")
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1"))]
        date = True
        for name, value in reply.headers.items():
            low = name.lower()
            if low in _FRAMING:
                continue
            if low == "date":
                date = False
            parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("utf-8", "surrogateescape")))
        raw = getattr(reply, "raw_head", None)
        if raw is not None:
            parts.append(raw[0])
            date = date and not raw[1]
        if date:
            parts.append(b"Date: " + self.server.dates.now() + b"\r\n")
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif request.version == _H10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        if request.method != "HEAD":
            parts.append(bytes(body))
        self.write_raw(b"".join(parts))
        return keep

    def _refuse(self, status: int) -> None:
        """The request stream cannot be parsed: answer `status` after what is queued, close."""
        self._stop_parsing = True
        self._in_head = False
        self._unparsed.clear()
        if self._current is not None:
            self._current.content.malformed = True
            self._current.content.fail(ConnectionResetError("malformed request"))
            self._current = None
        self._queue.append(status)

    def _write_refusal(self, status: int) -> None:
        if self.server.on_malformed is not None:
            try:
                self.server.on_malformed(self.remote, status)
            except Exception:
                log.exception("on_malformed failed")
        reason = _REASONS.get(status, "Bad Request").encode("ascii")
        body = b'{"error": "%s"}' % _REFUSALS.get(status, "bad_request").encode("ascii")
        date = self.server.dates.now()
        self.write_raw(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nDate: %s\r\n\r\n%s" % (status, reason, len(body), date, body)
        )
        self.close()

    # ------------------------------------------------------------ deadlines

    def _rearm(self) -> None:
        """Arm the deadline for what the connection now waits on (the client, or nobody)."""
        if self._closed:
            return
        if self._write_paused:
            # The client does not read what it was sent.
            self._deadline.set_at(self._write_paused_since + KEEPALIVE_TIMEOUT)
        elif self._in_head:
            # A head has begun and is not complete: the clock runs whatever else is going on.
            self._deadline.set_at(self._head_started + self.server.header_timeout())
        elif self.busy or self._queue or self._current is not None:
            # The handler waits (on the body under its own deadline, or on the upstream).
            self._deadline.clear()
        else:
            self._deadline.set_at(self._idle_since + self._idle_timeout)

    def _deadline_passed(self) -> None:
        if self._closed:
            return
        if self.busy:
            # A head that began behind the request in progress never finished: that request
            # is answered, and the connection then closes (its answer says so).
            self._stop_parsing = True
            self._in_head = False
            self._unparsed.clear()
            self._pause_reading()
            return
        self.close()

    # ------------------------------------------------------------ transport helpers

    def write_raw(self, data: bytes) -> None:
        """Queue `data` for the socket; `flush` (soon, or `close`) writes it."""
        if self.transport is not None and not self._closed:
            if not self._out:
                self.server.defer_write(self)
            self._out.append(data)
            self._out_size += len(data)

    def flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._out_size = 0
            if self.transport is not None and not self._closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def flushed(self) -> None:
        """After the loop's flush: parsing that waited for these answers to go out goes on."""
        if self._closed or self.busy or self._write_paused or not (self._queue or self._unparsed):
            return
        try:
            self._next()
            self._resume_parsing()
            self._rearm()
        except Exception:
            self.server.failed("flush", self)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()
        # Closed from here on, before connection_lost: a request pipelined behind the answer
        # that closed the connection is neither served nor forwarded.
        self._closed = True
        self._deadline.cancel()

    def abort(self) -> None:
        self._closed = True
        self._deadline.cancel()
        self.server.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()


class _Refuse(Exception):
    """Raised inside an llhttp callback: surfaces as HttpParserCallbackError, answered 4xx."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
