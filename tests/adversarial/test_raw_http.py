"""Malformed and ambiguous HTTP on a raw socket, against a real gateway process.

Every malformed request below carries the right secret token and a route that would forward
it, so the only thing wrong is the framing: a 2xx, or anything reaching the upstream, would be
the listener being talked into something. Each must get a 4xx or a close, and the upstream must
receive nothing. `test_valid_twin_is_forwarded` proves the same template does get through.
"""

from __future__ import annotations

import pytest

from tests.adversarial.harness import TG_PATH
from tests.support.env import TG_SECRET
from tests.support.metrics import metric
from tests.support.process import SyncGatewayProcess
from tests.support.rawclient import exchange, parse_responses
from tests.support.upstream import ThreadedUpstream

BODY = b'{"update_id":1}'
CHUNKED = b"f\r\n" + BODY + b"\r\n0\r\n\r\n"
TOKEN = f"X-Telegram-Bot-Api-Secret-Token: {TG_SECRET}\r\n".encode()


def request(
    framing: bytes = b"Content-Length: 15\r\n",
    body: bytes = BODY,
    line: bytes = b"POST " + TG_PATH.encode() + b" HTTP/1.1",
    host: bytes = b"Host: gw\r\n",
) -> bytes:
    return line + b"\r\n" + host + TOKEN + framing + b"\r\n" + body


VALID = request()

