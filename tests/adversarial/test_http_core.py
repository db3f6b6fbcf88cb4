"""The HTTP core against a real gateway process, from raw sockets on loopback: what one client
can make it hold (resident memory, descriptors, time), and what reaches the upstream.

Bounds only, never speed: each test sends a bounded amount within a bounded time, then checks
the gateway's RSS, what the upstream received, what the client got, and whether the
connection was closed.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.harness import HMAC_PATH, TG_PATH, gateway_config
from tests.adversarial.test_floods import TOKEN, update, wait_for
from tests.support.env import ROOT_DIR as ROOT
from tests.support.env import TG_SECRET
from tests.support.metrics import metric
from tests.support.process import gateway_process
from tests.support.rawclient import Conn, connect, parse_responses, post_bytes, read_all
from tests.support.tls import make_pki
from tests.support.upstream import ThreadedUpstream

MIB = 1024 * 1024


@pytest.fixture
def upstream() -> Iterator[ThreadedUpstream]:
    with ThreadedUpstream() as up:
        yield up


def push(sock: socket.socket, data: bytes, patience: float = 2.0, limit: float = 20.0) -> int:
    """Send as much of `data` as the gateway takes, in 32 KiB pieces that end on a request
    boundary (`data` is made of 64-byte requests); stop once it has taken nothing for
    `patience` seconds (it stopped reading) or after `limit` seconds. -> bytes sent."""
    sock.settimeout(patience)
    sent = 0
    end = time.monotonic() + limit
    while sent < len(data) and time.monotonic() < end:
        piece = data[sent : sent + 32768]
        try:
            n = sock.send(piece)
            while n < len(piece):  # finish the piece: a read must not end inside a request
                n += sock.send(piece[n:])
        except TimeoutError:
            break
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += n
    sock.settimeout(10)
    return sent


ONE = b"POST /unknown-path12 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
assert len(ONE) == 64


def unknown_requests(total: int) -> bytes:
    return ONE * (total // len(ONE))


def answers_so_far(sock: socket.socket, at_least: int) -> list[int]:
    """Read answers until `at_least` bytes came; -> their statuses (the connection is open)."""
    data = b""
    while len(data) < at_least:
        chunk = sock.recv(65536)
        assert chunk, "the gateway closed the connection"
        data += chunk
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def test_a_client_that_never_reads_cannot_grow_the_gateway(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    """40 MB of small requests on one socket whose answers are never read (enforce mode, no
    credentials, no route needed): the gateway stops reading instead of buffering answers."""
    with gateway_process(gateway_config(upstream, mode="enforce"), tmp_path / "gw") as gw:
        before = gw.rss_kib()
        with connect(gw.public_port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sent = push(sock, unknown_requests(40 * MIB))
            grown = gw.rss_kib() - before
            # The client reads at last: every answer so far is the 404, on a connection still open.
            statuses = answers_so_far(sock, 256 * 1024)
        # Kernel socket buffers take a few MB at most; the gateway stopped reading long before 40.
        assert sent < 16 * MIB, sent
        assert grown < 20 * 1024, f"RSS grew {grown} KiB"
        assert set(statuses) == {404}, sorted(set(statuses))
        assert gw.problems() == []


def test_pipelining_behind_a_slow_bot_is_not_buffered(tmp_path: Path) -> None:
    """A forwarded request waits on a slow bot (report-only, the shipped default); 7 MB of
    requests pipelined behind it stay in the socket, not in the gateway."""
    with (
        ThreadedUpstream(delay=4.0) as slow,
        gateway_process(gateway_config(slow, mode="report-only"), tmp_path / "gw") as gw,
    ):
        before = gw.rss_kib()
        with connect(gw.public_port) as sock:
            sock.sendall(post_bytes(TG_PATH, update(1), [TOKEN]))
            wait_for("the bot to get the first request", lambda: len(slow.received) == 1, 10)
            sent = push(sock, unknown_requests(7 * MIB), patience=1.5, limit=3.0)
            grown = gw.rss_kib() - before
            assert len(slow.received) == 1  # nothing behind it was served meanwhile
            statuses = answers_so_far(sock, 64 * 1024)
        assert statuses[0] == 200 and set(statuses[1:]) == {404}, sorted(set(statuses))
        assert sent < 7 * MIB
        assert grown < 15 * 1024, f"RSS grew {grown} KiB"


def test_one_byte_of_a_next_head_behind_a_slow_request_still_times_out(tmp_path: Path) -> None:
    """A request to a slow bot, then one byte of the next head, then silence: the first answer
    arrives, and the connection is closed once the head deadline has passed, not held open."""
    with ThreadedUpstream(delay=2.0) as slow:
        cfg = gateway_config(slow, limits={"header_timeout": "1s", "body_timeout": "3s"})
        with gateway_process(cfg, tmp_path / "gw") as gw:
            with connect(gw.public_port) as sock:
                sock.sendall(post_bytes(TG_PATH, update(1), [TOKEN]) + b"P")
                data, closed = read_all(sock, 15.0)
            assert closed, "the connection was still open long after both deadlines"
            (answer,) = parse_responses(data)
            assert answer.status == 200
            assert answer.header("Connection") == "close"
            assert len(slow.received) == 1


def chunked_post(path: str, chunks: list[bytes], trailers: bytes, headers: list[tuple[str, str]]) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: gw", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in headers]
    out = [("\r\n".join(head) + "\r\n\r\n").encode()]
    out += [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks]
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


def test_request_trailers_never_reach_the_upstream(upstream: ThreadedUpstream, tmp_path: Path) -> None:
    with gateway_process(gateway_config(upstream), tmp_path / "gw") as gw:
        body = b'{"update_id":7}'
        data = chunked_post(
            TG_PATH,
            [body[:5], body[5:]],
            b"X-Trailer-Injected: yes\r\nContent-Type: text/evil\r\n",
            [TOKEN, ("Content-Type", "application/json")],
        )
        with Conn(gw.public_port) as c:
            assert c.request(data).status == 200
        (got,) = upstream.received
        assert got.body == body
        assert got.header("X-Trailer-Injected") is None
        assert got.header("Content-Type") == "application/json"


def test_upgrade_with_a_body_is_refused_and_nothing_is_forwarded(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    with gateway_process(gateway_config(upstream, mode="report-only"), tmp_path / "gw") as gw:
        body = b'{"update_id":15}'
        data = post_bytes(
            TG_PATH,
            body,
            [
                TOKEN,
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", "h2c"),
                ("HTTP2-Settings", "AAMAAABk"),
            ],
        )
        with connect(gw.public_port) as sock:
            sock.sendall(data)
            raw, closed = read_all(sock, 5.0)
        (answer,) = parse_responses(raw)
        assert answer.status == 400
        assert closed
        assert upstream.received == []


def test_slow_bodies_on_one_route_leave_room_for_another(upstream: ThreadedUpstream, tmp_path: Path) -> None:
    """30 connections send a head and 2 bytes of a 100-byte body to the HMAC route, with
    max_concurrency 30: a genuine Telegram update on the other route is still served."""
    cfg = gateway_config(
        upstream, max_concurrency=30, limits={"body_timeout": "20s", "header_timeout": "20s"}
    )
    with gateway_process(cfg, tmp_path / "gw") as gw:
        head = b"POST %s HTTP/1.1\r\nHost: gw\r\nX-Signature: sha256=00\r\nContent-Length: 100\r\n\r\n{}"
        stalled = [connect(gw.public_port) for _ in range(30)]
        try:
            for s in stalled:
                s.sendall(head % HMAC_PATH.encode())

            def held() -> bool:
                return metric(gw.metrics_text(), "webhook_gateway_inflight_requests") >= 15

            wait_for("the stalled bodies to hold their slots", held, 15)
            with Conn(gw.public_port) as c:
                r = c.request(post_bytes(TG_PATH, update(77), [TOKEN]))
            assert r.status == 200, (r.status, r.body)
            assert [x.body for x in upstream.received] == [update(77)]
            text = gw.metrics_text()
            assert metric(text, "webhook_gateway_requests_total", route="hmac", outcome="overloaded") >= 1
            assert metric(text, "webhook_gateway_requests_total", route="tg", outcome="forwarded") == 1
        finally:
            for s in stalled:
                s.close()


def test_a_stalled_tls_handshake_is_closed_at_header_timeout(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    """TCP connections to the HTTPS listener that never send a ClientHello are closed within
    header_timeout, not held for asyncio's default 60 s."""
    pki = make_pki(tmp_path)
    cert, key = pki.write(pki.leaf("bot.test"), "bot")
    cfg = gateway_config(
        upstream,
        limits={"header_timeout": "1s"},
        tls={"certificates": [{"cert_file": str(cert), "key_file": str(key)}]},
    )
    with gateway_process(cfg, tmp_path / "gw") as gw:
        silent = [connect(gw.public_port) for _ in range(50)]
        try:
            for s in silent:
                assert read_all(s, 10.0)[1], "a silent TLS connection was still open after 10 s"
        finally:
            for s in silent:
                s.close()
        # The listener still serves a client that does speak TLS.
        ctx = ssl.create_default_context(cafile=str(pki.root_pem))
        with (
            socket.create_connection(("127.0.0.1", gw.public_port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="bot.test") as tls,
        ):
            tls.sendall(post_bytes(TG_PATH, update(5), [TOKEN]))
            data, _ = read_all(tls, 5.0)  # type: ignore[arg-type]
        assert data.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "-3", "0", "0s"])
