"""Fuzz targets: the X-Forwarded-For parser and every signature scheme's `verify`.

Each target takes raw bytes, so atheris (fuzz/fuzz_*.py, coverage-guided) and hypothesis
(tests/adversarial/test_fuzz.py) drive the same code. A target raises only when it finds a bug:
an exception out of the code under test, or a broken property (checked below).

Schemes are taken from `gateway.schemes.SCHEMES`, so a new scheme is fuzzed without touching
this file, unless it needs options to build (add them to SAMPLE_OPTIONS) or its secrets have
a format none of SECRET_PAIRS meets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import config as cfg
from gateway.proxy.clientip import IPAddress, NetSet, client_ip, normalise, parse_ip
from gateway.schemes import SCHEMES, msgraph
from gateway.schemes import base as scheme_base
from gateway.schemes.base import Signed, SigResult, Verifier

T = TypeVar("T")
NOW = 1_800_000_000.0


class Bytes:
    """Turns fuzzer bytes into choices; past the end every draw is zero/empty (never raises)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        """0 <= value < n."""
        if n <= 1:
            return 0
        value = self.byte() | self.byte() << 8 if n > 256 else self.byte()
        return value % n

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def raw(self, max_len: int) -> bytes:
        n = self.below(max_len + 1)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def text(self, max_len: int) -> str:
        """A header value as aiohttp hands it over: UTF-8 decoded with surrogateescape."""
        return self.raw(max_len).decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- client IP

