"""The public listener's protocol (gateway/http/listener.py) on its own, with a transport double that
records what was written and behaves like a socket whose peer reads nothing: past its
high-water mark it calls `pause_writing`, as asyncio's and uvloop's transports do.

Each test states a bound (bytes buffered, requests served, reads paused, connections closed)
that a client must not be able to break, whatever it sends.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.http import listener as server_module
from gateway.http.listener import HttpProtocol, HttpServer, Reply, Request

HIGH_WATER = 64 * 1024


class Peer(asyncio.Transport):
    """A client socket seen from the server: it records what was written; with `reads=False`
    it reads nothing, so the buffer only grows and the protocol is told to stop writing."""

    def __init__(self, reads: bool = True) -> None:
        super().__init__()
        self.reads = reads
        self.protocol: HttpProtocol | None = None
        self.written = bytearray()
        self.buffered = 0
        self.closed = False
        self.aborted = False
        self.reading = True
        self.write_paused = False

    def write(self, data: Any) -> None:
        self.written += data
        if self.reads:
            return
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.write_paused:
            self.write_paused = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def read_everything(self) -> None:
        """The client catches up: the buffer empties and writing may go on."""
        self.buffered = 0
        if self.write_paused:
            self.write_paused = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def answer_404(_: Request) -> Reply:
    return Reply(404, b'{"error": "not_found"}', content_type="application/json")


def listener(
    handler: Callable[[Request], Awaitable[Reply]] = answer_404,
    header_timeout: float = 10.0,
    max_body_bytes: int = 1024 * 1024,
    **kw: Any,
) -> HttpServer:
    return HttpServer(handler, lambda: header_timeout, lambda: max_body_bytes, **kw)


def open_connection(server: HttpServer, peer: Peer) -> HttpProtocol:
    conn = server()
    peer.protocol = conn
    conn.connection_made(peer)
    return conn


async def settle(passes: int = 50) -> None:
    for _ in range(passes):
        await asyncio.sleep(0)


def feed(conn: HttpProtocol, peer: Peer, data: bytes, read_size: int = 65536) -> int:
    """Deliver `data` as a socket would, one read at a time, while the protocol reads.
    -> how many bytes it accepted before it paused reading."""
    sent = 0
    while sent < len(data) and peer.reading and not peer.closed:
        conn.data_received(data[sent : sent + read_size])
        sent += read_size
    return min(sent, len(data))


def unknown(n: int) -> bytes:
    return b"POST /unknown HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}" * n


def requests_answered(peer: Peer) -> int:
    return bytes(peer.written).count(b"HTTP/1.1 ")


# ---------------------------------------------------------------- flow control


async def test_a_client_that_never_reads_its_answers_stops_being_read() -> None:
    """40 MB of requests from a client that reads nothing: the gateway writes about one
    high-water mark of answers, then stops serving and reading; it never buffers the rest."""
    server = listener()
    peer = Peer(reads=False)
    conn = open_connection(server, peer)
    flood = unknown(40 * 1024 * 1024 // 60)
    accepted = 0
    for _ in range(200):
        accepted += feed(conn, peer, flood[accepted:])
        await settle(5)
        if not peer.reading or accepted >= len(flood):
            break
    assert not peer.reading, "reading never paused"
    await settle()
    assert accepted < 2 * 1024 * 1024, accepted
    assert peer.buffered <= HIGH_WATER + 4096
    served = requests_answered(peer)
    # Unparsed bytes wait as bytes; parsed but unserved requests are at most one slice's worth.
    assert sum(len(b) for b in conn._unparsed) <= 65536
    assert len(conn._queue) <= server_module.SLICE // 20
    # The client reads: serving goes on where it stopped, in order, nothing lost or doubled.
    peer.reads = True
    peer.read_everything()
    await settle(200)
    assert requests_answered(peer) > served


async def test_pipelined_requests_behind_a_slow_one_pause_reading() -> None:
    """While a request waits on its handler, the next complete request stops reading: the
    7 MB pipelined behind it stay in the socket, not in the gateway."""
    release = asyncio.Event()
    served: list[str] = []

    async def slow_first(request: Request) -> Reply:
        served.append(request.raw_path)
        if len(served) == 1:
            await release.wait()
        return Reply(200, b"ok")

    server = listener(slow_first)
    peer = Peer()
    conn = open_connection(server, peer)
    first = b"POST /slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
    flood = first + unknown(7 * 1024 * 1024 // 60)
    accepted = feed(conn, peer, flood)
    await settle()
    assert not peer.reading
    assert accepted <= 65536
    assert served == ["/slow"]
    assert len(conn._queue) <= server_module.SLICE // 20
    release.set()
    await settle(200)
    assert peer.reading or len(served) > 1
    assert served[1] == "/unknown"


# ---------------------------------------------------------------- deadlines


async def test_a_head_begun_behind_a_busy_request_still_has_its_deadline() -> None:
    """A request waits on a slow bot; one byte of the next head follows, then silence. The
    head deadline still runs: the first answer is written (saying Connection: close), then
    the connection closes."""
    release = asyncio.Event()

    async def slow(_: Request) -> Reply:
        await release.wait()
        return Reply(200, b"ok")

    server = listener(slow, header_timeout=0.2)
    peer = Peer()
    conn = open_connection(server, peer)
    conn.data_received(b"POST /slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}P")
    await asyncio.sleep(0.5)  # past the head deadline while the request is still in progress
    assert not peer.closed  # its answer is still owed
    release.set()
    await settle()
    assert bytes(peer.written).startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in peer.written
    assert peer.closed


async def test_a_client_that_does_not_read_its_answer_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "KEEPALIVE_TIMEOUT", 0.2)
    server = listener()
    peer = Peer(reads=False)
    conn = open_connection(server, peer)
    feed(conn, peer, unknown(3000))
    for _ in range(5000):
        await asyncio.sleep(0)
        if peer.write_paused:
            break
    assert peer.write_paused
    await asyncio.sleep(0.5)
    assert peer.closed


async def test_a_connection_that_sends_nothing_is_closed_after_header_timeout() -> None:
    server = listener(header_timeout=0.1)
    peer = Peer()
    open_connection(server, peer)
    await asyncio.sleep(0.4)
    assert peer.closed


async def test_an_idle_keep_alive_connection_gets_the_keep_alive_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "KEEPALIVE_TIMEOUT", 0.6)
    server = listener(header_timeout=0.1)
    peer = Peer()
    conn = open_connection(server, peer)
    conn.data_received(unknown(1))
    await asyncio.sleep(0.3)  # past header_timeout: after an answer, the keep-alive one holds
    assert requests_answered(peer) == 1
    assert not peer.closed
    await asyncio.sleep(0.6)
    assert peer.closed


# ---------------------------------------------------------------- heads and bodies


async def test_a_read_over_64k_that_ends_mid_head_is_not_431() -> None:
    """A 70 KB body and the first half of the next head in one read: only head bytes count."""
    bodies: list[bytes] = []

    async def read_it(request: Request) -> Reply:
        bodies.append(await request.content.read())
        return Reply(200, b"ok")

    server = listener(read_it)
    peer = Peer()
    conn = open_connection(server, peer)
    big = b"x" * 70_000
    second = b"POST /b HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
    conn.data_received(b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 70000\r\n\r\n" + big + second[:20])
    await settle()
    conn.data_received(second[20:])
    await settle()
    assert bytes(peer.written).count(b"HTTP/1.1 200 OK") == 2, bytes(peer.written)[:300]
    assert bodies == [big, b"{}"]


def chunked(chunks: list[bytes], trailers: bytes = b"") -> bytes:
    out = [b"POST /c HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"]
    out += [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks]
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


async def test_trailers_never_become_headers() -> None:
    seen: list[Request] = []

    async def record(request: Request) -> Reply:
        await request.content.read()
        seen.append(request)
        return Reply(200, b"ok")

    server = listener(record)
    peer = Peer()
    conn = open_connection(server, peer)
    conn.data_received(
        chunked([b'{"update_id":1}'], b"X-Trailer-Injected: yes\r\nContent-Type: text/evil\r\n")
    )
    await settle()
    assert bytes(peer.written).startswith(b"HTTP/1.1 200 OK")
    (request,) = seen
    names = [n.lower() for n, _ in request.raw_headers]
    assert b"x-trailer-injected" not in names
    assert b"content-type" not in names
    assert "X-Trailer-Injected" not in request.headers


async def test_a_chunked_body_costs_memory_in_proportion_to_its_bytes() -> None:
    """100,000 chunks of 2 bytes: kept in one buffer, refused once its framing passes the
    allowance; never a hundred thousand objects."""
    results: list[BaseException | bytes] = []

    async def read_it(request: Request) -> Reply:
        try:
            results.append(await request.content.read())
        except Exception as exc:
            results.append(exc)
            return Reply(413, b"too large")
        return Reply(200, b"ok")

    limit = 256 * 1024  # 100,000 chunks: 200 KB of body, 700 KB on the wire
    server = listener(read_it, max_body_bytes=limit)
    peer = Peer()
    conn = open_connection(server, peer)
    data = chunked([b"ab"] * 100_000)
    tracemalloc.start()
    try:
        feed(conn, peer, data)
        await settle()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(results) == 1 and isinstance(results[0], server_module.BodyTooLarge), results
    assert bytes(peer.written).startswith(b"HTTP/1.1 413")
    # One read of wire bytes, the body buffer (at most the limit) and bookkeeping.
    assert peak < limit + 1024 * 1024, peak


async def test_a_chunked_body_in_small_chunks_within_the_allowance_arrives_whole() -> None:
    bodies: list[bytes] = []

    async def read_it(request: Request) -> Reply:
        bodies.append(await request.content.read())
        return Reply(200, b"ok")

    server = listener(read_it)
    peer = Peer()
    conn = open_connection(server, peer)
    parts = [bytes([65 + i % 26]) * 100 for i in range(300)]
    feed(conn, peer, chunked(parts), read_size=777)
    await settle()
    assert bodies == [b"".join(parts)]


async def test_an_upgrade_request_with_a_body_is_refused_not_forwarded_without_it() -> None:
    called: list[Request] = []

    async def record(request: Request) -> Reply:
        called.append(request)
        return Reply(200, b"ok")

    server = listener(record)
    peer = Peer()
    conn = open_connection(server, peer)
    body = b'{"update_id":42}'
    conn.data_received(
        b"POST /u HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await settle()
    assert called == []
    assert bytes(peer.written).startswith(b"HTTP/1.1 400 Bad Request")
    assert peer.closed


# ---------------------------------------------------------------- tasks and errors


async def test_every_request_runs_in_its_own_task_and_its_timeout_holds() -> None:
    """Pipelined requests each get their own task: `current_task()` is theirs, and an
    `asyncio.timeout` in the handler fires for the second as for the first."""
    tasks: list[asyncio.Task[Any] | None] = []

    async def timed(_: Request) -> Reply:
        tasks.append(asyncio.current_task())
        try:
            async with asyncio.timeout(0.05):
                await asyncio.Event().wait()
        except TimeoutError:
            return Reply(408, b"timeout")
        return Reply(200, b"never")

    server = listener(timed)
    peer = Peer()
    conn = open_connection(server, peer)
    conn.data_received(unknown(2))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if requests_answered(peer) == 2:
            break
    assert bytes(peer.written).count(b"HTTP/1.1 408") == 2
    assert len(tasks) == 2 and None not in tasks and tasks[0] is not tasks[1]
    assert not conn.busy


async def test_an_error_in_connection_made_closes_the_connection_and_is_counted() -> None:
    errors: list[str] = []
    broken = [True]

    def header_timeout() -> float:
        if broken[0]:
            raise ValueError("no usable deadline")
        return 10.0

    server = HttpServer(answer_404, header_timeout, lambda: 1024, on_error=errors.append)
    peer = Peer()
    open_connection(server, peer)
    assert peer.aborted
    assert errors == ["connection_made"]
    assert not server.healthy
    assert server.connections == set()
    broken[0] = False
    good = Peer()
    open_connection(server, good)
    assert not good.closed
    assert server.healthy


async def test_an_error_while_parsing_closes_only_that_connection() -> None:
    errors: list[str] = []

    def boom(_: str | None, __: int) -> None:
        raise RuntimeError("counting failed")

    server = listener(on_error=errors.append, on_malformed=boom)
    peer = Peer()
    conn = open_connection(server, peer)
    conn.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    await settle()
    # on_malformed's own failure is logged; the 400 still goes out and the connection closes.
    assert bytes(peer.written).startswith(b"HTTP/1.1 400")
    assert peer.closed


async def test_readyz_is_not_ready_while_the_listener_cannot_set_up_connections() -> None:
    """A real gateway whose listener fails in connection_made (a fault injected into its
    deadline source): the connection is closed, counted, and /readyz says not ready until
    a connection can be set up again."""
    import aiohttp

    from tests.support.inprocess import base_config, route, running_gateway, tg_verify

    config = base_config([route("bot", "http://127.0.0.1:9/", verify=tg_verify())])
    async with running_gateway(config) as gw:
        http = gw.service._http
        assert http is not None
        working = http.header_timeout

        def broken() -> float:
            raise RuntimeError("injected")

        async def readyz() -> int:
            async with aiohttp.ClientSession() as s, s.get(gw.admin + "/readyz") as r:
                return r.status

        assert await readyz() == 200
        http.header_timeout = broken
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.service.public_port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not left open
        writer.close()
        assert await readyz() == 503
        assert await gw.metric("webhook_gateway_listener_errors_total", where="connection_made") == 1
        http.header_timeout = working
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.service.public_port)
        writer.write(unknown(1))
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 404")
        writer.close()
        assert await readyz() == 200
