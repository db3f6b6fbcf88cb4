"""The pooled upstream client against real scripted servers on loopback.

Each server reads real requests off the socket and answers with exact bytes, so framing,
reuse, closes, resets and timeouts are the real thing, not a mock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from multidict import CIMultiDict

from gateway import upstream_client
from gateway.config import parse_upstream
from gateway.forward import Forwarder, UpstreamError

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
    assert len(s.requests) == 1  # the POST was not retried: the bot may have acted on it


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", id="truncated-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", id="truncated-chunk"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Le", id="truncated-head"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", id="bad-status"),
        pytest.param(b"SMTP ready\r\n\r\n", id="not-http"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", id="two-lengths"
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", id="upgrade"),
    ],
)
async def test_broken_answers_are_upstream_errors(raw: bytes) -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(raw)
        return False

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.timeout is False


async def test_reset_mid_answer_is_an_upstream_error() -> None:
    async def answer(n: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await w.drain()
        w.transport.abort()  # RST
        return False

    async with scripted(answer) as s:
        fw = Forwarder()
        with pytest.raises(UpstreamError) as err:
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()
    assert err.value.timeout is False


async def test_refused_connection_is_an_upstream_error() -> None:
    async with scripted(lambda n, r, w: asyncio.sleep(0, False)) as s:
        port = s.port
    fw = Forwarder()
    with pytest.raises(UpstreamError) as err:
        await send(fw, f"http://127.0.0.1:{port}/")  # nothing listens there any more
    await fw.close()
    assert err.value.timeout is False


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
        with pytest.raises(UpstreamError):
            await send(fw, f"http://127.0.0.1:{s.port}/")
        await fw.close()


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
