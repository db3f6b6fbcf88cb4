"""Byte-exact forwarding: hop-by-hop stripping, pooled upstream connections, timeouts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config import Upstream
from gateway.upstream_client import Pool, Target, UpstreamFailure, UpstreamTimeout

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


def connection_listed(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    names: set[str] = set()
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


def request_headers(inbound: CIMultiDictProxy[str], extra: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Headers for the upstream: inbound minus hop-by-hop and gateway-set, then ours."""
    listed = connection_listed(inbound) if "Connection" in inbound else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in inbound.items():
        low = name.lower()
        if low in _DROP_REQUEST:
            continue
        if listed and low in listed:
            continue
        out.add(name, value)
    for name, value in extra:
        out.add(name, value)
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    listed = connection_listed(upstream) if "Connection" in upstream else frozenset()
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        low = name.lower()
        if low in _DROP_RESPONSE or (listed and low in listed):
            continue
        out.add(name, value)
    return out


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes


class UpstreamError(Exception):
    def __init__(self, timeout: bool, detail: str) -> None:
        super().__init__(detail)
        self.timeout = timeout


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

    async def send(
        self,
        upstream: Upstream,
        query: str,
        headers: CIMultiDict[str],
        body: bytes,
        timeout: float,
        method: str = "POST",
    ) -> UpstreamResponse:
        pool, path = self._pool(upstream)
        target = path + (b"?" + query.encode("utf-8", "surrogateescape") if query else b"")
        data = serialise_request(method, target, pool.target.host_header, headers, body)
        try:
            raw = await pool.request(data, timeout)
        except UpstreamTimeout:
            raise UpstreamError(True, "upstream timed out") from None
        except UpstreamFailure as exc:
            raise UpstreamError(False, type(exc).__name__) from None
        return UpstreamResponse(raw.status, raw.reason, response_headers_raw(raw.headers), raw.body)

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


def serialise_request(
    method: str, target: bytes, host: bytes, headers: CIMultiDict[str], body: bytes
) -> bytes:
    """The request's bytes: our request line, Host and Content-Length; the headers as given;
    the body untouched. Header values go back to the exact bytes that came in."""
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError(False, "header with a line break")  # never split a request
        parts += (name.encode("latin-1"), b": ", value.encode("utf-8", "surrogateescape"), b"\r\n")
    if body or method not in _NO_BODY_METHODS:
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def response_headers_raw(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The upstream's headers for the client: minus hop-by-hop and Content-Length (recomputed)."""
    listed: frozenset[str] = frozenset()
    for name, value in raw:
        if name.lower() == b"connection":
            listed |= {t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in raw:
        text = name.decode("latin-1")
        low = text.lower()
        if low in _DROP_RESPONSE or (listed and low in listed):
            continue
        out.add(text, value.decode("utf-8", "surrogateescape"))
    return out