def test_check_refuses_durations_that_are_not_finite_and_positive(value: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n"
        f"limits:\n  header_timeout: {value}\n"
        "routes:\n  - name: bot\n    path: /hook/bot\n    upstream: http://127.0.0.1:9/\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "limits.header_timeout" in done.stdout + done.stderr
    assert ("finite" in done.stdout + done.stderr) or ("positive" in done.stdout + done.stderr)


def test_a_reload_to_a_nan_deadline_is_refused_and_the_listener_keeps_serving(
    upstream: ThreadedUpstream, tmp_path: Path
) -> None:
    import signal

    import yaml

    cfg = gateway_config(upstream)
    with gateway_process(cfg, tmp_path / "gw") as gw:
        path = tmp_path / "gw" / "gateway.yaml"
        text = yaml.safe_dump({**cfg, "limits": {"header_timeout": float("nan")}})
        assert ".nan" in text
        path.write_text(text)
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(
            "the reload to be refused",
            lambda: metric(gw.metrics_text(), "webhook_gateway_config_reloads_total", result="error") >= 1,
            20,
        )
        with Conn(gw.public_port) as c:
            assert (
                c.request(
                    post_bytes(TG_PATH, update(3), [("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)])
                ).status
                == 200
            )
        assert (
            metric(gw.metrics_text(), "webhook_gateway_listener_errors_total", where="connection_made") == 0
        )
