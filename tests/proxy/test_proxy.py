"""End to end through a real gateway and a recording upstream on loopback."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest

from tests.support.env import HMAC_SECRET, TELEGRAM_IP, TG_SECRET, TG_SECRET_2
from tests.support.inprocess import base_config, post, route, running_gateway, tg_verify
from tests.support.rawclient import raw_exchange, raw_request, status_of
from tests.support.upstream import recording_upstream

TG = "X-Telegram-Bot-Api-Secret-Token"
SIG = "X-Telegram-Bot-Api-Secret-Hash"
BODY = json.dumps({"update_id": 7, "message": {"text": "hi"}}).encode()
HMAC_VERIFY = {"scheme": "hmac", "header": SIG, "algorithm": "sha256", "secrets": ["env:HMAC_SECRET"]}


def hmac_of(body: bytes) -> str:
    return hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()


SCHEME_CASES: dict[str, dict[str, Any]] = {
    "telegram": {"verify": tg_verify(), "header": TG, "valid": TG_SECRET, "wrong": TG_SECRET[:-1] + "X"},
    "hmac": {"verify": HMAC_VERIFY, "header": SIG, "valid": hmac_of(BODY), "wrong": hmac_of(BODY + b"x")},
}
# case -> (header values to send, reason when it fails)
CASES: dict[str, tuple[Any, str | None]] = {
    "valid": ("valid", None),
    "wrong": ("wrong", "mismatch"),
    "missing": (None, "missing"),
    "empty": ("", "malformed"),
    "repeated": ("repeat", "malformed"),
    "non_ascii": ("tökén".encode(), "malformed"),
}


def headers_for(scheme: str, case: str) -> list[tuple[str, str | bytes]]:
    s = SCHEME_CASES[scheme]
    value = CASES[case][0]
    if value is None:
        return []
    if value == "repeat":
        return [(s["header"], s["valid"]), (s["header"], s["valid"])]
    if value in ("valid", "wrong"):
        return [(s["header"], s[value])]
    return [(s["header"], value)]


@pytest.mark.parametrize("mode", ["enforce", "report-only"])
@pytest.mark.parametrize("scheme", list(SCHEME_CASES))
@pytest.mark.parametrize("case", list(CASES))
async def test_scheme_table(scheme: str, case: str, mode: str) -> None:
    reason = CASES[case][1]
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=SCHEME_CASES[scheme]["verify"], mode=mode)])
        async with running_gateway(cfg) as gw:
            raw = await raw_exchange(
                gw.service.public_port, raw_request("/hook/bot", BODY, headers_for(scheme, case))
            )
            status = status_of(raw)
            failures = await gw.metric(
                "webhook_gateway_check_failures_total",
                route="bot",
                check="signature",
                reason=reason or "",
                mode=mode,
            )
            if reason is None:
                assert status == 200
                assert [r.body for r in up.received] == [BODY]
                assert up.received[0].header("X-Webhook-Verdict") == "pass"
                assert await gw.metric("webhook_gateway_secret_matches_total", route="bot", secret="0") == 1
                assert (
                    await gw.metric("webhook_gateway_requests_total", route="bot", outcome="forwarded") == 1
                )
            elif mode == "enforce":
                assert status == 401
                assert raw.endswith(json.dumps({"error": f"signature_{reason}"}).encode())
                assert up.received == []
                assert failures == 1
                assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="rejected") == 1
            else:
                assert status == 200
                assert [r.body for r in up.received] == [BODY]
                verdict = up.received[0].header("X-Webhook-Verdict")
                assert verdict == f"would-reject; check=signature; reason={reason}"
                assert failures == 1
                assert (
                    await gw.metric("webhook_gateway_requests_total", route="bot", outcome="would_reject")
                    == 1
                )


def _src_cfg(up_url: str, trusted: list[str], mode: str = "enforce") -> dict[str, Any]:
    return base_config(
        [route(upstream=up_url, verify=tg_verify(), allow_sources=["telegram"], mode=mode)],
        trusted_proxies=trusted,
    )


@pytest.mark.parametrize(
    ("trusted", "xff", "status", "seen_as"),
    [
        (["127.0.0.1/32"], [TELEGRAM_IP], 200, TELEGRAM_IP),
        (["127.0.0.1/32"], ["::ffff:" + TELEGRAM_IP], 200, TELEGRAM_IP),
        (["127.0.0.1/32"], ["203.0.113.9"], 403, None),
        ([], [TELEGRAM_IP], 403, None),  # an untrusted peer naming a Telegram IP is not believed
        (["127.0.0.1/32"], [f"{TELEGRAM_IP}, 203.0.113.9"], 403, None),  # spoofed left entry
        (["127.0.0.1/32"], [f"203.0.113.9, {TELEGRAM_IP}"], 200, TELEGRAM_IP),
        (["127.0.0.1/32", "10.0.0.0/8"], [f"{TELEGRAM_IP}, 10.1.1.1"], 200, TELEGRAM_IP),  # trusted chain
        (["127.0.0.1/32"], ["not-an-ip"], 403, None),
        (["127.0.0.1/32"], [f"{TELEGRAM_IP}, garbage"], 403, None),
    ],
)
async def test_source_allow_list_and_forwarded_for(
    trusted: list[str], xff: list[str], status: int, seen_as: str | None
) -> None:
    async with recording_upstream() as up, running_gateway(_src_cfg(up.url, trusted)) as gw:
        headers = [(TG, TG_SECRET), *[("X-Forwarded-For", v) for v in xff]]
        got, body, _ = await post(gw.base + "/hook/bot", BODY, headers)
        assert got == status
        if status == 200:
            assert up.received[0].header("X-Forwarded-For") == seen_as
        else:
            assert body == b'{"error": "source_not_allowed"}'
            assert up.received == []
            n = await gw.metric(
                "webhook_gateway_check_failures_total",
                route="bot",
                check="source",
                reason="not_allowed",
                mode="enforce",
            )
            assert n == 1


async def test_source_failure_in_report_only_is_forwarded_and_marked() -> None:
    async with recording_upstream() as up, running_gateway(_src_cfg(up.url, [], mode="report-only")) as gw:
        got, _, _ = await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
        assert got == 200
        assert up.received[0].header("X-Webhook-Verdict") == "would-reject; check=source; reason=not_allowed"
        assert await gw.metric("webhook_gateway_requests_total", route="bot", outcome="would_reject") == 1


BODIES = {
    "bom": b"\xef\xbb\xbf" + BODY,
    "nul": b'{"a":"\x00"}\x00',
    "crlf": b'{\r\n"a": 1\r\n}\r\n',
    "latin1": '{"a":"\xe9"}'.encode("latin-1"),
    "escaped_unicode": b'{"text":"\\u00e9\\ud83d\\ude00"}',
    "empty": b"",
}


@pytest.mark.parametrize("name", list(BODIES))
async def test_body_reaches_upstream_byte_for_byte(name: str) -> None:
    body = BODIES[name]
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=HMAC_VERIFY)])
        async with running_gateway(cfg) as gw:
            status, _, _ = await post(
                gw.base + "/hook/bot",
                body,
                {SIG: hmac_of(body), "Content-Type": "application/json; charset=utf-8"},
            )
            assert status == 200
            assert up.received[0].sha256 == hashlib.sha256(body).hexdigest()
            assert up.received[0].header("Content-Type") == "application/json; charset=utf-8"


async def test_gzip_body_is_forwarded_compressed_as_received() -> None:
    body = gzip.compress(BODY * 20)
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=HMAC_VERIFY)])
        async with running_gateway(cfg) as gw:
            status, _, _ = await post(
                gw.base + "/hook/bot",
                body,
                {SIG: hmac_of(body), "Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
            assert status == 200
            got = up.received[0]
            assert got.body == body
            assert got.header("Content-Encoding") == "gzip"
            assert got.header("Content-Length") == str(len(body))


async def test_chunked_request_is_forwarded_with_the_same_bytes() -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=HMAC_VERIFY)])
        async with running_gateway(cfg) as gw:
            req = (
                f"POST /hook/bot HTTP/1.1\r\nHost: x\r\n{SIG}: {hmac_of(BODY)}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
            req += (
                b"5\r\n"
                + BODY[:5]
                + b"\r\n"
                + f"{len(BODY) - 5:x}\r\n".encode()
                + BODY[5:]
                + b"\r\n0\r\n\r\n"
            )
            raw = await raw_exchange(gw.service.public_port, req)
            assert status_of(raw) == 200
            assert up.received[0].body == BODY
            assert "transfer-encoding" not in up.received[0].header_names()


async def test_hop_by_hop_and_gateway_headers_are_stripped() -> None:
    async with recording_upstream() as up:
        cfg = base_config(
            [route(upstream=up.url, verify=tg_verify(), mode="report-only")], trusted_proxies=[]
        )
        async with running_gateway(cfg) as gw:
            headers: list[tuple[str, str | bytes]] = [
                ("Connection", "keep-alive, X-Drop-Me, X-Forwarded-For, X-Webhook-Verdict, X-Request-Id"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "X-Trailer"),
                ("Upgrade", "websocket"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("X-Drop-Me", "1"),
                ("X-Keep-Me", "kept"),
                ("X-Webhook-Verdict", "pass"),
                ("X-Forwarded-For", TELEGRAM_IP),
                ("X-Forwarded-Proto", "https"),
                ("X-Request-Id", "client-chosen"),
                ("Forwarded", "for=149.154.167.220"),
                ("X-Real-IP", TELEGRAM_IP),
            ]
            raw = await raw_exchange(
                gw.service.public_port, raw_request("/hook/bot", BODY, headers, close=False)
            )
            assert status_of(raw) == 200
            got = up.received[0]
            names = got.header_names()
            for gone in (
                "keep-alive",
                "te",
                "trailer",
                "upgrade",
                "proxy-authorization",
                "x-drop-me",
                "forwarded",
            ):
                assert gone not in names, gone
            assert "x-real-ip" not in names
            assert got.header("X-Keep-Me") == "kept"
            # The gateway's own headers survive being listed in Connection, each exactly once.
            assert got.header("X-Webhook-Verdict") == "would-reject; check=signature; reason=missing"
            assert got.header("X-Forwarded-For") == "127.0.0.1"  # peer untrusted: its XFF ignored
            assert got.header("X-Forwarded-Proto") == "http"
            request_id = got.header("X-Request-Id")
            assert request_id and request_id != "client-chosen" and len(request_id) == 24


@pytest.mark.parametrize(("trusted", "expected"), [(["127.0.0.1/32"], "https"), ([], "http")])
async def test_forwarded_proto_believed_only_from_trusted_proxies(trusted: list[str], expected: str) -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=tg_verify())], trusted_proxies=trusted)
        async with running_gateway(cfg) as gw:
            status, _, _ = await post(
                gw.base + "/hook/bot", BODY, {TG: TG_SECRET, "X-Forwarded-Proto": "https"}
            )
            assert status == 200
            assert up.received[0].header("X-Forwarded-Proto") == expected


async def test_upstream_answer_returns_unchanged() -> None:
    reply = json.dumps({"method": "sendMessage", "chat_id": 42, "text": "pong"}).encode()
    compressed = gzip.compress(reply)
    async with recording_upstream(
        status=201,
        body=compressed,
        headers=[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Bot", "a"),
            ("X-Bot", "b"),
        ],
    ) as up:
        cfg = base_config([route(upstream=up.url, verify=tg_verify())])
        async with running_gateway(cfg) as gw:
            status, body, headers = await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
            assert status == 201
            assert body == compressed
            assert headers.getall("X-Bot") == ["a", "b"]  # type: ignore[attr-defined]
            assert headers["Content-Encoding"] == "gzip"
            assert headers["Content-Type"] == "application/json"


async def test_query_string_is_forwarded() -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=tg_verify())])
        async with running_gateway(cfg) as gw:
            # Raw bytes: an HTTP client library would re-quote %2F in the query.
            raw = await raw_exchange(
                gw.service.public_port, raw_request("/hook/bot?a=1&b=%2F", BODY, [(TG, TG_SECRET)])
            )
            assert status_of(raw) == 200
            assert up.received[0].path_qs == "/webhook?a=1&b=%2F"


async def test_body_over_limit_from_content_length_and_chunked() -> None:
    async with recording_upstream() as up:
        cfg = base_config(
            [route(upstream=up.url, verify=tg_verify(), mode="report-only")], limits={"max_body_bytes": 100}
        )
        async with running_gateway(cfg) as gw:
            big = b"x" * 101
            raw = await raw_exchange(gw.service.public_port, raw_request("/hook/bot", big, [(TG, TG_SECRET)]))
            assert status_of(raw) == 413
            assert raw.endswith(b'{"error": "body_too_large"}')
            # Refused from Content-Length alone: the client announced a huge body it never sends.
            head = (
                f"POST /hook/bot HTTP/1.1\r\nHost: x\r\n{TG}: {TG_SECRET}\r\nContent-Length: 99999999\r\n\r\n"
            )
            raw = await raw_exchange(gw.service.public_port, head.encode())
            assert status_of(raw) == 413
            chunked = (
                (
                    f"POST /hook/bot HTTP/1.1\r\nHost: x\r\n{TG}: {TG_SECRET}\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n"
                ).encode()
                + b"40\r\n"
                + b"y" * 64
                + b"\r\n40\r\n"
                + b"y" * 64
                + b"\r\n0\r\n\r\n"
            )
            raw = await raw_exchange(gw.service.public_port, chunked)
            assert status_of(raw) == 413
            exactly = b"z" * 100
            raw = await raw_exchange(
                gw.service.public_port, raw_request("/hook/bot", exactly, [(TG, TG_SECRET)])
            )
            assert status_of(raw) == 200
            assert [r.body for r in up.received] == [exactly]
            n = await gw.metric(
                "webhook_gateway_check_failures_total",
                route="bot",
                check="body",
                reason="too_large",
                mode="enforce",
            )
            assert n == 3


async def _wait_closed(
    port: int, payload: bytes, trickle: bytes = b"", every: float = 0.1
) -> tuple[bytes, bool]:
    """Send `payload`, then `trickle` one byte at a time; report what came back and whether the
    server closed the connection (within a generous bound, not a timing assertion)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    received = b""
    closed = False
    try:
        async with asyncio.timeout(10):
            for byte in trickle:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    async with asyncio.timeout(every):
                        chunk = await reader.read(4096)
                        received += chunk
                        if not chunk:
                            closed = True
                            break
                except TimeoutError:
                    continue
            while not closed:
                chunk = await reader.read(4096)
                received += chunk
                closed = not chunk
    except (TimeoutError, ConnectionError):
        closed = closed or writer.transport.is_closing()
    finally:
        writer.close()
    return received, closed


