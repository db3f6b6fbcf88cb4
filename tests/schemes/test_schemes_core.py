"""telegram and hmac schemes: table of valid, wrong, missing, empty, repeated, non-ASCII, malformed."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway import config as cfg
from gateway.schemes import SCHEMES
from gateway.schemes.base import Signed

BODY = '{"update_id":1,"message":{"text":"héllo"}}'.encode()
KEY = b"k3y"


def verifier(verify: dict[str, object], environ: dict[str, str]):
    c = cfg.build(
        {"routes": [{"name": "r", "path": "/r", "upstream": "http://127.0.0.1:1/", "verify": verify}]},
        environ=environ,
    )
    v = c.routes[0].verify
    assert v is not None
    return SCHEMES[v.scheme].build(v)


def signed(headers: list[tuple[str, str]], body: bytes = BODY) -> Signed:
    return Signed(CIMultiDictProxy(CIMultiDict(headers)), body, 0.0)


TG = "X-Telegram-Bot-Api-Secret-Token"


@pytest.mark.parametrize(
    ("headers", "ok", "reason", "index"),
    [
        ([(TG, "first-token")], True, None, 0),
        ([(TG, "second-token")], True, None, 1),
        ([(TG, "first-tokeN")], False, "mismatch", None),
        ([(TG, "first-token ")], False, "mismatch", None),
        ([], False, "missing", None),
        ([(TG, "")], False, "malformed", None),
        ([(TG, "first-token"), (TG, "first-token")], False, "malformed", None),
        ([(TG, "first-tökén")], False, "malformed", None),
        ([(TG, "first-token\udcff")], False, "malformed", None),
    ],
)
def test_telegram(headers: list[tuple[str, str]], ok: bool, reason: str | None, index: int | None) -> None:
    v = verifier(
        {"scheme": "telegram", "secrets": ["env:A", "env:B"]}, {"A": "first-token", "B": "second-token"}
    )
    result = v.verify(signed(headers))
    assert (result.ok, result.reason, result.secret_index) == (ok, reason, index)


def _sig(algo: str, encoding: str, key: bytes = KEY, body: bytes = BODY) -> str:
    digest = hmac.new(key, body, getattr(hashlib, algo)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize("algo", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_hmac_valid_and_one_byte_off(algo: str, encoding: str, prefix: str) -> None:
    v = verifier(
        {
            "scheme": "hmac",
            "header": "X-Sig",
            "algorithm": algo,
            "encoding": encoding,
            "prefix": prefix,
            "secrets": ["env:OLD", "env:NEW"],
        },
        {"OLD": "old-key", "NEW": KEY.decode()},
    )
    good = prefix + _sig(algo, encoding)
    r = v.verify(signed([("X-Sig", good)]))
    assert (r.ok, r.secret_index) == (True, 1)
    assert not v.verify(signed([("X-Sig", good)], BODY + b" ")).ok
    assert v.verify(signed([("X-Sig", good)], BODY[:-1] + b"x")).reason == "mismatch"
    if encoding == "hex":
        assert v.verify(
            signed([("X-Sig", good.upper() if not prefix else prefix + good[len(prefix) :].upper())])
        ).ok


HS = "X-Hub-Signature-256"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        ("", "malformed"),
        ("sha1=" + "0" * 64, "malformed"),  # wrong prefix
        ("0" * 64, "malformed"),  # prefix missing
        ("sha256=" + "0" * 63, "malformed"),  # short
        ("sha256=" + "g" * 64, "malformed"),  # not hex
        ("sha256=" + "0" * 62 + " 0", "malformed"),  # space inside
        ("sha256= " + "0" * 64, "malformed"),
        ("sha256=" + "0" * 64, "mismatch"),
        ("sha256=" + "é" * 64, "malformed"),
    ],
)
def test_hmac_malformed_headers_never_raise(value: str | None, reason: str) -> None:
    v = verifier(
        {"scheme": "hmac", "header": HS, "prefix": "sha256=", "secrets": ["env:K"]}, {"K": KEY.decode()}
    )
    headers = [] if value is None else [(HS, value)]
    r = v.verify(signed(headers))
    assert (r.ok, r.reason) == (False, reason)


def test_hmac_base64_strict() -> None:
    v = verifier(
        {"scheme": "hmac", "header": "X-Sig", "encoding": "base64", "secrets": ["env:K"]}, {"K": KEY.decode()}
    )
    good = _sig("sha256", "base64")
    assert v.verify(signed([("X-Sig", good)])).ok
    assert v.verify(signed([("X-Sig", good.rstrip("="))])).reason == "malformed"
    assert v.verify(signed([("X-Sig", "!!" + good[2:])])).reason == "malformed"
    assert v.verify(signed([("X-Sig", base64.b64encode(b"short").decode())])).reason == "malformed"


def test_repeated_hmac_header_is_malformed() -> None:
    v = verifier({"scheme": "hmac", "header": "X-Sig", "secrets": ["env:K"]}, {"K": KEY.decode()})
    good = _sig("sha256", "hex")
    assert v.verify(signed([("X-Sig", good), ("X-Sig", good)])).reason == "malformed"
