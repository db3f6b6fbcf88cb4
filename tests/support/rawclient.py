"""Clients that send bytes exactly as given and read what came back: async one-shots and
sync sockets (keep-alive, pieces with pauses), with a parser for the responses."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.leaks import record_output


async def raw_exchange(port: int, data: bytes, read_timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh socket, return everything read until close or timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(read_timeout):
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        record_output("raw response", b"".join(chunks))
        return b"".join(chunks)
    finally:
        writer.close()


def raw_request(
    path: str,
    body: bytes = b"{}",
    headers: list[tuple[str, str | bytes]] | None = None,
    method: str = "POST",
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request as bytes, headers sent exactly as given (even non-ASCII or repeated)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: gateway.test"]
    for name, value in headers or []:
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    lines.append(f"Content-Length: {len(body)}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    """Status code of the first response in raw bytes (0 when the server just closed)."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])


# ---------------------------------------------------------------- raw sockets


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read until the peer closes or `timeout` passes. -> (bytes, closed)."""
    sock.settimeout(timeout)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def exchange(
    port: int,
    pieces: Sequence[bytes],
    *,
    read_timeout: float = 6.0,
    pause: float = 0.0,
    shut_wr: bool = False,
) -> tuple[bytes, bool]:
    """Send `pieces` (with `pause` between them) on a fresh socket; -> (all bytes read, closed)."""
    with connect(port) as sock:
        try:
            for i, piece in enumerate(pieces):
                if i and pause:
                    time.sleep(pause)
                sock.sendall(piece)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may close before it has read everything: that is a close
        data, closed = read_all(sock, read_timeout)
    record_output("raw response", data)
    return data, closed


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def parse_responses(data: bytes) -> list[Response]:
    """Every complete HTTP/1.1 response in `data`, in order (the gateway always sends a length)."""
    out: list[Response] = []
    rest = data
    while rest:
        head, sep, tail = rest.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"truncated response head: {rest[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        version, _, status_reason = lines[0].partition(" ")
        assert version in ("HTTP/1.0", "HTTP/1.1"), f"not an HTTP/1 status line: {lines[0]!r}"
        status = int(status_reason[:3])
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        if 100 <= status < 200:  # an interim answer (100 Continue): no body
            out.append(Response(status, headers, b""))
            rest = tail
            continue
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
        if length is None:
            assert not tail, f"response without Content-Length followed by {tail[:100]!r}"
            out.append(Response(status, headers, tail))
            break
        assert len(tail) >= length, f"truncated body: {len(tail)} < {length}"
        out.append(Response(status, headers, tail[:length]))
        rest = tail[length:]
    return out


class Conn:
    """One keep-alive client connection that reads exactly one response per request."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = connect(port, timeout)
        self.timeout = timeout
        self._buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> Response:
        deadline = time.monotonic() + self.timeout
        while True:
            head, sep, tail = self._buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(tail) >= length:
                    one = head + sep + tail[:length]
                    self._buf = tail[length:]
                    record_output("raw response", one)
                    return parse_responses(one)[0]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete response; have {self._buf[:200]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self._buf[:200]!r}")
            self._buf += chunk

    def request(self, data: bytes) -> Response:
        self.send(data)
        return self.response()


def post_bytes(path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A well-formed HTTP/1.1 POST as bytes."""
    lines = [f"POST {path} HTTP/1.1", "Host: gw", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
