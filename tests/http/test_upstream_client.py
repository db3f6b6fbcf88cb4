"""The pooled upstream client against real scripted servers on loopback.

Each server reads real requests off the socket and answers with exact bytes, so framing,
reuse, closes, resets and timeouts are the real thing, not a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from multidict import CIMultiDict

from gateway.config import parse_upstream
from gateway.http import client as upstream_client
from gateway.proxy.forward import Forwarder, UpstreamError

Answer = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Scripted:
    """Counts connections and requests; `answer(n, request, writer)` writes the n-th answer and
    returns whether to keep the connection open."""

    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(len(self.requests), request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: Answer, unix: Path | None = None) -> AsyncIterator[Scripted]:
    s = Scripted(answer)
    if unix is not None:
        server = await asyncio.start_unix_server(s.handle, str(unix))
    else:
        server = await asyncio.start_server(s.handle, "127.0.0.1", 0)
        s.port = server.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        server.close()
        await server.wait_closed()


def reset(w: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (linger 0), not a FIN."""
    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def send(fw: Forwarder, up: str, body: bytes = b"{}", headers: dict[str, str] | None = None):
    return await fw.send(parse_upstream(up), "", CIMultiDict(headers or {}), body, 5.0)


async def test_keep_alive_connection_is_reused() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"answer %d" % n))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        for i in range(1, 4):
            r = await send(fw, f"http://127.0.0.1:{s.port}/hook")
            assert (r.status, r.body) == (200, b"answer %d" % i)
        await fw.close()
    assert s.connections == 1
    assert len(s.requests) == 3


async def test_request_bytes_are_exact_and_headers_keep_their_bytes() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok())
        return True

    body = '{"text":"caf\u00e9 \\u00e9 \U0001f600"}'.encode() + bytes(range(256))
    async with scripted(answer) as s:
        fw = Forwarder()
        sent_value = b"\xc3\xa9t\xc3\xa9".decode("utf-8", "surrogateescape")
        raw_value = b"\xff\xfe".decode("utf-8", "surrogateescape")  # not UTF-8 at all
        await fw.send(
            parse_upstream(f"http://127.0.0.1:{s.port}/hook"),
            "a=1&b=%20",
            CIMultiDict([("X-Note", sent_value), ("X-Raw", raw_value)]),
            body,
            5.0,
        )
        await fw.close()
    head, _, got = s.requests[0].partition(b"\r\n\r\n")
    assert got == body
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?a=1&b=%20 HTTP/1.1"
    assert f"Host: 127.0.0.1:{s.port}".encode() in lines
    assert b"X-Note: \xc3\xa9t\xc3\xa9" in lines
    assert b"X-Raw: \xff\xfe" in lines
    assert b"Content-Length: %d" % len(body) in lines


async def test_chunked_answer_is_reassembled_and_status_reason_headers_kept() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(
            b"HTTP/1.1 202 Accepted Later\r\nTransfer-Encoding: chunked\r\nX-Bot: yes\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        await w.drain()
        await asyncio.sleep(0.01)  # the rest in another packet
        w.write(b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        r = await send(fw, f"http://127.0.0.1:{s.port}/")
        r2 = await send(fw, f"http://127.0.0.1:{s.port}/")  # and the connection is still usable
        await fw.close()
    assert (r.status, r.reason, r.body) == (202, "Accepted Later", b"hello, world")
    assert r.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    assert r.headers["X-Bot"] == "yes"
    assert "Transfer-Encoding" not in r.headers  # framing is the gateway's own toward the client
    assert r2.body == b"hello, world"
    assert s.connections == 1


async def test_body_until_close_and_connection_close_are_not_pooled() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        else:
            w.write(b"HTTP/1.0 200 OK\r\n\r\nno length, ends at close")
        return False

    async with scripted(answer) as s:
        fw = Forwarder()
        r1 = await send(fw, f"http://127.0.0.1:{s.port}/")
        r2 = await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert r1.body == b"ok"
    assert r2.body == b"no length, ends at close"
    assert s.connections == 2


async def test_interim_1xx_answers_are_skipped() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final"))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        r = await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert (r.status, r.body) == (200, b"final")
    assert "Link" not in r.headers


async def test_idle_connection_closed_by_upstream_is_dropped_before_sending() -> None:
    """The upstream closes its side after each answer (a keep-alive timeout): the pool must
    notice before writing, use a new connection, and send the request exactly once."""

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"%d" % n))
        return False  # answer with keep-alive, then close anyway

    async with scripted(answer) as s:
        fw = Forwarder()
        assert (await send(fw, f"http://127.0.0.1:{s.port}/")).body == b"1"
        await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        assert (await send(fw, f"http://127.0.0.1:{s.port}/")).body == b"2"
        await fw.close()
    assert s.connections == 2
    assert len(s.requests) == 2


