"""The upstream client through a real gateway process, against a bot that answers scripted bytes.

The bot speaks raw sockets so it can misbehave on the wire: bytes after an answer, trailers, a
head over the limit, a reset. Each route's upstream path names what the bot does.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.env import TG_SECRET
from tests.support.leaks import record_output
from tests.support.process import SyncGatewayProcess, free_port, gateway_process

POISON = b"HTTP/1.1 299 Poisoned\r\nContent-Length: 8\r\n\r\npoisoned"
TRAILERS = b"Set-Cookie: a=1\r\nX-Trailer-Injected: yes\r\nContent-Type: text/evil\r\n"
SIZES = (70_000, 300_000, 1 << 20)


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def pattern(size: int) -> bytes:
    return b"".join(b"%08d" % i for i in range(size // 8 + 1))[:size]


class WireBot:
    """Answers each request by its path (`/echo`, `/poison`, ...) with exact bytes; records
    (connection number, path, body) of every request it read."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[int, str, bytes]] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="wire-bot", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()

    def received(self, body: bytes) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return [r for r in self.requests if r[2] == body]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(30)
        buf = b""
        owed = b""  # the rest of a misbehaving answer, written before the next one
        with conn:
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    body, buf = buf[:length], buf[length:]
                    target = urlsplit(head.split(b" ")[1].decode())
                    with self._lock:
                        self.requests.append((number, target.path, body))
                    answer, owed_next, keep = self._answer(target.path, parse_qs(target.query), body, conn)
                    if answer is None:
                        return
                    conn.sendall(owed + answer)
                    owed = owed_next
                    if not keep:
                        return
            except OSError:
                return

    @staticmethod
    def _answer(
        path: str, query: dict[str, list[str]], body: bytes, conn: socket.socket
    ) -> tuple[bytes | None, bytes, bool]:
        """-> (bytes to write now or None to close at once, bytes owed before the next answer,
        keep the connection open)."""
        if path == "/echo":
            return ok(b"genuine:" + body), b"", True
        if path == "/poison":
            # A second answer in the same write, its body held back for the next request.
            return ok(b"first") + POISON[:-8], POISON[-8:], True
        if path == "/partial":
            return ok(b"first") + b"HTTP/1.1 2", b"", True
        if path == "/big":
            return ok(pattern(int(query["size"][0]))), b"", True
        if path == "/trailer":
            chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n" + TRAILERS + b"\r\n"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            return head + chunked, b"", True
        if path == "/reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None, b"", False
        if path == "/close":
            return None, b"", False
        if path == "/garbage":
            return b"SMTP ready, no HTTP here\r\n\r\n", b"", False
        if path == "/headbig":
            return (
                b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
                b"",
                False,
            )
        if path == "/slow":
            conn.recv(1)  # nothing comes: the gateway times out first
            return None, b"", False
        raise AssertionError(f"no script for {path}")


ACTIONS = ("echo", "poison", "partial", "big", "trailer", "reset", "close", "garbage", "headbig", "slow")


def wire_config(bot: WireBot, upstream_timeout: str = "10s") -> dict[str, Any]:
    routes = [
        {
            "name": action,
            "path": f"/hook/{action}",
            "upstream": f"http://127.0.0.1:{bot.port}/{action}",
            "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
        }
        for action in ACTIONS
    ]
    routes.append(
        {
            "name": "refused",
            "path": "/hook/refused",
            "upstream": f"http://127.0.0.1:{free_port()}/",  # nothing listens there
            "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET"]},
        }
    )
    return {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "mode": "enforce",
        "limits": {"upstream_timeout": upstream_timeout, "max_body_bytes": 65536},
        "routes": routes,
    }


def post(gw: SyncGatewayProcess, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.public_port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        data = resp.read()
        headers = resp.getheaders()
    finally:
        conn.close()
    record_output("response headers", "\n".join(f"{k}: {v}" for k, v in headers))
    if resp.status >= 400:
        record_output("error body", data)
    return resp.status, headers, data


@pytest.fixture(scope="module")
def bot() -> Iterator[WireBot]:
    b = WireBot()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def gateway(bot: WireBot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncGatewayProcess]:
    with gateway_process(wire_config(bot), tmp_path_factory.mktemp("wire")) as gw:
        yield gw


@pytest.mark.parametrize("size", SIZES)
def test_big_answers_reach_the_client_byte_exact_fresh_and_pooled(
    bot: WireBot, gateway: SyncGatewayProcess, size: int
) -> None:
    for attempt in range(2):
        marker = b'{"big":%d,"attempt":%d}' % (size, attempt)
        status, _, data = post(gateway, f"/hook/big?size={size}", marker)
        assert status == 200
        assert len(data) == size and data == pattern(size)
    first, second = (bot.received(b'{"big":%d,"attempt":%d}' % (size, a)) for a in range(2))
    assert len(first) == len(second) == 1
    assert first[0][0] == second[0][0]  # the second answer came on the pooled connection


@pytest.mark.parametrize("misbehaving", ["poison", "partial"])
def test_bytes_after_an_answer_never_reach_the_next_request(
    bot: WireBot, gateway: SyncGatewayProcess, misbehaving: str
) -> None:
    status, _, data = post(gateway, f"/hook/{misbehaving}", b'{"update_id":1}')
    assert (status, data) == (200, b"first")
    update = b'{"update_id":%d}' % (1000 + len(misbehaving))
    status, _, data = post(gateway, "/hook/echo", update)
    assert (status, data) == (200, b"genuine:" + update)
    assert len(bot.received(update)) == 1  # the bot saw the update exactly once


def test_response_trailers_never_reach_the_client(gateway: SyncGatewayProcess) -> None:
    status, headers, data = post(gateway, "/hook/trailer", b'{"update_id":2}')
    assert (status, data) == (200, b"hello world")
    names = [k.lower() for k, _ in headers]
    assert "set-cookie" not in names
    assert "x-trailer-injected" not in names
    assert [v for k, v in headers if k.lower() == "content-type"] == ["application/json"]


def test_a_failed_exchange_logs_why(bot: WireBot, tmp_path: Path) -> None:
    expected = {
        "reset": (502, "reset"),
        "close": (502, "closed"),
        "garbage": (502, "malformed"),
        "headbig": (502, "head_too_large"),
        "refused": (502, "refused"),
        "slow": (504, "timeout"),
    }
    with gateway_process(wire_config(bot, upstream_timeout="2s"), tmp_path) as gw:
        for name, (status, _) in expected.items():
            assert post(gw, f"/hook/{name}", b'{"update_id":3}')[0] == status, name
    stdout = gw.stdout_text()  # complete once the process has exited
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    logged = {
        line["route"]: (line["status"], line.get("upstream_error"))
        for line in lines
        if line.get("outcome") == "upstream_error"
    }
    assert logged == expected
    assert "SMTP" not in stdout and "ppppp" not in stdout  # nothing the upstream sent
