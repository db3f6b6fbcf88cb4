"""The one small protocol every signature scheme implements, and shared header helpers."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from multidict import CIMultiDictProxy

if TYPE_CHECKING:
    from gateway.config import Problems, Reader, VerifyConfig

MISSING = "missing"
MISMATCH = "mismatch"
MALFORMED = "malformed"
STALE = "stale"


@dataclass(frozen=True, slots=True)
class SigResult:
    ok: bool
    reason: str | None = None  # missing | mismatch | malformed | stale
    secret_index: int | None = None  # which configured secret matched, by position


@dataclass(frozen=True, slots=True)
class Signed:
    """What a verifier may look at: the raw wire bytes and headers, nothing parsed."""

    headers: CIMultiDictProxy[str]
    body: bytes
    now: float  # injected clock, seconds since the epoch
    query: str = ""  # raw query string, for schemes that sign the URL


class Verifier(Protocol):
    def verify(self, req: Signed) -> SigResult: ...


class Scheme(Protocol):
    """A scheme is parsed from config (pure) and then built into a `Verifier`."""

    name: str
    option_keys: frozenset[str]
    # Header a replay check can use as its natural key (None: use update_id or body hash).
    replay_header: str | None

    def check_secret(self, value: bytes) -> str | None: ...

    def parse_options(self, r: Reader, problems: Problems) -> Any: ...

    def build(self, verify: VerifyConfig) -> Verifier: ...


OK_NO_INDEX = SigResult(True)
FAIL_MISSING = SigResult(False, MISSING)
FAIL_MISMATCH = SigResult(False, MISMATCH)
FAIL_MALFORMED = SigResult(False, MALFORMED)
FAIL_STALE = SigResult(False, STALE)


def one_header(headers: Mapping[str, str] | CIMultiDictProxy[str], name: str) -> bytes | SigResult:
    """The single value of `name` as raw bytes, or the failure it amounts to.

    Absent -> missing; empty, repeated or non-ASCII -> malformed. Never raises.
    """
    values = (
        headers.getall(name, ())
        if isinstance(headers, CIMultiDictProxy)
        else ([headers[name]] if name in headers else [])
    )
    if not values:
        return FAIL_MISSING
    if len(values) > 1:
        return FAIL_MALFORMED
    raw = values[0].encode("utf-8", "surrogateescape")
    if not raw or not raw.isascii():
        return FAIL_MALFORMED
    return raw


def match_any(
    secrets: tuple[tuple[int, bytes], ...], given: bytes, expected_for: Callable[[bytes], bytes]
) -> SigResult:
    """Compare `given` with the value each secret yields, in constant time, on bytes.

    Every secret is tried (no early exit), so timing does not tell which position matched.
    """
    matched: int | None = None
    for index, secret in secrets:
        if hmac.compare_digest(expected_for(secret), given) and matched is None:
            matched = index
    if matched is None:
        return FAIL_MISMATCH
    return SigResult(True, None, matched)


def indexed(verify: VerifyConfig) -> tuple[tuple[int, bytes], ...]:
    return tuple((s.index, s.value) for s in verify.secrets)