async def test_slow_clients_are_cut_off() -> None:
    async with recording_upstream() as up:
        cfg = base_config(
            [route(upstream=up.url, verify=tg_verify())],
            limits={"header_timeout": "300ms", "body_timeout": "300ms"},
        )
        async with running_gateway(cfg) as gw:
            port = gw.service.public_port
            # Connects and sends nothing.
            got, closed = await _wait_closed(port, b"")
            assert closed and got == b""
            # Trickles its headers one byte per 100 ms, forever.
            got, closed = await _wait_closed(port, b"POST /hook/bot HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200)
            assert closed and got == b""
            # Sends headers, then trickles the body.
            head = f"POST /hook/bot HTTP/1.1\r\nHost: x\r\n{TG}: {TG_SECRET}\r\nContent-Length: 500\r\n\r\n"
            got, closed = await _wait_closed(port, head.encode(), b"{" * 200)
            assert closed and status_of(got) == 408
            assert up.received == []
            # A prompt client is unaffected.
            status, _, _ = await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
            assert status == 200


async def test_upstream_refused_is_502_and_timeout_is_504() -> None:
    async with recording_upstream(delay=2.0) as slow:
        cfg = base_config(
            [
                route("down", upstream="http://127.0.0.1:9/webhook", verify=tg_verify()),
                route("slow", upstream=slow.url, verify=tg_verify()),
            ],
            limits={"upstream_timeout": "300ms"},
        )
        async with running_gateway(cfg) as gw:
            status, body, _ = await post(gw.base + "/hook/down", BODY, {TG: TG_SECRET})
            assert (status, body) == (502, b'{"error": "upstream_unavailable"}')
            status, body, _ = await post(gw.base + "/hook/slow", BODY, {TG: TG_SECRET})
            assert (status, body) == (504, b'{"error": "upstream_timeout"}')
            for name in ("down", "slow"):
                assert (
                    await gw.metric("webhook_gateway_requests_total", route=name, outcome="upstream_error")
                    == 1
                )


async def test_upstream_reset_is_502() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        running_gateway(base_config([route(upstream=f"http://127.0.0.1:{port}/", verify=tg_verify())])) as gw,
    ):
        status, _, _ = await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
        assert status == 502


