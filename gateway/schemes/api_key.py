"""`api-key`: a shared key in a named header or a named query parameter, compared as bytes in
constant time with every configured secret. Nothing is signed; a key in the query also lands in
every log that records URLs, so prefer a header where the sender allows one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gateway.reader import Problems, Reader, text
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_MISSING,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    indexed,
    match_any,
    one_header,
    query_values,
    secret_for_signing,
)
from gateway.schemes.template import header_name, prefix_option

_MAX_FIELDS = 64


@dataclass(frozen=True)
class ApiKeyOptions:
    header: str | None = None
    query: str | None = None
    prefix: str = ""  # e.g. "Bearer " before the key in the header


def _identity(secret: bytes) -> bytes:
    return secret


def _param(value: Any) -> str:
    name = text(value)
    if not name or not name.isascii() or any(c in name for c in "&=#? \t\r\n"):
        raise ValueError(f"{name!r} is not a query parameter name")
    return name


@dataclass(frozen=True)
class ApiKeyVerifier:
    options: ApiKeyOptions
    secrets: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        o = self.options
        if o.header is not None:
            given = one_header(req.headers, o.header)
            if isinstance(given, SigResult):
                return given
            prefix = o.prefix.encode("ascii")
            if not given.startswith(prefix):
                return FAIL_MALFORMED
            given = given[len(prefix) :]
        else:
            assert o.query is not None  # parse_options requires exactly one of header and query
            values = query_values(req.query, o.query, _MAX_FIELDS)
            if values is None:
                return FAIL_MALFORMED
            if not values:
                return FAIL_MISSING
            if len(values) > 1 or not values[0]:
                return FAIL_MALFORMED
            given = values[0].encode("utf-8")
        return match_any(self.secrets, given, _identity)


class ApiKeyScheme:
    name = "api-key"
    option_keys = frozenset({"header", "query", "prefix"})
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> ApiKeyOptions:
        header = r.get("header", header_name, None)
        query = r.get("query", _param, None)
        prefix = r.get("prefix", prefix_option, "")
        if r.has("header") == r.has("query"):
            problems.add(r.at, "api-key takes exactly one of header: NAME or query: NAME")
        if prefix and not r.has("header"):
            problems.add(r.loc("prefix"), "a prefix applies to a header key only")
        return ApiKeyOptions(header, query, prefix)

    def build(self, verify: VerifyConfig) -> ApiKeyVerifier:
        return ApiKeyVerifier(verify.options, indexed(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        o: ApiKeyOptions = verify.options
        key = secret_for_signing(verify).decode("utf-8")
        if o.header is not None:
            return Signature(((o.header, o.prefix + key),), req.query)
        param = f"{quote(o.query or '', safe='')}={quote(key, safe='')}"
        return Signature((), f"{req.query}&{param}" if req.query else param)
