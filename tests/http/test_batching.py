"""Answers written once per loop pass, one task per request.

The first two tests drive the public listener's protocol directly with a transport that
records writes: that is the only place the batching can be seen (on a socket the bytes are
the same). The last drives a real socket through a real gateway, with a real upstream.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.http.listener import HttpProtocol
from tests.support.env import TG_SECRET
from tests.support.inprocess import base_config, route, running_gateway, tg_verify
from tests.support.rawclient import raw_exchange
from tests.support.upstream import recording_upstream

BODY = b'{"update_id":1}'


def forged(path: str, close: bool = False) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nX-Telegram-Bot-Api-Secret-Token: wrong\r\n"
        f"Content-Length: {len(BODY)}\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    ).encode() + BODY


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        self.closed = True


def connect(service: Any) -> tuple[HttpProtocol, Recording]:
    conn = service._http()
    transport = Recording()
    conn.connection_made(transport)
    return conn, transport


async def test_answers_are_written_at_the_end_of_the_pass_in_one_write_per_connection() -> None:
    config = base_config([route("bot", "http://127.0.0.1:9/", verify=tg_verify())])
    async with running_gateway(config) as gw:
        pairs = [connect(gw.service) for _ in range(4)]
        for conn, _ in pairs:
            conn.data_received(forged("/hook/bot"))
        # Each request runs in its own task: nothing is on the wire before the loop runs them.
        assert all(t.writes == [] for _, t in pairs)
        for _ in range(3):
            await asyncio.sleep(0)
        # Every answer of that pass went out in one flush, one write per connection.
        for _, t in pairs:
            assert len(t.writes) == 1, t.writes
            assert t.writes[0].count(b"HTTP/1.1 401 Unauthorized\r\n") == 1
            assert not t.closed
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="rejected") == 4


async def test_pipelined_requests_are_answered_in_order_one_at_a_time() -> None:
    config = base_config([route("bot", "http://127.0.0.1:9/", verify=tg_verify())])
    async with running_gateway(config) as gw:
        conn, t = connect(gw.service)
        conn.data_received(forged("/hook/bot") * 3)
        for _ in range(20):
            await asyncio.sleep(0)
        assert b"".join(t.writes).count(b"HTTP/1.1 401 Unauthorized\r\n") == 3
        assert not t.closed
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="rejected") == 3


async def test_close_writes_what_is_pending_first() -> None:
    config = base_config([route("bot", "http://127.0.0.1:9/", verify=tg_verify())])
    async with running_gateway(config) as gw:
        conn, t = connect(gw.service)
        conn.data_received(forged("/hook/bot", close=True) + forged("/hook/bot"))
        for _ in range(20):
            await asyncio.sleep(0)
        # `Connection: close`: the answer goes out, then the close; the second is not served.
        assert t.closed
        assert len(t.writes) == 1
        assert t.writes[0].count(b"HTTP/1.1 401") == 1
        assert b"Connection: close\r\n" in t.writes[0]


async def test_a_pipelined_slow_body_after_a_task_handled_request_still_times_out() -> None:
    """The first request's body arrives late (so it is served in a task); the second, pipelined
    behind it, never finishes its body. It is started from the first one's task, and must
    still get its own task and its own 408, not hang on a deadline bound to a finished task."""
    async with recording_upstream() as up:
        config = base_config(
            [route("bot", up.url, verify=tg_verify())],
            limits={"body_timeout": "300ms"},
        )
        async with running_gateway(config) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.service.public_port)
            try:
                head = (
                    "POST /hook/bot HTTP/1.1\r\nHost: gw\r\n"
                    f"X-Telegram-Bot-Api-Secret-Token: {TG_SECRET}\r\n"
                    f"Content-Length: {len(BODY)}\r\n\r\n"
                ).encode()
                writer.write(head + BODY[:5])
                await writer.drain()
                await asyncio.sleep(0.1)
                second = head.replace(f"Content-Length: {len(BODY)}".encode(), b"Content-Length: 100")
                writer.write(BODY[5:] + second + b'{"upd')
                await writer.drain()
                async with asyncio.timeout(5):
                    data = b""
                    while data.count(b"HTTP/1.1 ") < 2:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        data += chunk
            finally:
                writer.close()
            assert data.startswith(b"HTTP/1.1 200 ")
            assert b"HTTP/1.1 408 " in data
            assert [r.body for r in up.received] == [BODY]


async def test_a_forwarded_request_over_a_real_socket_still_returns_the_upstream_answer() -> None:
    async with recording_upstream() as up:
        config = base_config([route("bot", up.url, verify=tg_verify())])
        async with running_gateway(config) as gw:
            head = (
                "POST /hook/bot HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                f"X-Telegram-Bot-Api-Secret-Token: {TG_SECRET}\r\n"
                f"Content-Length: {len(BODY)}\r\n\r\n"
            ).encode()
            answer = await raw_exchange(gw.service.public_port, head + BODY)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert [r.body for r in up.received] == [BODY]


async def test_nothing_pipelined_behind_an_answer_that_closes_is_served() -> None:
    """A 413 closes the connection; the valid update pipelined behind it in the same read must
    not reach the upstream (the sender is told nothing about it and will retry)."""
    async with recording_upstream() as up:
        config = base_config([route("bot", up.url, verify=tg_verify())], limits={"max_body_bytes": 20})
        async with running_gateway(config) as gw:
            conn, t = connect(gw.service)
            big = b'{"update_id":1,"text":"longer than the limit"}'

            def signed(body: bytes) -> bytes:
                return (
                    "POST /hook/bot HTTP/1.1\r\nHost: gw\r\n"
                    f"X-Telegram-Bot-Api-Secret-Token: {TG_SECRET}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

            conn.data_received(signed(big) + signed(BODY))
            await asyncio.sleep(0.3)
            assert t.closed
            assert [w[:20] for w in t.writes] == [b"HTTP/1.1 413 Request"]
            assert up.received == []
