"""Header lines passed through as bytes: what is dropped, what is added, what is refused."""

from __future__ import annotations

import pytest

from gateway.proxy.forward import UpstreamError, request_head, response_head

EXTRA = [("X-Forwarded-For", "149.154.167.220"), ("X-Webhook-Verdict", "pass")]


def test_inbound_lines_pass_byte_for_byte_and_ours_are_appended() -> None:
    raw = [
        (b"Host", b"gw.example"),
        (b"Content-Type", b"application/json; charset=\xe9"),  # latin-1 byte, kept as is
        (b"X-Telegram-Bot-Api-Secret-Token", b"s3cret"),
        (b"x-custom", b"  spaced  value"),
        (b"Content-Length", b"15"),
    ]
    head = request_head(raw, EXTRA)
    assert head == (
        b"Content-Type: application/json; charset=\xe9\r\n"
        b"X-Telegram-Bot-Api-Secret-Token: s3cret\r\n"
        b"x-custom:   spaced  value\r\n"
        b"X-Forwarded-For: 149.154.167.220\r\n"
        b"X-Webhook-Verdict: pass\r\n"
    )


def test_hop_by_hop_gateway_set_and_connection_listed_are_dropped() -> None:
    raw = [
        (b"Connection", b"keep-alive, X-Drop-Me, x-webhook-verdict"),
        (b"X-Drop-Me", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Expect", b"100-continue"),
        (b"X-Webhook-Verdict", b"pass"),  # forged by the client
        (b"X-Forwarded-For", b"1.2.3.4"),
        (b"X-Real-IP", b"1.2.3.4"),
        (b"Forwarded", b"for=1.2.3.4"),
        (b"X-Request-Id", b"mine"),
        (b"X-Keep", b"yes"),
    ]
    head = request_head(raw, EXTRA)
    # Naming a gateway-set header in Connection cannot remove the gateway's own copy.
    assert head == b"X-Keep: yes\r\nX-Forwarded-For: 149.154.167.220\r\nX-Webhook-Verdict: pass\r\n"


@pytest.mark.parametrize("value", [b"a\r\nInjected: 1", b"a\nb", b"a\rb"])
def test_a_line_break_anywhere_refuses_the_request(value: bytes) -> None:
    with pytest.raises(UpstreamError):
        request_head([(b"X-A", value)], EXTRA)
    with pytest.raises(UpstreamError):
        request_head([], [("X-Request-Id", value.decode())])


def test_response_lines_drop_framing_and_say_whether_a_date_came() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"11"),
        (b"Connection", b"close, X-Internal"),
        (b"X-Internal", b"secret-ish"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert response_head(raw) == (
        b"Content-Type: application/json\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
        False,
    )
    assert response_head([(b"date", b"Mon, 23 Nov 2026 07:00:00 GMT")]) == (
        b"date: Mon, 23 Nov 2026 07:00:00 GMT\r\n",
        True,
    )