# name -> bytes. The brief's list first, then neighbours of each found while writing it.
MALFORMED: dict[str, bytes] = {
    # Content-Length and Transfer-Encoding together, both orders, and a smuggled request inside
    "cl-and-te": request(b"Content-Length: 15\r\nTransfer-Encoding: chunked\r\n", CHUNKED),
    "te-and-cl": request(b"Transfer-Encoding: chunked\r\nContent-Length: 15\r\n", CHUNKED),
    "cl0-te-smuggles-request": request(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n")
    + VALID,
    # duplicate / odd Content-Length
    "cl-duplicate-same": request(b"Content-Length: 15\r\nContent-Length: 15\r\n"),
    "cl-duplicate-different": request(b"Content-Length: 15\r\nContent-Length: 3\r\n"),
    "cl-list-3-3": request(b"Content-Length: 3, 3\r\n", b"abc"),
    "cl-plus-3": request(b"Content-Length: +3\r\n", b"abc"),
    "cl-minus": request(b"Content-Length: -3\r\n", b"abc"),
    "cl-hex": request(b"Content-Length: 0x3\r\n", b"abc"),
    "cl-overflow": request(b"Content-Length: 99999999999999999999999999999\r\n"),
    # Transfer-Encoding variants
    "te-two-lines": request(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", CHUNKED),
    "te-chunked-chunked": request(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED),
    "te-gzip-alone": request(b"Transfer-Encoding: gzip\r\n"),
    "te-gzip-chunked": request(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED),
    "te-identity-with-cl": request(b"Transfer-Encoding: identity\r\nContent-Length: 15\r\n"),
    "te-xchunked": request(b"Transfer-Encoding: xchunked\r\n", CHUNKED),
    "te-space-before-colon": request(b"Transfer-Encoding : chunked\r\n", CHUNKED),
    "te-vertical-tab": request(b"Transfer-Encoding: \x0bchunked\r\n", CHUNKED),
    # line folding, line endings, control bytes
    "obs-fold": request(b"X-Note: a\r\n b\r\nContent-Length: 15\r\n"),
    "obs-fold-te": request(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED),
    "bare-lf-everywhere": VALID.replace(b"\r\n", b"\n"),
    "bare-lf-in-header": request(b"X-A: 1\nContent-Length: 15\r\n"),
    "bare-cr-in-header": request(b"X-A: 1\rContent-Length: 15\r\n"),
    "nul-in-header-value": request(b"X-A: a\x00b\r\nContent-Length: 15\r\n"),
    "nul-in-header-name": request(b"X-\x00A: b\r\nContent-Length: 15\r\n"),
    "space-before-colon": request(b"Content-Length : 15\r\n"),
    # Host
    "host-duplicate": request(b"Host: other\r\nContent-Length: 15\r\n"),
    "host-missing-http11": request(host=b""),
    # request line versions
    "http-2.0-line": request(line=b"POST " + TG_PATH.encode() + b" HTTP/2.0"),
    "http-0.9-line": request(line=b"POST " + TG_PATH.encode() + b" HTTP/0.9"),
    "http-0.9-no-version": b"POST " + TG_PATH.encode() + b"\r\n\r\n",
    "http-1.2-line": request(line=b"POST " + TG_PATH.encode() + b" HTTP/1.2"),
    "http-3.0-line": request(line=b"POST " + TG_PATH.encode() + b" HTTP/3.0"),
    # limits
    "header-line-over-limit": request(b"X-Long: " + b"a" * 9000 + b"\r\nContent-Length: 15\r\n"),
    "request-line-over-limit": request(line=b"POST " + TG_PATH.encode() + b"?" + b"a" * 9000 + b" HTTP/1.1"),
    "too-many-headers": request(
        b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"Content-Length: 15\r\n"
    ),
    # chunked framing
    "chunk-size-overflow": request(b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffffffff\r\n" + BODY),
    "chunk-size-overflow-2^64": request(b"Transfer-Encoding: chunked\r\n", b"10000000000000000\r\n" + BODY),
    "chunk-size-negative": request(b"Transfer-Encoding: chunked\r\n", b"-f\r\n" + BODY + b"\r\n0\r\n\r\n"),
    "chunk-bare-lf": request(b"Transfer-Encoding: chunked\r\n", b"f\n" + BODY + b"\n0\n\n"),
    # a bad request followed by a good one on the same connection: the good one must not run
    "bad-then-pipelined-valid": request(b"Content-Length: 15\r\nContent-Length: 3\r\n") + VALID,
    "http2-then-pipelined-valid": request(line=b"POST " + TG_PATH.encode() + b" HTTP/2.0") + VALID,
    "te-gzip-then-pipelined-valid": request(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED) + VALID,
}


def _requests_bad(gw: SyncGatewayProcess) -> float:
    return metric(gw.metrics_text(), "webhook_gateway_requests_total", route="-", outcome="bad_request")


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_4xx_or_close_and_never_reaches_upstream(
    gateway: SyncGatewayProcess, upstream: ThreadedUpstream, name: str
) -> None:
    before_fwd = len(upstream.received)
    before_bad = _requests_bad(gateway)
    data, closed = exchange(gateway.public_port, [MALFORMED[name]], read_timeout=8.0)
    responses = parse_responses(data)
    assert responses or closed, "neither an answer nor a close"
    assert all(400 <= r.status < 500 for r in responses), [(r.status, r.body) for r in responses]
    assert len(responses) <= 1, "a second (pipelined) request was answered after a bad one"
    assert len(upstream.received) == before_fwd, upstream.received[before_fwd:]
    if responses and responses[0].status == 400:
        assert responses[0].body == b'{"error": "bad_request"}'  # never an echo of the input
        assert _requests_bad(gateway) == before_bad + 1
    assert not gateway.problems()


def test_valid_twin_is_forwarded(gateway: SyncGatewayProcess, upstream: ThreadedUpstream) -> None:
    """The template above is fine when its framing is: the malformed cases test only framing."""
    before = len(upstream.received)
    two = VALID + VALID.replace(b"Content-Length: 15\r\n", b"Transfer-Encoding: chunked\r\n").replace(
        BODY, CHUNKED
    )
    data, _ = exchange(
        gateway.public_port, [two + b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"]
    )
    statuses = [r.status for r in parse_responses(data)]
    assert statuses == [200, 200, 404]
    got = upstream.received[before:]
    assert [r.body for r in got] == [BODY, BODY]
    assert all(r.path_qs == "/tg" and r.header("Transfer-Encoding") is None for r in got)


def test_http10_and_tab_and_case_in_transfer_coding_are_accepted(
    gateway: SyncGatewayProcess, upstream: ThreadedUpstream
) -> None:
    """Legal spellings still work: the strictness above is not a blanket refusal."""
    before = len(upstream.received)
    cases = [
        request(line=b"POST " + TG_PATH.encode() + b" HTTP/1.0"),
        request(b"Transfer-Encoding:\tCHUNKED\r\n", CHUNKED),
        request(b"Expect: 100-continue\r\nContent-Length: 15\r\n"),
    ]
    for data in cases:
        raw, _ = exchange(
            gateway.public_port, [data.replace(b"Host: gw\r\n", b"Host: gw\r\nConnection: close\r\n")]
        )
        assert [r.status for r in parse_responses(raw) if r.status != 100] == [200], raw[:200]
    assert [r.body for r in upstream.received[before:]] == [BODY] * len(cases)
