"""Shared by tests/schemes: build a route's verifier from a config dict, and wrap wire input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from gateway import config as cfg
from gateway.schemes import SCHEMES
from gateway.schemes.base import Signature, Signed, ToSign, Verifier


def verify_config(verify: Mapping[str, Any], environ: Mapping[str, str]) -> cfg.VerifyConfig:
    c = cfg.build(
        {"routes": [{"name": "r", "path": "/r", "upstream": "http://127.0.0.1:1/", "verify": dict(verify)}]},
        environ=dict(environ),
    )
    v = c.routes[0].verify
    assert v is not None
    return v


def verifier(verify: Mapping[str, Any], environ: Mapping[str, str]) -> Verifier:
    v = verify_config(verify, environ)
    return SCHEMES[v.scheme].build(v)


def sign(verify: Mapping[str, Any], environ: Mapping[str, str], req: ToSign) -> Signature:
    v = verify_config(verify, environ)
    return SCHEMES[v.scheme].sign(v, req)


def signed(
    headers: list[tuple[str, str]] | Mapping[str, str], body: bytes, now: float, query: str = ""
) -> Signed:
    items = list(headers.items()) if isinstance(headers, Mapping) else headers
    return Signed(CIMultiDictProxy(CIMultiDict(items)), body, now, query)


def config_problems(verify: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    try:
        verify_config(verify, environ)
    except cfg.ConfigError as exc:
        return exc.problems
    return []


def flip(data: bytes, at: int) -> bytes:
    """The same bytes with one changed at `at` (negative counts from the end)."""
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
