"""AWS SNS over HTTPS: the message is a JSON object whose fields are signed (RSA, version 1
SHA1withRSA, version 2 SHA256withRSA) under a certificate AWS serves at `SigningCertURL`.

SNS is the one scheme that parses before it verifies: the signed fields, the signature and the
certificate's address are all inside the body. The body is parsed only when it is small enough
(`_MAX_BODY`, SNS messages are at most 256 KiB), and nothing parsed is used before the
signature verified, except to pick the topic (refused unless listed in `topic_arns`) and the
certificate URL (fetched only from an allow-listed host, over https). See
docs/decisions/0008-sns-certificate-fetch.md.

The fetch is asynchronous, so the verifier has a `prepare(req)` the signature check awaits
before the synchronous `verify(req)`: it makes sure the certificate is in the bounded cache
(fetched at most once per URL per TTL; concurrent requests share the one fetch), and `verify`
reads it from there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import re
import ssl
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.reader import Problems, Reader, boolean, parse_duration, text
from gateway.schemes.base import (
    FAIL_MALFORMED,
    FAIL_MISMATCH,
    FAIL_MISSING,
    FAIL_STALE,
    Signature,
    Signed,
    SigResult,
    ToSign,
    VerifyConfig,
)
from gateway.schemes.handshake import HandshakeAnswer
from gateway.schemes.keys import load_private_key_rsa, no_secrets

log_ = logging.getLogger("webhook_gateway")

DEFAULT_HOST_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
_MAX_BODY = 1 << 20  # a 256 KiB message, JSON-escaped, fits well within
_MAX_CERT = 65536
_MAX_INFLIGHT = 8  # distinct certificate URLs being fetched at once; more wait for a retry
_NEGATIVE_TTL = 30.0  # a failed fetch is not retried for this long (no hammering on a bad URL)
CERT_UNAVAILABLE = "cert_unavailable"
FAIL_CERT = SigResult(False, CERT_UNAVAILABLE)

# The fields each message type signs, in the order AWS documents (alphabetical).
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION,
    "UnsubscribeConfirmation": _CONFIRMATION,
}
OPTIONAL = frozenset({"Subject"})  # a Notification without a subject leaves it out of the string
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


def canonical(msg: dict[str, str]) -> bytes:
    """The string SNS signs: `Name\\nvalue\\n` for each signed field present, in order."""
    out: list[str] = []
    for name in FIELDS[msg["Type"]]:
        if name in msg:
            out.append(f"{name}\n{msg[name]}\n")
    return "".join(out).encode("utf-8")


def parse_message(body: bytes) -> dict[str, str] | SigResult:
    """The SNS message fields, or what is wrong with the body. Bounded before it is parsed."""
    if len(body) > _MAX_BODY:
        return FAIL_MALFORMED
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return FAIL_MALFORMED
    if not isinstance(data, dict):
        return FAIL_MALFORMED
    if "Signature" not in data:
        return FAIL_MISSING
    kind = data.get("Type")
    if kind not in FIELDS:
        return FAIL_MALFORMED
    names = (*FIELDS[kind], "Signature", "SignatureVersion", "SigningCertURL")
    msg: dict[str, str] = {}
    for name in names:
        value = data.get(name)
        if value is None and name in OPTIONAL:
            continue
        if not isinstance(value, str):
            return FAIL_MALFORMED
        msg[name] = value
    if msg["SignatureVersion"] not in HASHES:
        return FAIL_MALFORMED
    return msg


def _timestamp(value: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def allowed_url(url: str, host: re.Pattern[str]) -> bool:
    """https, a host the pattern allows, no credentials: the only URLs the gateway fetches."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and hostname is not None
        and parts.username is None
        and parts.password is None
        and host.fullmatch(hostname) is not None
    )


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def chains_to(certs: list[x509.Certificate], roots: tuple[x509.Certificate, ...], now: float) -> bool:
    """The first certificate chains, through the others served with it, to one of `roots`,
    each link signed by the next and each valid at `now`."""
    when = datetime.datetime.fromtimestamp(now, datetime.UTC)
    cert, pool = certs[0], certs[1:]
    for _ in range(6):  # leaf, intermediates, root: a longer chain is not SNS's
        if not _valid_at(cert, when):
            return False
        for root in roots:
            if root.subject == cert.issuer and _valid_at(root, when):
                try:
                    cert.verify_directly_issued_by(root)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return True
        parent = next((c for c in pool if c.subject == cert.issuer and c is not cert), None)
        if parent is None:
            return False
        try:
            cert.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            return False
        cert = parent
    return False