async def test_idle_connections_older_than_the_idle_limit_are_not_reused(monkeypatch) -> None:
    monkeypatch.setattr(upstream_client, "IDLE_SECONDS", 0.0)

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok())
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        await send(fw, f"http://127.0.0.1:{s.port}/")
        await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert s.connections == 2


async def test_close_after_reading_the_request_is_a_502_and_never_resent() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        return False  # read it, answer nothing, close

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.timeout is False
    assert err.value.reason == "closed"
    assert len(s.requests) == 1  # the POST was not retried: the bot may have acted on it


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed", id="truncated-body"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "closed", id="truncated-chunk"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", "closed", id="truncated-head"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", "malformed", id="bad-status"),
        pytest.param(b"SMTP ready\r\n\r\n", "malformed", id="not-http"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            "malformed",
            id="two-lengths",
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "malformed", id="upgrade"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
            "head_too_large",
            id="head-too-large",
        ),
    ],
)
async def test_broken_answers_are_upstream_errors_with_their_reason(raw: bytes, reason: str) -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(raw)
        return False

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.timeout is False
    assert err.value.reason == reason


async def test_reset_mid_answer_is_an_upstream_error() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await w.drain()
        reset(w)
        return False

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.timeout is False
    assert err.value.reason == "reset"


async def test_refused_connection_is_an_upstream_error() -> None:
    async with scripted(lambda n, r, w: asyncio.sleep(0, False)) as s:
        port = s.port
    fw = Forwarder()
    with pytest.raises(UpstreamError) as err:
        await send(fw, f"http://127.0.0.1:{port}/")  # nothing listens there any more
    await fw.close()
    assert err.value.timeout is False
    assert err.value.reason == "refused"


async def test_timeout_is_a_timeout_and_the_late_connection_is_not_reused() -> None:
    release = asyncio.Event()

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            await release.wait()
        w.write(ok(b"%d" % n))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        up = parse_upstream(f"http://127.0.0.1:{s.port}/")
        with pytest.raises(UpstreamError) as err:
            await fw.send(up, "", CIMultiDict(), b"{}", 0.2)
        assert err.value.timeout is True
        assert err.value.reason == "timeout"
        release.set()  # the first answer arrives late, on a connection the pool has dropped
        r = await fw.send(up, "", CIMultiDict(), b"{}", 5.0)
        await fw.close()
    assert r.body in (b"1", b"2")  # a fresh connection: n counts requests across connections
    assert s.connections == 2


async def test_oversized_answer_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(upstream_client, "MAX_RESPONSE_BYTES", 1000)

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"x" * 5000))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.reason == "too_large"


async def test_unix_socket_upstream(tmp_path: Path) -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(req.split(b"\r\n")[0]))
        return True

    sock = tmp_path / "bot.sock"
    async with scripted(answer, unix=sock) as s:
        fw = Forwarder()
        r1 = await send(fw, f"unix:{sock}:/webhook")
        r2 = await send(fw, f"unix:{sock}:/webhook")
        await fw.close()
    assert r1.body == r2.body == b"POST /webhook HTTP/1.1"
    assert s.connections == 1
    assert b"Host: localhost\r\n" in s.requests[0]


async def test_concurrent_requests_use_separate_connections() -> None:
    gate = asyncio.Event()

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        await gate.wait()
        w.write(ok(req.partition(b"\r\n\r\n")[2]))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        tasks = [asyncio.create_task(send(fw, f"http://127.0.0.1:{s.port}/", b"%d" % i)) for i in range(5)]
        while len(s.requests) < 5:
            await asyncio.sleep(0.01)
        gate.set()
        bodies = [(await t).body for t in tasks]
        await fw.close()
    assert bodies == [b"%d" % i for i in range(5)]  # each answer goes to its own request
    assert s.connections == 5


# ---------------------------------------------------------------- big answers, on the wire

LIMIT = upstream_client.MAX_RESPONSE_HEAD_BYTES