async def test_unix_socket_upstream(tmp_path: Any) -> None:
    from aiohttp import web

    got: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(text="unix ok")

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "bot.sock")
    await web.UnixSite(runner, sock).start()
    try:
        cfg = base_config([route(upstream=f"unix:{sock}:/webhook", verify=tg_verify())])
        async with running_gateway(cfg) as gw:
            status, body, _ = await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
            assert (status, body, got) == (200, b"unix ok", [BODY])
    finally:
        await runner.cleanup()


OUTS = ("method_not_allowed", "bad_request")


async def test_unknown_path_wrong_method_and_bad_version() -> None:
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=tg_verify())])) as gw,
    ):
        status, body, _ = await post(gw.base + "/hook/bot/", BODY, {TG: TG_SECRET})
        assert (status, body) == (404, b'{"error": "not_found"}')
        async with aiohttp.ClientSession() as s, s.get(gw.base + "/hook/bot") as r:
            assert r.status == 405 and r.headers["Allow"] == "POST"
        raw = await raw_exchange(
            gw.service.public_port, b"POST /hook/bot HTTP/2.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        assert status_of(raw) == 400
        assert up.received == []
        assert await gw.metric("webhook_gateway_requests_total", route="-", outcome="not_found") == 1
        # A wrong method is its own outcome, not a malformed request.
        counted = {o: await gw.metric("webhook_gateway_requests_total", route="bot", outcome=o) for o in OUTS}
        assert counted == {"method_not_allowed": 1, "bad_request": 0}


async def test_admin_endpoints_only_on_admin_listener() -> None:
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=tg_verify())])) as gw,
    ):
        async with aiohttp.ClientSession() as s:
            for path in ("/metrics", "/healthz", "/readyz"):
                async with s.get(gw.base + path) as r:
                    assert r.status == 404, path
                async with s.get(gw.admin + path) as r:
                    assert r.status == 200, path
            async with s.get(gw.admin + "/metrics") as r:
                text = await r.text()
        assert 'webhook_gateway_route_enforced{route="bot"} 1.0' in text
        assert 'webhook_gateway_config_reloads_total{result="success"} 1.0' in text