TRUSTED = [
    NetSet([]),
    NetSet([ipaddress.ip_network("127.0.0.1/32")]),
    NetSet([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.0.0/16")]),
    NetSet(
        [
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
            ipaddress.ip_network("fd00::/8"),
        ]
    ),
]
POOL = [
    "127.0.0.1",
    "10.1.2.3",
    "10.255.0.1",
    "192.168.1.1",
    "149.154.167.220",
    "91.108.4.1",
    "::1",
    "fd00::1",
    "::ffff:10.0.0.1",
    "::ffff:149.154.167.220",
    "2001:db8::1",
    "0.0.0.0",
    "255.255.255.255",
]
JUNK = ["", " ", "unknown", "_hidden", "[", "]", "[::1", "1.2.3", "1.2.3.4.5", "fe80::1%eth0", "::1:80"]


def _address(b: Bytes) -> IPAddress:
    kind = b.below(3)
    if kind == 0:
        return ipaddress.ip_address(b.choice(POOL))
    if kind == 1:
        return ipaddress.IPv4Address(bytes(b.byte() for _ in range(4)))
    return ipaddress.IPv6Address(bytes(b.byte() for _ in range(16)))


def _written(b: Bytes, ip: IPAddress) -> str:
    """`ip` as some proxy might write it."""
    style = b.below(4)
    pad = b.choice(["", " ", "  ", "\t"])
    if style == 0:
        text = str(ip)
    elif style == 1:
        text = f"[{ip}]:{b.below(65536)}" if ip.version == 6 else f"{ip}:{b.below(65536)}"
    elif style == 2:
        text = f"[{ip}]"
    else:
        text = ip.exploded
    if style == 2 and ip.version == 4:
        text = str(ip)
    return pad + text + pad


def _entry(b: Bytes) -> str:
    kind = b.below(4)
    if kind == 0:
        return b.text(24)
    if kind == 1:
        return b.choice(JUNK)
    return _written(b, _address(b))


def expected_client(peer: IPAddress | None, headers: list[str], trusted: NetSet) -> IPAddress | None:
    """The documented rule, written out: believe X-Forwarded-For only from a trusted peer; then
    walk right to left past trusted proxies; stop at the first untrusted address (the client)
    or at junk (keep the last address vouched for)."""
    if peer is None or not trusted or peer not in trusted:
        return peer
    current = peer
    hops = [hop for header in headers for hop in header.split(",")]
    for hop in reversed(hops):
        ip = parse_ip(hop)
        if ip is None:
            return current
        if ip not in trusted:
            return ip
        current = ip
    return current


def clientip_one_input(data: bytes) -> None:
    b = Bytes(data)
    # parse_ip never raises, and what it returns is normalised
    parsed = parse_ip(b.text(80))
    if parsed is not None:
        assert normalise(parsed) == parsed, parsed
    # every way a proxy writes an address parses back to it
    ip = _address(b)
    written = _written(b, ip)
    assert parse_ip(written) == normalise(ip), (written, ip)
    # client_ip follows the rule, whatever the headers hold
    trusted = b.choice(TRUSTED)
    peer = None if b.below(8) == 0 else normalise(_address(b))
    headers = [",".join(_entry(b) for _ in range(b.below(5))) for _ in range(b.below(4))]
    got = client_ip(peer, headers, trusted)
    assert got == expected_client(peer, headers, trusted), (peer, headers, got)
    if peer is not None and (not trusted or peer not in trusted):
        assert got == peer  # an untrusted peer can never pick its own address


# ---------------------------------------------------------------- signature schemes

# Options a scheme needs to build; a scheme not listed is built with none.
SAMPLE_OPTIONS: dict[str, list[dict[str, Any]]] = {
    "hmac": [
        {"header": "X-Signature"},
        {"header": "X-Hub-Signature-256", "prefix": "sha256="},
        {"header": "X-Signature", "algorithm": "sha1", "encoding": "base64"},
        {"header": "X-Telegram-Bot-Api-Secret-Hash", "algorithm": "sha512"},
    ],
    "twilio": [{"public_url": "https://gw.example/hook/twilio"}],
    "api-key": [{"header": "X-Api-Key"}, {"header": "Authorization", "prefix": "Bearer "}, {"query": "key"}],
    "hmac-template": [
        {"template": "{body}", "signature_header": "X-Signature"},
        {
            "template": "v0:{header:X-Ts}:{query}:{body}",
            "signature_headers": ["X-Sig-A", "X-Sig-B"],
            "prefix": "v0=",
            "encoding": "base64url",
            "algorithm": "sha512",
            "timestamp_header": "X-Ts",
        },
        {
            "template": "{header:X-Id}{header:X-Ts}{body}",
            "signature_header": "X-Signature",
            "encoding": "base64",
            "timestamp_header": "X-Ts",
            "timestamp_format": "rfc3339",
        },
    ],
}


# (right, wrong) secrets; the first pair a scheme accepts is used. The wrong one never signs.
def _ed25519(seed: int) -> tuple[bytes, bytes, bytes]:
    """(the 32-byte seed, its PKCS8 PEM, the raw public key) of a fixed Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return bytes([seed]) * 32, pem, raw


def _key_pair(scheme: str, seed: int) -> tuple[str, bytes]:
    """(the public key as a route holds it, the private key as `sign --private-key` reads it)."""
    if scheme == "sendgrid":
        ek = ec.derive_private_key(seed * 7919, ec.SECP256R1())
        pem = ek.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
        spki = ek.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(spki).decode(), pem
    raw_seed, pem, raw = _ed25519(seed)
    if scheme == "discord":
        return raw.hex(), raw_seed.hex().encode()
    if scheme == "telnyx":
        return base64.b64encode(raw).decode(), pem
    return "whpk_" + base64.b64encode(raw).decode(), b"whsk_" + base64.b64encode(raw_seed)


# Public-key schemes: the right and the wrong verifier hold different public keys, and the
# signer holds the right private key. `standard-webhooks` is fuzzed both ways (v1 and v1a).
KEY_SCHEMES = {"discord": [{}], "telnyx": [{}], "sendgrid": [{}], "standard-webhooks": [{}]}
# No credential of its own to vary: SNS's certificate is fetched (asynchronously) by URL; with
# none cached its synchronous verify must refuse everything, which is what the fuzzer checks.
KEYLESS_OPTIONS = {"sns": {"topic_arns": ["arn:aws:sns:eu-west-1:123456789012:fuzz"]}}

SECRET_PAIRS = [
    ("whsec_" + base64.b64encode(b"A" * 24).decode(), "whsec_" + base64.b64encode(b"B" * 24).decode()),
    ("fuzz-secret_A_0123456789", "fuzz-secret_B_0123456789"),
    ("fuzz:user_A_0123456789", "fuzz:user_B_0123456789"),  # basic-auth: user:password
    (base64.b64encode(b"C" * 24).decode(), base64.b64encode(b"D" * 24).decode()),  # teams: base64
]
# Headers worth aiming at besides the ones a scheme's own signer emits.
HEADER_NAMES = [
    "X-Telegram-Bot-Api-Secret-Token",
    "X-Telegram-Bot-Api-Secret-Hash",
    "X-Signature",
    "X-Hub-Signature",
    "X-Hub-Signature-256",
    "X-Slack-Signature",
    "X-Slack-Request-Timestamp",
    "Stripe-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-Shopify-Hmac-Sha256",
    "X-Gitlab-Token",
    "X-Twilio-Signature",
    "Content-Type",
]
SignFn = Callable[[bytes, float, str], tuple[list[tuple[str, str]], str]]
# Schemes whose credential travels in the body (Microsoft Graph's clientState).
BODY_CREDENTIAL = {"msgraph"}


def unauthenticated_handshake(scheme: str, req: Signed) -> bool:
    """Microsoft Graph's validation POST carries no credential by design: its verifier passes
    exactly that shape (empty body, one validationToken) so that the gateway answers it, and
    the gateway never forwards it. Only that shape may pass without the right secret."""
    return scheme == "msgraph" and msgraph.validation_token(req) is not None


@dataclass
class SchemeTarget:
    scheme: str
    options: dict[str, Any]
    right: Verifier  # built with the right secret
    wrong: Verifier  # built with a secret nothing is ever signed with
    sign: SignFn | None  # headers (and query) a sender holding the right secret sends
    headers: list[str]
    signs_body: bool

    @property
    def label(self) -> str:
        return f"{self.scheme}{self.options or ''}"


def _verify_config(
    scheme: str, options: dict[str, Any], secret: str, credential: dict[str, Any] | None = None
) -> cfg.VerifyConfig:
    """The route's verify section: `credential` (public keys, or nothing) in place of secrets."""
    given = {"secrets": ["env:FUZZ_SECRET"]} if credential is None else credential
    raw = {
        "routes": [
            {
                "name": "fuzz",
                "path": "/fuzz",
                "upstream": "http://127.0.0.1:9/x",
                "verify": {"scheme": scheme, **given, **options},
            }
        ]
    }
    verify = cfg.build(raw, environ={"FUZZ_SECRET": secret}).routes[0].verify
    assert verify is not None
    return verify


def _builtin_signer(scheme: str, verify: cfg.VerifyConfig) -> SignFn | None:
    secret = verify.secrets[0].value
    if scheme == "telegram":
        return lambda body, now, query: ([("X-Telegram-Bot-Api-Secret-Token", secret.decode())], query)
    if scheme == "hmac":
        o = verify.options

        def sign(body: bytes, now: float, query: str) -> tuple[list[tuple[str, str]], str]:
            digest = hmac.new(secret, body, getattr(hashlib, o.algorithm)).digest()
            value = digest.hex() if o.encoding == "hex" else base64.b64encode(digest).decode()
            return [(o.header, o.prefix + value)], query

        return sign
    return None


def _signer(scheme: str, verify: cfg.VerifyConfig, private_key: bytes = b"") -> SignFn | None:
    """The scheme's own `sign` when it has one (the `webhook-gateway sign` protocol)."""
    if scheme in BODY_CREDENTIAL or scheme in KEYLESS_OPTIONS:
        return None  # no header can carry the credential: inputs are fuzzed unsigned
    own = getattr(SCHEMES[scheme], "sign", None)
    to_sign = getattr(scheme_base, "ToSign", None)
    if own is None or to_sign is None:
        return _builtin_signer(scheme, verify)

    def sign(body: bytes, now: float, query: str) -> tuple[list[tuple[str, str]], str]:
        req = to_sign(body=body, now=int(now), query=query, message_id="msg_fuzz", private_key=private_key)
        signature = own(verify, req)
        return list(signature.headers), signature.query

    return sign


def signed(headers: list[tuple[str, str]], body: bytes, now: float, query: str) -> Signed:
    return Signed(CIMultiDictProxy(CIMultiDict(headers)), body, now, query)


def build_targets() -> list[SchemeTarget]:
    """Every scheme in SCHEMES with each of its sample options; raises naming what is missing."""
    targets = []
    for name in sorted(SCHEMES):
        if name in KEYLESS_OPTIONS:
            verify = _verify_config(name, KEYLESS_OPTIONS[name], "", {})
            targets.append(_target(name, {}, verify, verify))
        for options in KEY_SCHEMES.get(name, []):
            (right_public, private), (wrong_public, _) = _key_pair(name, 1), _key_pair(name, 2)
            right = _verify_config(name, options, "", {"public_keys": [right_public]})
            wrong = _verify_config(name, options, "", {"public_keys": [wrong_public]})
            targets.append(_target(name, {"public_keys": "..."}, right, wrong, private))
        if name in KEYLESS_OPTIONS or (name in KEY_SCHEMES and name != "standard-webhooks"):
            continue
        for options in SAMPLE_OPTIONS.get(name, [{}]):
            problems: list[str] = []
            for right_secret, wrong_secret in SECRET_PAIRS:
                try:
                    right = _verify_config(name, options, right_secret)
                    wrong = _verify_config(name, options, wrong_secret)
                except cfg.ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                break
            else:
                raise AssertionError(
                    f"scheme {name!r} does not build with options {options} and any of the secret"
                    f" pairs in fuzz/targets.py: {problems}. Add what it needs to SAMPLE_OPTIONS or"
                    " SECRET_PAIRS."
                )
            targets.append(_target(name, options, right, wrong))
    return targets


def _target(
    name: str,
    options: dict[str, Any],
    right: cfg.VerifyConfig,
    wrong: cfg.VerifyConfig,
    private_key: bytes = b"",
) -> SchemeTarget:
    sign = _signer(name, right, private_key)
    names = list(HEADER_NAMES)
    signs_body = False
    if sign is not None:
        hs, query = sign(b'{"probe":1}', NOW, "a=1")
        names += [k for k, _ in hs]
        verifier = SCHEMES[name].build(right)
        assert verifier.verify(signed(hs, b'{"probe":1}', NOW, query)).ok, f"{name}: sign/verify disagree"
        signs_body = not verifier.verify(signed(hs, b'{"probe":2}', NOW, query)).ok
    names += [v for v in options.values() if isinstance(v, str) and v[:2].lower() == "x-"]
    return SchemeTarget(
        scheme=name,
        options=options,
        right=SCHEMES[name].build(right),
        wrong=SCHEMES[name].build(wrong),
        sign=sign,
        headers=sorted(set(names)),
        signs_body=signs_body,
    )


TARGETS = build_targets()
NASTY = ["", " ", "\t", "=", ",", ";", "sha256=", "v1=", "t=", "\x00", "\udcff", "é", "A" * 300]


def _mutate_value(b: Bytes, value: str) -> str:
    op = b.below(8)
    pos = b.below(len(value) + 1)
    if op == 0 and value:  # change one character
        return value[:pos] + chr((ord(value[pos % len(value)]) + 1 + b.below(90)) % 0x80) + value[pos + 1 :]
    if op == 1:
        return value[:pos]
    if op == 2:
        return value[:pos] + b.choice(NASTY) + value[pos:]
    if op == 3:
        return value.upper() if b.below(2) else value.lower()
    if op == 4:
        return b.choice(NASTY) + value + b.choice(NASTY)
    if op == 5:
        return value + "," + value
    if op == 6:
        return b.text(64)
    return value[::-1]


def schemes_one_input(data: bytes) -> None:
    b = Bytes(data)
    target = b.choice(TARGETS)
    body = original = b.raw(200)
    now, query = NOW, b.choice(["", "a=1", "validationToken=x%3Ay", b.text(16)])
    if target.sign is not None and not query.isascii():
        # What a sender signs is a well-formed URL; any query at all still reaches verify()
        # through the mutations below.
        query = query.encode("utf-8", "surrogateescape").hex()
    if target.sign is None or b.below(4) == 0:
        headers = [(b.choice(target.headers), b.text(80)) for _ in range(b.below(6))]
    else:
        headers, query = target.sign(body, now, query)
        result = target.right.verify(signed(headers, body, now, query))
        assert result.ok and result.secret_index == 0, (target.label, result)
        for _ in range(b.below(5)):
            op = b.below(7)
            if op == 0 and headers:  # drop a header
                del headers[b.below(len(headers))]
            elif op == 1 and headers:  # repeat one
                headers.append(headers[b.below(len(headers))])
            elif op == 2 and headers:  # mangle a value
                i = b.below(len(headers))
                headers[i] = (headers[i][0], _mutate_value(b, headers[i][1]))
            elif op == 3:  # change the body
                body = body + b.raw(4) if b.below(2) else body[:-1]
            elif op == 4:  # move the clock
                now += b.choice([-86400.0, -301.0, -1.0, 1.0, 299.0, 301.0, 1e12, -now])
            elif op == 5:
                query = b.text(16)
            else:  # another header next to the real ones
                headers.append((b.choice(target.headers), b.text(64)))
    req = signed(headers, body, now, query)
    right = target.right.verify(req)
    wrong = target.wrong.verify(req)
    assert isinstance(right, SigResult) and isinstance(wrong, SigResult)
    if unauthenticated_handshake(target.scheme, req):
        assert right.ok and wrong.ok and right.secret_index is None, (target.label, right, wrong)
        return
    assert not wrong.ok, f"{target.label}: accepted without the right secret: {headers!r}"
    if right.ok:
        assert right.secret_index == 0, (target.label, right)
        assert not (body != original and target.signs_body), f"{target.label}: accepted a changed body"
    else:
        assert right.reason in (
            scheme_base.MISSING,
            scheme_base.MISMATCH,
            scheme_base.MALFORMED,
            scheme_base.STALE,
        ), (target.label, right)


TARGETS_BY_NAME: dict[str, Callable[[bytes], None]] = {
    "clientip": clientip_one_input,
    "schemes": schemes_one_input,
}