def pattern(size: int) -> bytes:
    """A body whose every window is distinct enough that a lost or repeated piece shows."""
    return b"".join(b"%08d" % i for i in range(size // 8 + 1))[:size]


def chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return b"".join(parts) + b"0\r\n" + trailers + b"\r\n"


def big_answer(body: bytes, framing: str) -> bytes:
    if framing == "length":
        return ok(body)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 8000)


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("size", [70_000, 300_000, 1 << 20])
async def test_big_answers_pass_byte_exact_on_fresh_and_pooled_connections(size: int, framing: str) -> None:
    """Head and body in one write: the first read holds far more than the head limit."""
    body = pattern(size)

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(big_answer(body, framing))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        fresh = await send(fw, f"http://127.0.0.1:{s.port}/")
        pooled = await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert (fresh.status, fresh.body == body) == (200, True)
    assert (pooled.status, pooled.body == body) == (200, True)
    assert s.connections == 1  # the second answer came on the pooled connection


async def test_answer_split_across_reads_at_awkward_boundaries() -> None:
    """Writes cut at the end of the head, the head limit, and mid chunk-size line."""
    body = pattern(300_000)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 70_000)
    head_end = raw.index(b"\r\n\r\n") + 4
    cuts = sorted({head_end - 1, head_end, head_end + 1, head_end + 3, LIMIT - 1, LIMIT, LIMIT + 1, 200_001})

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        last = 0
        for cut in [*cuts, len(raw)]:
            w.write(raw[last:cut])
            await w.drain()
            await asyncio.sleep(0.005)  # separate reads, most of the time
            last = cut
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        first = await send(fw, f"http://127.0.0.1:{s.port}/")
        second = await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert first.body == body
    assert second.body == body
    assert s.connections == 1


# ---------------------------------------------------------------- out of step

POISON = b"HTTP/1.1 299 Poisoned\r\nContent-Length: 8\r\n\r\npoisoned"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(POISON, id="whole-answer"),
        pytest.param(POISON[:-8], id="answer-without-its-body"),
        pytest.param(b"HTTP/1.1 2", id="partial-status-line"),
        pytest.param(b"x", id="one-byte"),
    ],
)
async def test_bytes_after_an_answer_never_reach_the_next_request(tail: bytes) -> None:
    """The tail comes in the same write as the first answer; whatever is left of it is written
    before the next answer on that connection. The next request must get its own answer, on a
    new connection, sent exactly once."""
    first_writer: list[asyncio.StreamWriter] = []

    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if n == 1:
            first_writer.append(w)
            w.write(ok(b"first") + tail)
        elif w is first_writer[0]:
            w.write(POISON[len(tail) :] + ok(b"genuine %d" % n) if tail != b"x" else ok(b"genuine %d" % n))
        else:
            w.write(ok(b"genuine %d" % n))
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        r1 = await send(fw, f"http://127.0.0.1:{s.port}/", b"1")
        r2 = await send(fw, f"http://127.0.0.1:{s.port}/", b"2")
        await fw.close()
    assert (r1.status, r1.body) == (200, b"first")  # the answer already read is delivered
    assert (r2.status, r2.body) == (200, b"genuine 2")
    assert s.connections == 2
    assert [r.partition(b"\r\n\r\n")[2] for r in s.requests] == [b"1", b"2"]  # each sent once


async def test_bytes_arriving_later_on_an_idle_connection_close_it() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"%d" % n))
        if n == 1:
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(POISON)
        return True

    async with scripted(answer) as s:
        fw = Forwarder()
        up = f"http://127.0.0.1:{s.port}/"
        assert (await send(fw, up)).body == b"1"
        (pool,) = fw._pools.values()
        async with asyncio.timeout(10):
            while not all(c.closed for c in pool._idle):
                await asyncio.sleep(0.01)
        assert (await send(fw, up)).body == b"2"
        await fw.close()
    assert s.connections == 2


# ---------------------------------------------------------------- byte by byte, no sockets


