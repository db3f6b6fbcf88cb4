"""Byte-exact forwarding: hop-by-hop stripping, pooled upstream connections, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import Upstream

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
    """Owns the upstream connection pools; outlives config reloads."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, upstream: Upstream) -> aiohttp.ClientSession:
        key = upstream.pool_key
        session = self._sessions.get(key)
        if session is None:
            connector: aiohttp.BaseConnector
            if upstream.unix_socket:
                connector = aiohttp.UnixConnector(path=upstream.unix_socket, limit=0)
            else:
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # what was verified is what is forwarded
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[key] = session
        return session

    async def send(
        self,
        upstream: Upstream,
        query: str,
        headers: CIMultiDict[str],
        body: bytes,
        timeout: float,
        method: str = "POST",
    ) -> UpstreamResponse:
        url = upstream.url + ("?" + query if query else "")
        session = self._session(upstream)
        try:
            async with asyncio.timeout(timeout):
                async with session.request(
                    method,
                    aiohttp.client.URL(url, encoded=True),
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    compress=None,
                ) as resp:
                    data = await resp.read()
                    return UpstreamResponse(
                        resp.status, resp.reason or "", response_headers(resp.headers), data
                    )
        except TimeoutError:
            raise UpstreamError(True, "upstream timed out") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(False, type(exc).__name__) from None

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
