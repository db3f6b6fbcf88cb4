"""The one small protocol every signature scheme implements, and shared header helpers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qsl

from multidict import CIMultiDictProxy

from gateway.reader import Problems, Reader, Secret, parse_duration

MISSING = "missing"
MISMATCH = "mismatch"
MALFORMED = "malformed"
STALE = "stale"


# Both are NamedTuples, immutable like the frozen dataclasses they were: one of each is made
# per verified request, and a frozen dataclass sets each field through object.__setattr__.
class SigResult(NamedTuple):
    ok: bool
    reason: str | None = None  # missing | mismatch | malformed | stale
    secret_index: int | None = None  # which configured secret matched, by position


class Signed(NamedTuple):
    """What a verifier may look at: the raw wire bytes and headers, nothing parsed."""

    headers: CIMultiDictProxy[str]
    body: bytes
    now: float  # injected clock, seconds since the epoch
    query: str = ""  # raw query string as it came on the wire (not decoded), for schemes that sign the URL


class Verifier(Protocol):
    def verify(self, req: Signed) -> SigResult: ...


@dataclass(frozen=True)
class VerifyConfig:
    """A route's `verify:` section: the scheme, its secrets in order, and its own options."""

    scheme: str
    secrets: tuple[Secret, ...]
    options: Any  # the scheme's own frozen options object
    on_missing: str = "reject"  # reject | allow


@dataclass(frozen=True, slots=True)
class ToSign:
    """What `webhook-gateway sign` signs, as the sender would."""

    body: bytes
    now: int  # the timestamp a timestamped scheme puts in its headers
    content_type: str = "application/json"
    query: str = ""  # the raw query string the request will carry
    message_id: str = ""  # the delivery id, for schemes that sign one (standard-webhooks)
    private_key: bytes = b""  # the asymmetric schemes sign with it (PEM or the sender's own form)
    cert_url: str = ""  # sns: the SigningCertURL to put in the message


@dataclass(frozen=True, slots=True)
class Signature:
    """Headers a sender would send; `query` is the query string to send them with (Twilio signs it)."""

    headers: tuple[tuple[str, str], ...]
    query: str = ""
    body: bytes | None = None  # a scheme that signs fields inside the body (sns) sends this body


class Scheme(Protocol):
    """A scheme is parsed from config (pure) and then built into a `Verifier`.

    A scheme with a GET verification handshake (Meta) also has
    `build_handshake(verify) -> Handshake | None`, and one whose sender sends signed POST
    handshakes `build_challenge(verify) -> Challenge | None` (gateway/schemes/handshake.py); the
    snapshot looks them up with getattr, so the schemes without one need no stub.
    """

    name: str
    option_keys: frozenset[str]

    @property
    def replay_header(self) -> str | None:
        """Header a replay check can use as its natural key (None: use update_id or body hash)."""
        ...

    def check_secret(self, value: bytes) -> str | None: ...

    def parse_options(self, r: Reader, problems: Problems) -> Any: ...

    def build(self, verify: VerifyConfig) -> Verifier: ...

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        """The headers the sender would send for `req`, signed with the first configured secret."""
        ...


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


def query_values(raw_query: str, name: str, max_fields: int) -> list[str] | None:
    """Every value of `name` in a raw (percent-encoded) query, decoded strictly as UTF-8; None
    when the query is malformed or holds more than `max_fields` fields. Never raises."""
    try:
        pairs = parse_qsl(
            raw_query, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=max_fields
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return [value for key, value in pairs if key == name]


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


def secret_for_signing(verify: VerifyConfig) -> bytes:
    """The secret a sender signs with: the first one listed (the rest are rotation leftovers)."""
    return verify.secrets[0].value


_LOWER_HEX = re.compile(rb"[0-9a-f]+")
_TIMESTAMP = re.compile(rb"0|[1-9][0-9]{0,14}")


def lower_hex_digest(raw: bytes, size: int) -> bytes | None:
    """Exactly `2*size` lowercase hex digits -> digest; anything else -> None.

    The senders that use hex (GitHub, Meta, Slack, Stripe) document lowercase and their own
    SDKs compare strings, so an uppercase digest never verifies there either.
    """
    if len(raw) != size * 2 or not _LOWER_HEX.fullmatch(raw):
        return None
    return bytes.fromhex(raw.decode("ascii"))


def base64_digest(raw: bytes, size: int) -> bytes | None:
    """Standard padded base64 of exactly `size` bytes -> digest; anything else -> None."""
    try:
        digest = base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        return None
    return digest if len(digest) == size else None


def parse_timestamp(raw: bytes) -> int | None:
    """Whole seconds since the epoch, digits only (no sign, space, fraction or leading zero)."""
    if not _TIMESTAMP.fullmatch(raw):
        return None
    return int(raw)


DEFAULT_TOLERANCE = 300.0


@dataclass(frozen=True)
class TimestampOptions:
    """Options of the timestamped schemes (slack, stripe, standard-webhooks)."""

    tolerance: float = DEFAULT_TOLERANCE  # seconds, either side of the gateway's clock


def parse_tolerance(r: Reader) -> TimestampOptions:
    return TimestampOptions(r.get("tolerance", parse_duration, DEFAULT_TOLERANCE))


def is_stale(timestamp: int, now: float, tolerance: float) -> bool:
    """Outside the tolerance in either direction: too old is a replay, too new a forged clock."""
    return abs(now - timestamp) > tolerance


def match_any_of(
    secrets: tuple[tuple[int, bytes], ...],
    given: tuple[bytes, ...],
    expected_for: Callable[[bytes], bytes],
) -> SigResult:
    """`match_any` for headers that carry several signatures (Stripe, Standard Webhooks).

    Every secret is compared with every signature given, with no early exit.
    """
    matched: int | None = None
    for index, secret in secrets:
        expected = expected_for(secret)
        for candidate in given:
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = index
    if matched is None:
        return FAIL_MISMATCH
    return SigResult(True, None, matched)


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    # hmac.digest: OpenSSL's one-shot HMAC, several times cheaper than an hmac.new object.
    return hmac.digest(key, parts[0] if len(parts) == 1 else b"".join(parts), "sha256")


@dataclass(frozen=True)
class HubSignatureVerifier:
    """`X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the raw body>` (GitHub, Meta)."""

    secrets: tuple[tuple[int, bytes], ...]
    header: str = "X-Hub-Signature-256"

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, self.header)
        if isinstance(given, SigResult):
            return given
        if not given.startswith(b"sha256="):
            return FAIL_MALFORMED
        digest = lower_hex_digest(given[len(b"sha256=") :], hashlib.sha256().digest_size)
        if digest is None:
            return FAIL_MALFORMED
        body = req.body
        return match_any(self.secrets, digest, lambda key: hmac_sha256(key, body))


def hub_signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac_sha256(key, body).hex()


def _identity(secret: bytes) -> bytes:
    return secret


@dataclass(frozen=True)
class TokenVerifier:
    """A plain shared token in one header (Telegram, GitLab): the sender signs nothing, so the
    token itself is compared as bytes, in constant time, with every configured secret."""

    header: str
    secrets: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, self.header)
        if isinstance(given, SigResult):
            return given
        return match_any(self.secrets, given, _identity)
