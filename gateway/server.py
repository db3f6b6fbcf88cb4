"""The public listener: a small HTTP/1.1 server on llhttp (httptools), below aiohttp's web layer.

Why not aiohttp's server: per request it builds a URL object, a payload stream, a request with
a dozen lazily cached properties and a response pipeline with hooks; with the gateway's own
work being a header compare or one HMAC, that machinery was most of the time a request cost
(see "Performance" in README.md). This server does what a webhook listener needs and no more:

- one request at a time per connection, in order (pipelined requests queue behind it);
- deadlines aiohttp lacks: the request head must arrive within `header_timeout`; an idle
  keep-alive connection is closed after `KEEPALIVE_TIMEOUT` (the body deadline is the
  handler's, around its read);
- limits on the request line, each header, the number of headers and the whole head;
- anything llhttp refuses, and any HTTP version but 1.0 and 1.1, is a JSON 400 on a connection
  that then closes; nothing from the request is echoed or logged (a header may hold a secret);
- a body the handler did not read to the end ends the connection after the answer, so a
  half-read body is never parsed as the next request;
- `Expect: 100-continue` is answered only when the handler starts reading the body, so a
  request rejected on its headers never sends its body.

The handler receives a `Request` (the attributes of aiohttp's `BaseRequest` it uses, same
names) and returns a `Reply` (or anything with `status`, `reason`, `headers`, `body` and
`keep_alive`, such as an aiohttp `web.Response`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

import httptools
from aiohttp import HttpVersion
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from gateway.deadline import Deadline
from gateway.inline import drive

log = logging.getLogger("webhook_gateway")

KEEPALIVE_TIMEOUT = 75.0  # how long an idle keep-alive connection may wait for its next request
MAX_LINE = 8190  # request line (method, target, version)
MAX_FIELD = 8190  # one header name or value
MAX_HEADERS = 100
MAX_HEAD = 64 * 1024  # the whole request head
BODY_HIGH_WATER = 256 * 1024  # stop reading the socket while this much body waits unread

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_MALFORMED = b'{"error": "bad_request"}'
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_OWS = " \t\r\n\x0b\x0c"  # what bytes.strip() strips: str.strip() would take more
_H10 = HttpVersion(1, 0)
_H11 = HttpVersion(1, 1)
# Framing is the server's own: these never pass from a reply to the wire.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class Reply:
    """An answer to write: status, headers, body bytes. Cheaper than aiohttp's `web.Response`,
    with the same attribute names, so either can be returned by the handler."""

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
        # A CIMultiDict is taken as it is (the upstream's answer: no copy), others are copied.
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
    """The request body as it arrives: `readexactly`, `readany` and `read`, like aiohttp's
    payload stream, over the chunks llhttp hands over (de-chunked, never decompressed)."""

    __slots__ = ("_conn", "_continue", "_error", "_parts", "_size", "_waiter", "done", "malformed")

    def __init__(self, conn: HttpProtocol, expect_continue: bool) -> None:
        self._conn = conn
        self._parts: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._continue = expect_continue
        self.done = False
        self.malformed = False  # the body's framing broke (bad chunk): the server answers 400

    # fed by the protocol

    def feed(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size > BODY_HIGH_WATER:
            self._conn.pause()
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # read by the handler

    async def _wait(self) -> None:
        if self._continue:
            self._continue = False
            self._conn.write_raw(_CONTINUE)
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self) -> bytes:
        data = self._parts.popleft()
        self._size -= len(data)
        if self._size <= BODY_HIGH_WATER // 4:
            self._conn.resume()
        return data

    async def readany(self) -> bytes:
        while not self._parts:
            if self.done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        return self._take()

    async def readexactly(self, n: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        while got < n:
            if not self._parts:
                if self.done or self._error is not None:
                    raise asyncio.IncompleteReadError(b"".join(chunks), n)
                await self._wait()
                continue
            data = self._take()
            if got + len(data) > n:  # never happens with Content-Length framing; kept exact
                keep = n - got
                self._parts.appendleft(data[keep:])
                self._size += len(data) - keep
                data = data[:keep]
            chunks.append(data)
            got += len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def take_all(self) -> bytes:
        """Once `done`: the whole body at once, with no coroutine to step."""
        assert self.done
        parts = self._parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        chunks = []
        while True:
            data = await self.readany()
            if not data:
                return b"".join(chunks)
            chunks.append(data)


class Request:
    """One parsed request. Attribute names follow aiohttp's `BaseRequest` where they overlap."""

    __slots__ = (
        "_state",
        "content",
        "headers",
        "keep_alive",
        "method",
        "protocol",
        "raw_headers",
        "raw_path",
        "remote",
        "secure",
        "transport",
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
    ) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.remote = protocol.remote
        self.secure = protocol.secure
        self.method = method
        self.version = version
        self.raw_path = raw_path
        self.raw_headers = raw_headers
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.keep_alive = keep_alive
        self.content = Body(protocol, expect_continue)
        self._state: dict[Any, Any] | None = None

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]

    @property
    def query_string(self) -> str:
        return self.raw_path.partition("?")[2]

    @property
    def query(self) -> MultiDictProxy[str]:
        from urllib.parse import parse_qsl

        return MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None  # llhttp accepted it: digits only

    async def read(self) -> bytes:
        return await self.content.read()

    # A little per-request state, like aiohttp's request mapping.
    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default) if self._state else default

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._state is None:
            self._state = {}
        self._state[key] = value


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
        on_malformed: Callable[[str | None, int], None] | None = None,
    ) -> None:
        self.handler = handler
        self.header_timeout = header_timeout
        self.on_malformed = on_malformed
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self.dates = _Dates()
        self._idle = asyncio.Event()
        self._unflushed: list[HttpProtocol] = []  # connections with answers not yet written

    def defer_write(self, conn: HttpProtocol) -> None:
        """`conn` has an answer to send: written once this pass of the event loop has parsed
        every connection that was readable. Answers go out back to back, so the client side is
        woken once per burst instead of once per answer: on a VM each wake-up of a sleeping
        peer is an interprocessor interrupt, which cost more than the request itself."""
        if not self._unflushed:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unflushed.append(conn)

    def _flush(self) -> None:
        conns, self._unflushed = self._unflushed, []
        for conn in conns:
            conn.flush()

    def __call__(self) -> HttpProtocol:
        return HttpProtocol(self)

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
        self._serving = False  # inside _next: answers written meanwhile do not re-enter it
        self._out: list[bytes] = []  # written by flush, once per loop pass
        self._closed = False
        self._paused = False
        self._stop_parsing = False
        # head being parsed
        self._in_head = False
        self._head_armed = False  # the head deadline runs (see data_received)
        self._head_size = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        # one timer, re-armed lazily: the head deadline while a head arrives, else keep-alive idle
        self._deadline = Deadline(self.loop, self._deadline_passed)

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) and peer else None
        self.secure = transport.get_extra_info("sslcontext") is not None
        self.server.connections.add(self)
        self._set_deadline(self.server.header_timeout())

    def data_received(self, data: bytes) -> None:
        if self._closed or self._stop_parsing:
            return
        if not self._in_head and self._current is None:
            self._in_head = True  # the first bytes of a new request
            self._head_size = 0
            self._head_armed = False
        if self._in_head:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade/CONNECT request: it is answered (or refused) like any other, then
            # the connection ends; bytes after it belong to a protocol we do not speak.
            self._stop_parsing = True
        except httptools.HttpParserError as exc:
            # A limit of ours raised inside a callback arrives as the error's context.
            cause = exc.__context__
            self._refuse(cause.status if isinstance(cause, _Refuse) else 400)
        else:
            if self._in_head:
                if self._head_size > MAX_HEAD:
                    self._refuse(431)
                elif not self._head_armed:
                    # A head still incomplete after the read that began it: its clock starts
                    # (a head that arrives whole, the usual case, never needs one).
                    self._head_armed = True
                    self._set_deadline(self.server.header_timeout())
        if self._queue and not self.busy:
            self._next()

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
        # break those cycles so a closed connection is freed now, by reference counting, not
        # at the collector's next full pass (10,000 closed sockets were 26 MB until then).
        self._parser = None  # type: ignore[assignment]  # data_received stops at _closed
        self._queue.clear()
        self._current = None
        if self.busy:
            return  # the handler finishes on its own; its answer goes nowhere
        self.server.busy_changed()

    # ------------------------------------------------------------ llhttp callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LINE:
            raise _Refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
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
        expect = version == "1.1" and headers.get("Expect", "").strip(_OWS).lower() == "100-continue"
        request = Request(
            self,
            p.get_method().decode("ascii"),
            _H11 if version == "1.1" else _H10,
            self._url.decode("utf-8", "surrogateescape"),
            raw,
            headers,
            p.should_keep_alive() and not self.server.closing,
            expect,
        )
        self._current = request
        self._set_deadline(0.0)  # the head is in: no deadline until the answer is written
        self._queue.append(request)  # served once this read is parsed: its body may be in it

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current.content.feed(body)

    def on_message_complete(self) -> None:
        if self._current is not None:
            self._current.content.finish()
            self._current = None

    # ------------------------------------------------------------ serving

    def _next(self) -> None:
        """Serve what is queued, in order, one request at a time. A handler that finishes
        without waiting (a rejection, mostly) is answered within this call."""
        if self._serving:
            return  # called back from an answer written inside the loop below
        self._serving = True
        try:
            while self._queue and not self.busy and not self._closed:
                item = self._queue.popleft()
                if isinstance(item, int):
                    self._write_refusal(item)
                    return
                self.busy = True
                drive(self._handle(item), functools.partial(self._answered, item), self.loop)
        finally:
            self._serving = False
        if not self.busy and not self._closed:
            if self._stop_parsing:
                self.close()
            elif not self._in_head and self._current is None:
                self._set_deadline(KEEPALIVE_TIMEOUT)

    def _answered(self, request: Request, reply: Answer | None, error: BaseException | None) -> None:
        keep = False
        try:
            if error is not None or reply is None:
                # Not even a 500 could be made (the handler was cancelled): end the connection.
                log.error("handler ended without an answer: %s", type(error).__name__)
            elif request.content.malformed:
                # Its body broke llhttp's framing: the answer is the plain 400 (queued next),
                # whatever the handler made of a body it could not finish.
                keep = True
            else:
                keep = self._write_reply(request, reply)
        finally:
            self.busy = False
            self.server.busy_changed()
        if not keep:
            self.close()
            return
        self._next()

    async def _handle(self, request: Request) -> Answer:
        try:
            return await self.server.handler(request)
        except Exception:
            log.exception("handler failed")
            reply = Reply(500, b'{"error": "internal"}', content_type="application/json")
            reply.force_close()
            return reply

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
        self.write_raw(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nDate: %s\r\n\r\n%s"
            % (status, reason, len(_MALFORMED), self.server.dates.now(), _MALFORMED)
        )
        self.close()

    # ------------------------------------------------------------ transport helpers

    def write_raw(self, data: bytes) -> None:
        """Queue `data` for the socket; `flush` (soon, or `close`) writes it."""
        if self.transport is not None and not self._closed:
            if not self._out:
                self.server.defer_write(self)
            self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            if self.transport is not None and not self._closed:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()
        # Closed from here on, before connection_lost: a request pipelined behind the answer
        # that closed the connection is neither served nor forwarded.
        self._closed = True

    force_close = close  # the name aiohttp's RequestHandler uses

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self._closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self._closed:
            self._paused = False
            self.transport.resume_reading()

    def _set_deadline(self, seconds: float) -> None:
        """Close the connection `seconds` from now unless re-armed (0: no deadline)."""
        self._deadline.set_in(seconds)

    def _deadline_passed(self) -> None:
        if not self._closed and not self.busy:
            self.close()


class _Refuse(Exception):
    """Raised inside an llhttp callback: surfaces as HttpParserCallbackError, answered 4xx."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
