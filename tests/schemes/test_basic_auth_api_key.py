"""basic-auth and api-key: unit tables, `check` errors, `sign`, and both through a real gateway."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from gateway.schemes.base import ToSign
from tests.support.inprocess import base_config, post, route, running_gateway
from tests.support.schemes import config_problems, sign, signed, verifier
from tests.support.upstream import recording_upstream

ENV = {"B": "bot:pa:ss w0rd", "B2": "old:creds", "K": "key-0123456789", "K2": "key-old"}
BASIC = {"scheme": "basic-auth", "secrets": ["env:B2", "env:B"]}


def basic(credentials: bytes, kind: str = "Basic") -> dict[str, str]:
    # RFC 7617: "Basic " + base64(user-id ":" password).
    return {"Authorization": f"{kind} " + base64.b64encode(credentials).decode()}


@pytest.mark.parametrize(
    ("headers", "ok", "reason"),
    [
        (basic(b"bot:pa:ss w0rd"), True, None),
        (basic(b"bot:pa:ss w0rd", "basic"), True, None),
        (basic(b"old:creds"), True, None),
        (basic(b"bot:pa:ss w0rD"), False, "mismatch"),
        (basic(b"bot"), False, "malformed"),
        ({"Authorization": "Basic not*base64"}, False, "malformed"),
        ({"Authorization": "Bearer abc"}, False, "malformed"),
        ({}, False, "missing"),
    ],
)
def test_basic_auth(headers: dict[str, str], ok: bool, reason: str | None) -> None:
    r = verifier(BASIC, ENV).verify(signed(headers, b"{}", 0))
    assert (r.ok, r.reason) == (ok, reason)


def test_basic_auth_rotation_index_and_sign() -> None:
    assert verifier(BASIC, ENV).verify(signed(basic(b"bot:pa:ss w0rd"), b"", 0)).secret_index == 1
    out = sign({"scheme": "basic-auth", "secrets": ["env:B"]}, ENV, ToSign(b"{}", 0))
    assert out.headers == (("Authorization", "Basic " + base64.b64encode(b"bot:pa:ss w0rd").decode()),)


def header_key(**over: Any) -> dict[str, Any]:
    return {"scheme": "api-key", "secrets": ["env:K", "env:K2"], "header": "X-Api-Key", **over}


def query_key(**over: Any) -> dict[str, Any]:
    return {"scheme": "api-key", "secrets": ["env:K", "env:K2"], "query": "token", **over}


@pytest.mark.parametrize(
    ("conf", "headers", "query", "reason"),
    [
        (header_key(), {"X-Api-Key": "key-0123456789"}, "", None),
        (header_key(), {"X-Api-Key": "key-old"}, "", None),
        (header_key(), {"X-Api-Key": "key-012345678"}, "", "mismatch"),
        (header_key(), {}, "token=key-0123456789", "missing"),
        (header_key(prefix="Bearer "), {"X-Api-Key": "Bearer key-0123456789"}, "", None),
        (header_key(prefix="Bearer "), {"X-Api-Key": "key-0123456789"}, "", "malformed"),
        (query_key(), {}, "a=1&token=key-0123456789", None),
        (query_key(), {}, "token=key%2D0123456789", None),
        (query_key(), {}, "token=key-0", "mismatch"),
        (query_key(), {}, "token=key-0123456789&token=key-0123456789", "malformed"),
        (query_key(), {}, "token=", "malformed"),
        (query_key(), {}, "token=%FF", "malformed"),
        (query_key(), {"X-Api-Key": "key-0123456789"}, "", "missing"),
    ],
)
def test_api_key(conf: dict[str, Any], headers: dict[str, str], query: str, reason: str | None) -> None:
    r = verifier(conf, ENV).verify(signed(headers, b"{}", 0, query))
    assert (r.ok, r.reason) == (reason is None, reason)


def test_api_key_sign() -> None:
    out = sign(query_key(), ENV, ToSign(b"{}", 0, query="a=1"))
    assert (out.headers, out.query) == ((), "a=1&token=key-0123456789")
    out = sign(header_key(prefix="Bearer "), ENV, ToSign(b"{}", 0))
    assert out.headers == (("X-Api-Key", "Bearer key-0123456789"),)


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        (
            {"scheme": "basic-auth", "secrets": ["env:K"]},
            "secrets[0]: secret from env:K: a basic-auth secret is user:password",
        ),
        ({"scheme": "basic-auth", "secrets": ["env:B"], "header": "X"}, "verify.header: unknown key"),
        (
            {"scheme": "api-key", "secrets": ["env:K"]},
            "api-key takes exactly one of header: NAME or query: NAME",
        ),
        (header_key(query="t"), "api-key takes exactly one of header: NAME or query: NAME"),
        (header_key(header="X Key"), "verify.header: 'X Key' is not a header name"),
        (query_key(query="a&b"), "verify.query: 'a&b' is not a query parameter name"),
        (query_key(prefix="Bearer "), "verify.prefix: a prefix applies to a header key only"),
    ],
)
def test_check_errors(verify: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in config_problems(verify, ENV)), config_problems(verify, ENV)


async def test_through_the_gateway() -> None:
    async with recording_upstream() as up:
        routes = [
            route("ba", upstream=up.url, verify=BASIC),
            route("qk", upstream=up.url, verify=query_key()),
        ]
        async with running_gateway(base_config(routes), ENV) as gw:
            status, _, _ = await post(f"{gw.base}/hook/ba", b'{"a":1}', basic(b"bot:pa:ss w0rd"))
            assert status == 200
            status, _, _ = await post(f"{gw.base}/hook/ba", b'{"a":2}', basic(b"bot:guess"))
            assert status == 401
            status, _, _ = await post(f"{gw.base}/hook/qk?token=key-old", b'{"a":3}')
            assert status == 200
            async with aiohttp.ClientSession() as s, s.post(f"{gw.base}/hook/qk?token=nope", data=b"{}") as r:
                assert r.status == 401
            assert [r.body for r in up.received] == [b'{"a":1}', b'{"a":3}']
            assert "pa:ss" not in gw.log.getvalue()
            assert "key-old" not in gw.log.getvalue()  # the access log records no query string
