"""`hmac-template`: an HMAC over a string the route describes, for senders that sign more than the body.

The template names what the sender concatenates, e.g. `v0:{header:X-Zm-Request-Timestamp}:{body}`:
literal text, `{body}` (the raw body bytes), `{header:NAME}` (one header's raw value) and `{query}`
(the raw query string); `{{` and `}}` are literal braces. The digest travels in one of
`signature_headers` (the first present ones are all tried: Box sends a primary and a secondary),
after an optional `prefix`, as hex, base64 or base64url. An optional `timestamp_header` (which the
template must sign) is refused outside `tolerance`. With `secret_encoding: base64` the key is the
base64-decoded secret (Microsoft Teams). The presets (gateway/schemes/presets.py) are this scheme
with its options written down.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import re
import secrets as secrets_
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.reader import Problems, Reader, choice, parse_duration, resolve_secret, text
from gateway.schemes.base import (
    DEFAULT_TOLERANCE,
    FAIL_MALFORMED,
    FAIL_STALE,
    MISSING,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    match_any_of,
    one_header,
)

ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
ENCODINGS = ("hex", "base64", "base64url")
TIMESTAMP_FORMATS = ("unix", "unix-ms", "rfc3339")
_MAX_SIGNATURE_HEADERS = 4
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_B64URL = re.compile(rb"[A-Za-z0-9_-]+={0,2}")
_UNIX = re.compile(rb"0|[1-9][0-9]{0,15}")
_RFC3339 = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    rb"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


# ---------------------------------------------------------------- the template


@dataclass(frozen=True, slots=True)
class Part:
    kind: str  # literal | body | header | query
    value: str = ""  # the literal text, or the header name


def parse_template(template: str) -> tuple[Part, ...]:
    """`v0:{header:X-Ts}:{body}` -> parts; raises ValueError saying what is wrong and where."""
    if not template.isascii():
        raise ValueError("a template is ASCII")
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(template):
        c = template[i]
        if c in "{}" and template[i : i + 2] in ("{{", "}}"):
            literal.append(c)
            i += 2
            continue
        if c == "}":
            raise ValueError(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
        if c != "{":
            literal.append(c)
            i += 1
            continue
        end = template.find("}", i)
        if end < 0:
            raise ValueError(f"unclosed '{{' at position {i}")
        name = template[i + 1 : end]
        if literal:
            parts.append(Part("literal", "".join(literal)))
            literal = []
        if name in ("body", "query"):
            parts.append(Part(name))
        elif name.startswith("header:") and _HEADER_NAME.fullmatch(name[len("header:") :]):
            parts.append(Part("header", name[len("header:") :]))
        else:
            raise ValueError(f"unknown placeholder {{{name}}} (known: {{body}}, {{query}}, {{header:NAME}})")
        i = end + 1
    if literal:
        parts.append(Part("literal", "".join(literal)))
    if not any(p.kind == "body" for p in parts):
        raise ValueError("a template must sign {body}: otherwise any body would pass")
    return tuple(parts)


def render(parts: tuple[Part, ...], req: Signed) -> bytes | SigResult:
    """The signed string, from the raw request; a signed header that is absent or repeated is
    malformed (the signature header itself was there)."""
    out: list[bytes] = []
    for p in parts:
        if p.kind == "literal":
            out.append(p.value.encode("ascii"))
        elif p.kind == "body":
            out.append(req.body)
        elif p.kind == "query":
            out.append(req.query.encode("utf-8", "surrogateescape"))
        else:
            value = one_header(req.headers, p.value)
            if isinstance(value, SigResult):
                return FAIL_MALFORMED
            out.append(value)
    return b"".join(out)


# ---------------------------------------------------------------- digests and timestamps


def decode_digest(raw: bytes, encoding: str, size: int) -> bytes | None:
    """Strictly decode a transmitted digest of `size` bytes; None when it is not one."""
    try:
        if encoding == "hex":
            if len(raw) != size * 2 or not _HEX.fullmatch(raw):
                return None
            return bytes.fromhex(raw.decode("ascii"))
        if encoding == "base64url":
            # Padding is optional in base64url (RFC 4648 section 5); the alphabet is not.
            if not _B64URL.fullmatch(raw):
                return None
            raw = raw.rstrip(b"=")
            digest = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        else:
            digest = base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        return None
    return digest if len(digest) == size else None


def encode_digest(digest: bytes, encoding: str) -> str:
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return base64.b64encode(digest).decode()


def parse_timestamp(raw: bytes, fmt: str) -> float | None:
    """Seconds since the epoch from a `unix`, `unix-ms` or `rfc3339` header; None when malformed."""
    if fmt in ("unix", "unix-ms"):
        if not _UNIX.fullmatch(raw):
            return None
        return int(raw) / (1000 if fmt == "unix-ms" else 1)
    m = _RFC3339.fullmatch(raw)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        return None
    seconds = calendar.timegm((y, mo, d, h, mi, min(s, 59), 0, 0, 0))
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == b"+" else -offset
    return seconds + (float(m.group(7)) if m.group(7) else 0.0)


def format_timestamp(now: int, fmt: str) -> str:
    if fmt == "unix":
        return str(now)
    if fmt == "unix-ms":
        return str(now * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


# ---------------------------------------------------------------- options


@dataclass(frozen=True)
class TemplateOptions:
    parts: tuple[Part, ...]
    template: str
    signature_headers: tuple[str, ...]
    prefix: str = ""
    encoding: str = "hex"
    algorithm: str = "sha256"
    timestamp_header: str | None = None
    timestamp_format: str = "unix"
    tolerance: float = DEFAULT_TOLERANCE
    secret_encoding: str = "raw"  # noqa: S105 (raw | base64: an encoding name, not a secret)


OPTION_KEYS = frozenset(
    {
        "template",
        "signature_header",
        "signature_headers",
        "prefix",
        "encoding",
        "algorithm",
        "timestamp_header",
        "timestamp_format",
        "tolerance",
        "secret_encoding",
    }
)


def header_name(value: Any) -> str:
    name = text(value)
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    return name


def prefix_option(value: Any) -> str:
    p = text(value)
    if not p.isascii() or any(c in p for c in "\r\n"):
        raise ValueError("a prefix is ASCII on one line")
    return p


def _template(value: Any) -> tuple[str, tuple[Part, ...]]:
    t = text(value)
    return t, parse_template(t)


def decode_secret(value: bytes, encoding: str) -> bytes | None:
    """The HMAC key for a configured secret: itself, or its base64 decoding (None if not base64)."""
    if encoding == "raw":
        return value
    try:
        key = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return None
    return key or None


def parse_template_options(r: Reader, problems: Problems) -> TemplateOptions | None:
    """The options of `hmac-template` (and of each preset, whose data is read the same way)."""
    before = len(problems)
    template, parts = r.get("template", _template, ("", ()), required=True)
    if r.has("signature_header") and r.has("signature_headers"):
        problems.add(r.loc("signature_headers"), "give signature_header or signature_headers, not both")
    headers: tuple[str, ...] = ()
    if r.has("signature_headers"):
        listed = r.list("signature_headers") or []
        if not 1 <= len(listed) <= _MAX_SIGNATURE_HEADERS:
            problems.add(r.loc("signature_headers"), f"list 1 to {_MAX_SIGNATURE_HEADERS} header names")
        try:
            headers = tuple(header_name(h) for h in listed)
        except ValueError as exc:
            problems.add(r.loc("signature_headers"), str(exc))
    else:
        one = r.get("signature_header", header_name, None, required=True)
        headers = (one,) if one else ()
    ts_header = r.get("timestamp_header", header_name, None)
    ts_format = r.get("timestamp_format", choice(*TIMESTAMP_FORMATS), "unix")
    tolerance = r.get("tolerance", parse_duration, DEFAULT_TOLERANCE)
    if ts_header is None:
        for key in ("timestamp_format", "tolerance"):
            if r.has(key):
                problems.add(r.loc(key), "only means something with timestamp_header")
    elif parts and not any(p.kind == "header" and p.value.lower() == ts_header.lower() for p in parts):
        # An unsigned timestamp could be moved forward by anyone: the tolerance would be no check.
        problems.add(r.loc("timestamp_header"), f"the template must sign it: add {{header:{ts_header}}}")
    secret_encoding = r.get("secret_encoding", choice("raw", "base64"), "raw")
    if secret_encoding == "base64":  # noqa: S105 (an encoding name)
        _check_base64_secrets(r, problems)
    options = TemplateOptions(
        parts=parts,
        template=template,
        signature_headers=headers,
        prefix=r.get("prefix", prefix_option, ""),
        encoding=r.get("encoding", choice(*ENCODINGS), "hex"),
        algorithm=r.get("algorithm", choice(*ALGORITHMS), "sha256"),
        timestamp_header=ts_header,
        timestamp_format=ts_format,
        tolerance=tolerance,
        secret_encoding=secret_encoding,
    )
    return options if len(problems) == before else None


def _check_base64_secrets(r: Reader, problems: Problems) -> None:
    """`check_secret` does not see the options, so base64 secrets are checked here; a secret
    that does not resolve has already been reported where it is resolved."""
    refs = r.raw.get("secrets")
    if not isinstance(refs, list):
        return
    for i, ref in enumerate(refs):
        value = resolve_secret(ref, "", Problems(), r.environ)
        if value and decode_secret(value, "base64") is None:
            problems.add(f"{r.at}.secrets[{i}]", "with secret_encoding: base64 a secret is base64")


# ---------------------------------------------------------------- verifying and signing


@dataclass(frozen=True)
class TemplateVerifier:
    options: TemplateOptions
    keys: tuple[tuple[int, bytes], ...]

    def verify(self, req: Signed) -> SigResult:
        o = self.options
        digest_size = ALGORITHMS[o.algorithm]().digest_size
        prefix = o.prefix.encode("ascii")
        given: list[bytes] = []
        for name in o.signature_headers:
            raw = one_header(req.headers, name)
            if isinstance(raw, SigResult):
                if raw.reason == MISSING:
                    continue
                return raw
            if not raw.startswith(prefix):
                return FAIL_MALFORMED
            digest = decode_digest(raw[len(prefix) :], o.encoding, digest_size)
            if digest is None:
                return FAIL_MALFORMED
            given.append(digest)
        if not given:
            return SigResult(False, MISSING)
        timestamp: float | None = None
        if o.timestamp_header is not None:
            ts = one_header(req.headers, o.timestamp_header)
            if isinstance(ts, SigResult):
                return FAIL_MALFORMED
            timestamp = parse_timestamp(ts, o.timestamp_format)
            if timestamp is None:
                return FAIL_MALFORMED
        message = render(o.parts, req)
        if isinstance(message, SigResult):
            return message
        algo = ALGORITHMS[o.algorithm]
        result = match_any_of(self.keys, tuple(given), lambda key: hmac.digest(key, message, algo))
        # Signature first: a forgery reads as mismatch, a replayed genuine request as stale.
        if result.ok and timestamp is not None and abs(req.now - timestamp) > o.tolerance:
            return FAIL_STALE
        return result


def keys_of(verify: VerifyConfig) -> tuple[tuple[int, bytes], ...]:
    o: TemplateOptions = verify.options
    return tuple((s.index, decode_secret(s.value, o.secret_encoding) or b"") for s in verify.secrets)


def sign_template(verify: VerifyConfig, req: ToSign) -> Signature:
    """The headers a sender would send: the timestamp header from `req.now`, any other signed
    header from `req.message_id` (or a fresh id), the digest in the first signature header."""
    o: TemplateOptions = verify.options
    key = keys_of(verify)[0][1]
    if not key:
        raise ValueError("the first secret is not usable as a key")
    headers: list[tuple[str, str]] = []
    values: dict[str, str] = {}
    for p in o.parts:
        if p.kind != "header" or p.value.lower() in values:
            continue
        if o.timestamp_header is not None and p.value.lower() == o.timestamp_header.lower():
            value = format_timestamp(req.now, o.timestamp_format)
        else:
            value = req.message_id or secrets_.token_hex(16)
        values[p.value.lower()] = value
        headers.append((p.value, value))
    message = b"".join(
        req.body
        if p.kind == "body"
        else req.query.encode()
        if p.kind == "query"
        else values[p.value.lower()].encode()
        if p.kind == "header"
        else p.value.encode()
        for p in o.parts
    )
    digest = hmac.digest(key, message, ALGORITHMS[o.algorithm])
    headers.append((o.signature_headers[0], o.prefix + encode_digest(digest, o.encoding)))
    return Signature(tuple(headers), req.query)


class TemplateScheme:
    name = "hmac-template"
    option_keys = OPTION_KEYS
    replay_header = None

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TemplateOptions | None:
        return parse_template_options(r, problems)

    def build(self, verify: VerifyConfig) -> TemplateVerifier:
        return TemplateVerifier(verify.options, keys_of(verify))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        return sign_template(verify, req)
