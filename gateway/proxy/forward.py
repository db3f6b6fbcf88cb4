"""Byte-exact forwarding: hop-by-hop stripping, pooled upstream connections, timeouts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict
from yarl import URL

from gateway.config import Upstream
from gateway.http.client import Pool, RawResponse, Reason, Target, UpstreamFailure

# RFC 9110 section 7.6.1 plus the old ones proxies still see.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Headers the gateway itself sets upstream: an inbound copy is always dropped, and a client
# cannot get them removed by naming them in `Connection`.
GATEWAY_SET = frozenset(
    h.lower()
    for h in (
        "X-Webhook-Verdict",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Request-Id",
        "Forwarded",
        "X-Real-IP",
    )
)
# Recomputed or replaced by the client library for the upstream connection.
_REWRITTEN = frozenset({"host", "content-length", "expect"})
_DROP_REQUEST = HOP_BY_HOP | GATEWAY_SET | _REWRITTEN
_DROP_RESPONSE = HOP_BY_HOP | frozenset({"content-length"})
# The same sets as bytes, for headers passed through as they came off the wire.
_DROP_REQUEST_RAW = frozenset(h.encode("ascii") for h in _DROP_REQUEST)
_DROP_RESPONSE_RAW = frozenset(h.encode("ascii") for h in _DROP_RESPONSE)


_NONE: frozenset[bytes] = frozenset()


def _listed(raw: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names a `Connection` header lists (lowercase bytes): hop-by-hop too."""
    names: set[bytes] | None = None
    for name, value in raw:
        if name.lower() == b"connection":
            names = names or set()
            names.update(t.strip().lower() for t in value.split(b","))
    if names is None:
        return _NONE  # the usual case: nothing made
    names.discard(b"")
    return frozenset(names)


def _kept(raw: list[tuple[bytes, bytes]], drop: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    """The header lines to pass on, as they came: minus `drop` and what `Connection` names."""
    listed = _listed(raw)
    return [(n, v) for n, v in raw if (low := n.lower()) not in drop and low not in listed]


def request_head(raw: list[tuple[bytes, bytes]], extra: Iterable[tuple[str, str]]) -> bytes:
    """Header lines for the upstream, from the inbound headers exactly as they came off the
    wire: minus hop-by-hop, gateway-set and rewritten ones (and any a `Connection` header
    names, except the gateway-set ones, which are always ours), then the gateway's own.
    No decoding and re-encoding: the bytes the sender signed are the bytes the bot gets."""
    parts: list[bytes] = []
    for name, value in _kept(raw, _DROP_REQUEST_RAW):
        parts += (name, b": ", value, b"\r\n")
    for label, text in extra:
        parts += (label.encode("ascii"), b": ", text.encode("utf-8", "surrogateescape"), b"\r\n")
    head = b"".join(parts)
    # One CR and one LF per line, ours: a header carrying either would split the request
    # (llhttp refuses them inbound; checked again here, on the whole block at once).
    lines = len(parts) // 4
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise UpstreamError("malformed")  # a header with a line break: never written
    return head


def head_lines(head: bytes) -> list[tuple[str, str]]:
    """`request_head`'s lines as text pairs (what the spool stores), split back exactly:
    each line is `name: value` and holds no other CR or LF."""
    pairs: list[tuple[str, str]] = []
    for line in head.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b": ")
        pairs.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
    return pairs


def response_head(raw: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """The upstream's header lines for the client, as they came, minus hop-by-hop and
    Content-Length (the server frames the answer itself); and whether they carry a Date."""
    parts: list[bytes] = []
    date = False
    for name, value in _kept(raw, _DROP_RESPONSE_RAW):
        if b"\r" in value or b"\n" in value:
            continue  # llhttp does not pass these; never let one split our answer
        date = date or name.lower() == b"date"
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), date


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes


class UpstreamError(Exception):
    """Nothing usable came back: a 504 on a timeout, a 502 otherwise. `reason` says why in one
    word (see `upstream_client.Reason`); it goes into the access log."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason
        self.timeout = reason == "timeout"


class Forwarder:
    """Owns the upstream connection pools (one per upstream address); outlives config reloads."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, bool, str], Pool] = {}  # by address: (host or socket, tls, port)
        self._routes: dict[Upstream, tuple[Pool, bytes]] = {}  # each upstream URL parsed once

    def _pool(self, upstream: Upstream) -> tuple[Pool, bytes]:
        """The pool for `upstream`'s address, and the request path to send."""
        known = self._routes.get(upstream)
        if known is None:
            target, path = _target(upstream)
            key = (target.unix_socket or target.host, target.tls, str(target.port))
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = Pool(target)
            known = self._routes[upstream] = (pool, path)
        return known

    async def send_raw(
        self, upstream: Upstream, query: str, head: bytes, body: bytes, timeout: float
    ) -> RawResponse:
        """POST with header lines already serialised (`request_head`); the answer as it came."""
        return await self._exchange(upstream, "POST", query, head, body, timeout)

    async def send(
        self,
        upstream: Upstream,
        query: str,
        headers: CIMultiDict[str],
        body: bytes,
        timeout: float,
        method: str = "POST",
    ) -> UpstreamResponse:
        raw = await self._exchange(upstream, method, query, header_lines(headers), body, timeout)
        return UpstreamResponse(raw.status, raw.reason, response_headers_raw(raw.headers), raw.body)

    async def _exchange(
        self, upstream: Upstream, method: str, query: str, head: bytes, body: bytes, timeout: float
    ) -> RawResponse:
        pool, path = self._pool(upstream)
        target = path + (b"?" + query.encode("utf-8", "surrogateescape") if query else b"")
        data = serialise_request(method, target, pool.target.host_header, head, body)
        try:
            return await pool.request(data, timeout)
        except UpstreamFailure as exc:
            raise UpstreamError(exc.reason) from None

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._routes.clear()


def _target(upstream: Upstream) -> tuple[Target, bytes]:
    url = URL(upstream.url, encoded=True)
    tls = url.scheme == "https"
    host = url.raw_host or "localhost"
    port = url.port or (443 if tls else 80)
    default = port == (443 if tls else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = (shown if default else f"{shown}:{port}").encode("idna" if not host.isascii() else "ascii")
    path = (url.raw_path or "/").encode("ascii")
    return Target(host, port, upstream.unix_socket, tls, host_header), path


def header_lines(headers: CIMultiDict[str]) -> bytes:
    """Text headers as header lines; values go back to the exact bytes that came in."""
    parts: list[bytes] = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError("malformed")  # a header with a line break: never split a request
        parts += (name.encode("latin-1"), b": ", value.encode("utf-8", "surrogateescape"), b"\r\n")
    return b"".join(parts)


def serialise_request(method: str, target: bytes, host: bytes, head: bytes, body: bytes) -> bytes:
    """The request's bytes: our request line, Host and Content-Length; the header lines as
    given; the body untouched."""
    length = b"Content-Length: %d\r\n" % len(body) if body or method not in _NO_BODY_METHODS else b""
    return b"".join(
        (
            method.encode("ascii"),
            b" ",
            target,
            b" HTTP/1.1\r\nHost: ",
            host,
            b"\r\n",
            head,
            length,
            b"\r\n",
            body,
        )
    )


_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def response_headers_raw(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The upstream's headers as text: minus hop-by-hop and Content-Length (recomputed)."""
    return CIMultiDict(
        (n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in _kept(raw, _DROP_RESPONSE_RAW)
    )
