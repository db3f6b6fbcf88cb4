"""Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + params)>`.

What is signed, as Twilio's docs and its SDK's RequestValidator have it:
- the full URL Twilio requested, query string included. Behind a TLS-terminating proxy the
  gateway cannot see that URL, so the route names it: `public_url` (scheme, host, path; no
  query), and the query string is taken raw from the request;
- for `application/x-www-form-urlencoded` bodies, every parameter name followed by its value,
  names sorted, each name's distinct values sorted, no separators;
- for other (JSON) bodies, nothing more: Twilio adds `bodySHA256=<hex sha256 of the raw body>`
  to the URL instead, and that hash is checked against the body.
Like the SDK, both the URL with the default port (`:443` / `:80`) and without it are accepted,
because Twilio's own signing is inconsistent there. A webhook signed with a SharedKey says so in
`X-Twilio-Webhooks-Signature-Settings: key=...,algorithm=HMAC_SHA256`; the key is then one of
the configured secrets, and HMAC-SHA256 is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import ParseResult, parse_qs, parse_qsl, urlparse, urlsplit

from gateway.reader import Problems, Reader
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_MISMATCH,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
    base64_digest,
    indexed,
    lower_hex_digest,
    one_header,
    secret_for_signing,
)

HEADER = "X-Twilio-Signature"
SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
FORM = "application/x-www-form-urlencoded"
BODY_HASH = "bodySHA256"
ALGORITHMS: dict[str, Callable[..., Any]] = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}
_MAX_FIELDS = 10_000


@dataclass(frozen=True)
class TwilioOptions:
    public_url: str


def _public_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(
            "expected the URL Twilio is configured to call, e.g. https://bots.example.com/twilio"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("public_url holds no query or fragment (the request's own query is signed)")
    if not value.isascii() or any(c.isspace() for c in value):
        raise ValueError(f"{value!r}: write the URL percent-encoded, as Twilio sends it")
    return value


def _without_port(url: ParseResult) -> str:
    if not url.port:
        return url.geturl()
    return url._replace(netloc=url.netloc.split(":")[0]).geturl()


def _with_port(url: ParseResult) -> str:
    if url.port:
        return url.geturl()
    port = 443 if url.scheme == "https" else 80
    return url._replace(netloc=f"{url.netloc}:{port}").geturl()


def _algorithm(req: Signed) -> Callable[..., Any] | None:
    """From the settings header, read the way the SDK's get_signature_algorithm reads it."""
    values = req.headers.getall(SETTINGS, ())
    if not values:
        return hashlib.sha1
    if len(values) > 1:
        return None
    name = "HMAC_SHA1"
    for part in values[0].split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip() == "algorithm" and value.strip():
            name = value.strip()
            break
    return ALGORITHMS.get(name.upper())


def _media_type(req: Signed) -> str | None:
    values = req.headers.getall("Content-Type", ())
    if len(values) > 1:
        return None
    return values[0].split(";", 1)[0].strip().lower() if values else ""


def form_payload(body: bytes) -> bytes | None:
    """Sorted names, each with its sorted distinct values, concatenated; None if not a form."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,  # Twilio sends empty fields (FromCity=) and signs them
            encoding="utf-8",
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except (ValueError, UnicodeDecodeError):
        return None
    values: dict[str, set[str]] = {}
    for name, value in pairs:
        values.setdefault(name, set()).add(value)
    return "".join(name + value for name in sorted(values) for value in sorted(values[name])).encode()


def _query_body_hash(query: str) -> str | None:
    """The bodySHA256 query parameter, found the way the SDK finds it ("" when absent)."""
    try:
        found = parse_qs(query, max_num_fields=_MAX_FIELDS)
    except ValueError:
        return None
    return found.get(BODY_HASH, [""])[0]


@dataclass(frozen=True)
class TwilioVerifier:
    secrets: tuple[tuple[int, bytes], ...]
    urls: tuple[bytes, bytes]  # public_url without and with its default port

    def verify(self, req: Signed) -> SigResult:
        given = one_header(req.headers, HEADER)
        if isinstance(given, SigResult):
            return given
        algorithm = _algorithm(req)
        media = _media_type(req)
        body_hash = _query_body_hash(req.query)
        if algorithm is None or media is None or body_hash is None:
            return FAIL_MALFORMED
        digest = base64_digest(given, algorithm().digest_size)
        if digest is None:
            return FAIL_MALFORMED

        if media == FORM:
            payload = form_payload(req.body)
            if payload is None:
                return FAIL_MALFORMED
        elif body_hash:
            wanted = lower_hex_digest(body_hash.encode("utf-8", "surrogateescape"), 32)
            if wanted is None:
                return FAIL_MALFORMED
            if not hmac.compare_digest(hashlib.sha256(req.body).digest(), wanted):
                return FAIL_MISMATCH
            payload = b""
        elif req.body:
            return FAIL_MALFORMED  # a body nothing signs would pass unchecked
        else:
            payload = b""

        query = req.query.encode("utf-8", "surrogateescape")
        suffix = (b"?" + query if query else b"") + payload
        matched: int | None = None
        for index, key in self.secrets:
            for url in self.urls:
                expected = hmac.new(key, url + suffix, algorithm).digest()
                if hmac.compare_digest(expected, digest) and matched is None:
                    matched = index
        return FAIL_MISMATCH if matched is None else SigResult(True, None, matched)


class TwilioScheme:
    name = "twilio"
    option_keys = frozenset({"public_url"})
    # Twilio's per-delivery token, repeated when it retries that delivery.
    replay_header = "I-Twilio-Idempotency-Token"

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> TwilioOptions:
        return TwilioOptions(public_url=r.get("public_url", _public_url, "", required=True))

    def build(self, verify: VerifyConfig) -> TwilioVerifier:
        url = urlparse(verify.options.public_url)
        urls = (_without_port(url).encode(), _with_port(url).encode())
        return TwilioVerifier(indexed(verify), urls)

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        query = req.query
        if req.content_type.split(";", 1)[0].strip().lower() == FORM:
            payload = form_payload(req.body)
            if payload is None:
                raise ValueError("the body is not an application/x-www-form-urlencoded form")
        else:
            # A JSON body is signed through the URL: Twilio appends the body's SHA-256.
            query += ("&" if query else "") + f"{BODY_HASH}={hashlib.sha256(req.body).hexdigest()}"
            payload = b""
        url = verify.options.public_url + ("?" + query if query else "")
        mac = hmac.new(secret_for_signing(verify), url.encode() + payload, hashlib.sha1)
        return Signature(((HEADER, base64.b64encode(mac.digest()).decode()),), query)