async def test_rotation_counts_which_secret_matched() -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=tg_verify("env:TG_SECRET", "env:TG_SECRET_2"))])
        async with running_gateway(cfg) as gw:
            for secret in (TG_SECRET, TG_SECRET_2, TG_SECRET_2):
                status, _, _ = await post(gw.base + "/hook/bot", BODY, {TG: secret})
                assert status == 200
            assert await gw.metric("webhook_gateway_secret_matches_total", route="bot", secret="0") == 1
            assert await gw.metric("webhook_gateway_secret_matches_total", route="bot", secret="1") == 2


async def test_one_json_log_line_per_request_without_secrets() -> None:
    async with recording_upstream() as up:
        cfg = base_config([route(upstream=up.url, verify=HMAC_VERIFY, allow_sources=["telegram"])])
        async with running_gateway(cfg) as gw:
            sig = hmac_of(BODY)
            await post(gw.base + "/hook/bot", BODY, {SIG: sig, "X-Forwarded-For": TELEGRAM_IP})
            await post(gw.base + "/hook/bot", BODY, {SIG: "0" * 64, "X-Forwarded-For": TELEGRAM_IP})
            await post(gw.base + "/nope", BODY)
            lines = [json.loads(line) for line in gw.log_lines()]
            requests = [entry for entry in lines if entry["event"] == "request"]
            assert [(r["route"], r["outcome"], r["status"]) for r in requests] == [
                ("bot", "forwarded", 200),
                ("bot", "rejected", 401),
                (None, "not_found", 404),
            ]
            assert requests[1]["check"] == "signature" and requests[1]["reason"] == "mismatch"
            assert requests[0]["client_ip"] == TELEGRAM_IP
            assert all(len(r["request_id"]) == 24 and r["duration_ms"] >= 0 for r in requests)
            text = gw.log.getvalue()
            for leaked in (HMAC_SECRET, sig, BODY.decode(), base64.b64encode(HMAC_SECRET.encode()).decode()):
                assert leaked not in text


async def test_request_duration_histogram_moves() -> None:
    async with (
        recording_upstream() as up,
        running_gateway(base_config([route(upstream=up.url, verify=tg_verify())])) as gw,
    ):
        await post(gw.base + "/hook/bot", BODY, {TG: TG_SECRET})
        await post(gw.base + "/hook/bot", BODY, {TG: "bad"})
        assert await gw.metric("webhook_gateway_request_duration_seconds_count", route="bot") == 2
        assert await gw.metric("webhook_gateway_upstream_duration_seconds_count", route="bot") == 1