class _Transport(asyncio.Transport):
    """What the connection writes, and whether it closed: enough to drive it by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def _connection() -> tuple[upstream_client._Connection, asyncio.Future[upstream_client.RawResponse]]:
    conn = upstream_client._Connection()
    transport = _Transport()
    conn.connection_made(transport)
    return conn, conn.send(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", asyncio.get_running_loop())


def _pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds) if b > a]


TRAILERS = b"Set-Cookie: a=1\r\nX-Trailer-Injected: yes\r\nContent-Type: text/evil\r\n"
ANSWERS = {
    "length": (ok(b"hello"), b"hello", [(b"Content-Length", b"5")]),
    "empty": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", [(b"Content-Length", b"0")]),
    "no-content": (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", b"", [(b"X-A", b"1")]),
    "chunked-trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        + chunked(b"hello world", 3, TRAILERS),
        b"hello world",
        [(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")],
    ),
    "one-byte-chunks": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abcdef", 1),
        b"abcdef",
        [(b"Transfer-Encoding", b"chunked")],
    ),
    "interim": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final"),
        b"final",
        [(b"Content-Length", b"5")],
    ),
}


@pytest.mark.parametrize("name", ANSWERS)
async def test_every_split_of_an_answer_gives_the_same_answer_and_a_reusable_connection(name: str) -> None:
    raw, body, headers = ANSWERS[name]
    splits = [[i] for i in range(1, len(raw))] + [list(range(1, len(raw)))]  # every cut; byte by byte
    for cuts in splits:
        conn, waiter = _connection()
        for piece in _pieces(raw, cuts):
            conn.data_received(piece)
        assert waiter.done(), cuts
        got = waiter.result()
        assert (got.body, got.headers) == (body, headers), cuts  # trailers never become headers
        assert conn.keep_alive and not conn.closed, cuts


@pytest.mark.parametrize("name", ANSWERS)
@pytest.mark.parametrize(
    "tail", [POISON, b"HTTP/1.1 2", b"x", b"\r\nx"], ids=["answer", "partial", "byte", "crlf-x"]
)
async def test_every_split_of_an_answer_with_a_tail_delivers_it_and_closes(name: str, tail: bytes) -> None:
    raw, body, headers = ANSWERS[name]
    for cut in range(1, len(raw) + len(tail)):
        conn, waiter = _connection()
        for piece in _pieces(raw + tail, [cut]):
            conn.data_received(piece)
        assert waiter.done(), cut
        got = waiter.result()
        status = 204 if name == "no-content" else 200
        assert (got.status, got.body, got.headers) == (status, body, headers), cut
        assert conn.closed and not conn.keep_alive, cut
        assert conn.transport is not None and conn.transport.is_closing(), cut


async def test_blank_lines_after_an_answer_leave_the_parser_in_step() -> None:
    """llhttp skips CR/LF before an answer, as RFC 9112 2.2 allows: nothing is pending."""
    conn, waiter = _connection()
    conn.data_received(ok(b"one") + b"\r\n\r\n")
    assert waiter.result().body == b"one"
    assert conn.keep_alive and not conn.closed
    second = conn.send(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", asyncio.get_running_loop())
    conn.data_received(ok(b"two"))
    assert second.result().body == b"two"


@pytest.mark.parametrize("head_size", [LIMIT - 1, LIMIT, LIMIT + 1])
@pytest.mark.parametrize("body_size", [0, 10, 300_000])
async def test_head_limit_counts_head_bytes_only(head_size: int, body_size: int) -> None:
    start = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pad: " % body_size
    head = start + b"p" * (head_size - len(start) - 4) + b"\r\n\r\n"
    assert len(head) == head_size
    body = pattern(body_size)
    for cuts in ([], [head_size - 1], [head_size], [head_size + 1], [LIMIT - 1], [LIMIT], [LIMIT + 1]):
        conn, waiter = _connection()
        for piece in _pieces(head + body, [c for c in cuts if c < len(head + body)]):
            conn.data_received(piece)
        assert waiter.done(), cuts
        if head_size <= LIMIT:
            assert waiter.result().body == body, cuts
        else:
            err = waiter.exception()
            assert isinstance(err, upstream_client.UpstreamProtocolError), cuts
            assert err.reason == "head_too_large"


async def test_interim_answers_share_the_head_limit() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: " + b"l" * (LIMIT // 2) + b"\r\n\r\n"
    conn, waiter = _connection()
    conn.data_received(interim + interim + ok(b"final"))
    err = waiter.exception()
    assert isinstance(err, upstream_client.UpstreamProtocolError)
    assert err.reason == "head_too_large"


async def test_a_chunked_body_is_one_buffer_not_an_object_per_chunk() -> None:
    """200,000 one-byte chunks: the answer costs about its size, not 40 bytes a chunk."""
    import tracemalloc

    size = 200_000
    body = pattern(size)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body, 1)
    reads = [raw[i : i + 65536] for i in range(0, len(raw), 65536)]
    conn, waiter = _connection()
    tracemalloc.start()
    try:
        for piece in reads:
            conn.data_received(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert waiter.result().body == body
    assert peak < 3 * size + 256 * 1024, peak  # the growing buffer and the answer's one copy


async def test_chunk_framing_counts_against_a_limit(monkeypatch) -> None:
    """A body within its limit, sent one byte a chunk, still stops at the framing limit."""
    monkeypatch.setattr(upstream_client, "MAX_RESPONSE_HEAD_BYTES", 1000)
    monkeypatch.setattr(upstream_client, "MAX_RESPONSE_BYTES", 1000)
    monkeypatch.setattr(upstream_client, "MAX_RESPONSE_FRAMING_BYTES", 1000)
    body = pattern(900)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn, waiter = _connection()
    conn.data_received(head + chunked(body, 900))
    assert waiter.result().body == body
    conn, waiter = _connection()
    for i in range(0, 900):  # one read a chunk
        conn.data_received((head if i == 0 else b"") + b"1\r\n" + body[i : i + 1] + b"\r\n")
        if waiter.done():
            break
    err = waiter.exception()
    assert isinstance(err, upstream_client.UpstreamProtocolError)
    assert err.reason == "too_large"
    assert conn.closed