@dataclass(frozen=True)
class SnsOptions:
    topic_arns: frozenset[str]
    cert_host_pattern: str = DEFAULT_HOST_PATTERN
    ca_file: str | None = None  # None: the system's bundle
    roots: tuple[x509.Certificate, ...] = ()
    cert_cache_ttl: float = 3600.0
    cert_cache_size: int = 32
    fetch_timeout: float = 5.0
    tolerance: float = 3600.0
    confirm_subscriptions: bool = False


@dataclass
class CertCache:
    """Certificate public keys by URL: at most `size` entries, each for `ttl` seconds; a URL
    being fetched has one fetch, which every request for it awaits."""

    ttl: float
    size: int
    entries: OrderedDict[str, tuple[float, rsa.RSAPublicKey | None]] = field(default_factory=OrderedDict)
    inflight: dict[str, asyncio.Task[tuple[rsa.RSAPublicKey, float] | None]] = field(default_factory=dict)

    def peek(self, url: str) -> rsa.RSAPublicKey | None:
        entry = self.entries.get(url)
        return entry[1] if entry is not None else None

    def fresh(self, url: str, now: float) -> bool:
        entry = self.entries.get(url)
        return entry is not None and entry[0] > now

    def put(self, url: str, key: rsa.RSAPublicKey | None, expires: float) -> None:
        self.entries[url] = (expires, key)
        self.entries.move_to_end(url)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class SnsVerifier:
    def __init__(self, opts: SnsOptions) -> None:
        self.opts = opts
        self.host = re.compile(opts.cert_host_pattern)
        self.cache = CertCache(opts.cert_cache_ttl, opts.cert_cache_size)
        self._ssl: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # built on first use: the event loop's thread, not at config time
            self._ssl = ssl.create_default_context(cafile=self.opts.ca_file)
        return self._ssl

    def _cert_url(self, req: Signed) -> str | None:
        msg = parse_message(req.body)
        if isinstance(msg, SigResult) or msg["TopicArn"] not in self.opts.topic_arns:
            return None
        url = msg["SigningCertURL"]
        return url if allowed_url(url, self.host) else None

    async def prepare(self, req: Signed) -> None:
        """Have the certificate of this message in the cache (or a failed fetch noted)."""
        url = self._cert_url(req)
        if url is None or self.cache.fresh(url, req.now):
            return
        task = self.cache.inflight.get(url)
        if task is None:
            if len(self.cache.inflight) >= _MAX_INFLIGHT:
                return  # verify finds no certificate: refused, the sender retries later
            task = asyncio.create_task(self._fetch(url, req.now))
            self.cache.inflight[url] = task
            task.add_done_callback(lambda _t: self.cache.inflight.pop(url, None))
        fetched = await asyncio.shield(task)
        if self.cache.fresh(url, req.now):
            return  # another request waiting on the same fetch stored it
        if fetched is None:
            self.cache.put(url, None, req.now + min(_NEGATIVE_TTL, self.opts.cert_cache_ttl))
        else:
            # Kept no longer than the certificate itself is valid.
            self.cache.put(url, fetched[0], min(req.now + self.opts.cert_cache_ttl, fetched[1]))

    async def _fetch(self, url: str, now: float) -> tuple[rsa.RSAPublicKey, float] | None:
        """The certificate's key and when it stops being valid, or None (logged why)."""
        try:
            pem = await fetch_bounded(url, self.ssl_context(), self.opts.fetch_timeout, _MAX_CERT)
            certs = x509.load_pem_x509_certificates(pem)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log_.warning("sns: cannot fetch the signing certificate %s: %s", url, type(exc).__name__)
            return None
        key = certs[0].public_key()
        if not isinstance(key, rsa.RSAPublicKey) or not chains_to(certs, self.opts.roots, now):
            log_.warning("sns: the signing certificate at %s is expired, not RSA or untrusted", url)
            return None
        return key, certs[0].not_valid_after_utc.timestamp()

    def verify(self, req: Signed) -> SigResult:
        msg = parse_message(req.body)
        if isinstance(msg, SigResult):
            return msg
        header_type = req.headers.getall("x-amz-sns-message-type", ())
        if header_type and list(header_type) != [msg["Type"]]:
            return FAIL_MALFORMED  # the unsigned header disagrees with the signed field
        header_id = req.headers.getall("x-amz-sns-message-id", ())
        if header_id and list(header_id) != [msg["MessageId"]]:
            return FAIL_MALFORMED  # the replay check keys on this header: it must be the signed id
        if msg["TopicArn"] not in self.opts.topic_arns:
            return FAIL_MISMATCH  # genuine SNS maybe, but another account's topic
        try:
            signature = base64.b64decode(msg["Signature"], validate=True)
        except (ValueError, binascii.Error):
            return FAIL_MALFORMED
        when = _timestamp(msg["Timestamp"])
        if when is None or not allowed_url(msg["SigningCertURL"], self.host):
            return FAIL_MALFORMED
        key = self.cache.peek(msg["SigningCertURL"])
        if key is None:
            return FAIL_CERT
        algorithm = HASHES[msg["SignatureVersion"]]()
        try:
            key.verify(signature, canonical(msg), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            return FAIL_MISMATCH
        if abs(req.now - when) > self.opts.tolerance:
            return FAIL_STALE
        return SigResult(True, None, 0)


async def fetch_bounded(url: str, context: ssl.SSLContext, timeout: float, limit: int) -> bytes:
    """GET `url` (no redirects), its body if the answer is 200 and at most `limit` bytes."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url, ssl=context, allow_redirects=False) as resp,
    ):
        if resp.status != 200:
            raise ValueError(f"status {resp.status}")
        data = b""
        while chunk := await resp.content.read(limit + 1 - len(data)):
            data += chunk
            if len(data) > limit:
                raise ValueError("too large")
        return data


@dataclass(frozen=True)
class SnsConfirm:
    """`confirm_subscriptions: true`: a verified SubscriptionConfirmation is confirmed by the
    gateway (a GET of its SubscribeURL, allow-listed like the certificate) and not forwarded."""

    verifier: SnsVerifier

    def answer(self, req: Signed) -> HandshakeAnswer | None:
        return None  # only the asynchronous path below answers

    async def answer_async(self, req: Signed) -> HandshakeAnswer | None:
        msg = parse_message(req.body)
        if isinstance(msg, SigResult) or msg["Type"] != "SubscriptionConfirmation":
            return None
        url = msg["SubscribeURL"]
        if not allowed_url(url, self.verifier.host):
            return HandshakeAnswer(400, reason="malformed")
        opts = self.verifier.opts
        try:
            await fetch_bounded(url, self.verifier.ssl_context(), opts.fetch_timeout, _MAX_CERT)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log_.warning("sns: confirming the subscription failed: %s", type(exc).__name__)
            return HandshakeAnswer(502, reason="confirm_failed")  # SNS retries the confirmation
        return HandshakeAnswer(200, b'{"status":"confirmed"}', content_type="application/json")


def _host_pattern(value: Any) -> str:
    pattern = text(value)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


def _roots(path: str | None, at: str, problems: Problems) -> tuple[x509.Certificate, ...]:
    if path is None:
        paths = ssl.get_default_verify_paths()
        path = paths.cafile or paths.openssl_cafile
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            # A system bundle may hold an old root cryptography frowns upon (a negative serial):
            # it is the bundle's to fix, and it must not stop the gateway from starting.
            warnings.simplefilter("ignore")
            return tuple(x509.load_pem_x509_certificates(fh.read()))
    except (OSError, ValueError) as exc:
        problems.add(at, f"cannot read CA certificates from {path}: {getattr(exc, 'strerror', None) or exc}")
        return ()


class SnsScheme:
    name = "sns"
    option_keys = frozenset(
        {
            "topic_arns",
            "cert_host_pattern",
            "ca_file",
            "cert_cache_ttl",
            "cert_cache_size",
            "fetch_timeout",
            "tolerance",
            "confirm_subscriptions",
        }
    )
    # Sent on every delivery; checked against the signed MessageId when present.
    replay_header = "x-amz-sns-message-id"
    secrets_required = False

    def check_secret(self, value: bytes) -> str | None:
        return None

    def parse_options(self, r: Reader, problems: Problems) -> SnsOptions:
        no_secrets(r, self.name)
        arns = r.list("topic_arns") or []
        if not arns and "topic_arns" not in r.misspelt:
            problems.add(r.loc("topic_arns"), "list the topic ARNs this route accepts (arn:aws:sns:...)")
        for i, arn in enumerate(arns):
            if not isinstance(arn, str) or not arn.startswith("arn:"):
                problems.add(
                    f"{r.loc('topic_arns')}[{i}]", "expected a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"
                )
        ca_file = r.get("ca_file", text)
        cache_size = r.get("cert_cache_size", _size, 32)
        return SnsOptions(
            topic_arns=frozenset(a for a in arns if isinstance(a, str)),
            cert_host_pattern=r.get("cert_host_pattern", _host_pattern, DEFAULT_HOST_PATTERN),
            ca_file=ca_file,
            roots=_roots(ca_file, r.loc("ca_file"), problems),
            cert_cache_ttl=r.get("cert_cache_ttl", parse_duration, 3600.0),
            cert_cache_size=cache_size,
            fetch_timeout=r.get("fetch_timeout", parse_duration, 5.0),
            tolerance=r.get("tolerance", parse_duration, 3600.0),
            confirm_subscriptions=r.get("confirm_subscriptions", boolean, False),
        )

    def build(self, verify: VerifyConfig) -> SnsVerifier:
        return SnsVerifier(verify.options)

    def build_challenge(self, verify: VerifyConfig) -> SnsConfirm | None:
        # Built from the route's verifier so the confirmation shares its TLS settings.
        return None if not verify.options.confirm_subscriptions else SnsConfirm(SnsVerifier(verify.options))

    def sign(self, verify: VerifyConfig, req: ToSign) -> Signature:
        """Re-sign the JSON message in the body (version 2) with `--private-key` and `--cert-url`."""
        if not req.private_key or not req.cert_url:
            raise ValueError(
                "sns signs with a private key and the certificate's URL: give --private-key and --cert-url"
            )
        key = load_private_key_rsa(req.private_key)
        try:
            data = json.loads(req.body)
        except ValueError:
            raise ValueError("the body is not a JSON SNS message") from None
        if not isinstance(data, dict) or data.get("Type") not in FIELDS:
            raise ValueError("the body needs a Type of " + ", ".join(FIELDS))
        data["SignatureVersion"] = "2"
        data["SigningCertURL"] = req.cert_url
        msg = {k: v for k, v in data.items() if isinstance(v, str)}
        missing = [f for f in FIELDS[data["Type"]] if f not in msg and f not in OPTIONAL]
        if missing:
            raise ValueError("the message lacks " + ", ".join(missing))
        data["Signature"] = base64.b64encode(
            key.sign(canonical(msg), padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        # The signed fields are in the body: the signed body replaces the one given.
        return Signature((("x-amz-sns-message-type", data["Type"]),), req.query, json.dumps(data).encode())


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise ValueError("expected a whole number from 1 to 4096")
    return value
