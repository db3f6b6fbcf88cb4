"""github and meta: `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the raw body>`."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from tests.support.schemes import flip, signed, verifier

H = "X-Hub-Signature-256"
# GitHub's documented example ("Validating webhook deliveries"): this secret and payload give
# exactly this signature.
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Meta signs the bytes it sends, and it sends non-ASCII as \u escapes: the wire body below
# and a parsed-and-re-serialised copy of it mean the same JSON but are different bytes.
META_BODY = (
    b'{"object":"whatsapp_business_account",'
    b'"entry":[{"changes":[{"value":{"text":"h\\u00e9llo \\ud83d\\ude00"}}]}]}'
)
APP_SECRET = "0123456789abcdef0123456789abcdef"


def _hub(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("scheme", ["github", "meta"])
def test_documented_github_example(scheme: str) -> None:
    v = verifier({"scheme": scheme, "secrets": ["env:S"]}, {"S": GH_SECRET})
    assert _hub(GH_SECRET, GH_BODY) == GH_SIGNATURE  # the test's own arithmetic agrees with GitHub
    r = v.verify(signed({H: GH_SIGNATURE}, GH_BODY, 0))
    assert (r.ok, r.secret_index) == (True, 0)


@pytest.mark.parametrize("scheme", ["github", "meta"])
@pytest.mark.parametrize("at", [0, 5, -1])
def test_one_byte_changed_anywhere_fails(scheme: str, at: int) -> None:
    v = verifier({"scheme": scheme, "secrets": ["env:S"]}, {"S": GH_SECRET})
    assert v.verify(signed({H: GH_SIGNATURE}, flip(GH_BODY, at), 0)).reason == "mismatch"
    hexpart = GH_SIGNATURE[len("sha256=") :]
    other = "sha256=" + hexpart[:10] + ("0" if hexpart[10] != "0" else "1") + hexpart[11:]
    assert v.verify(signed({H: other}, GH_BODY, 0)).reason == "mismatch"


def test_meta_verifies_wire_bytes_never_reserialised_json() -> None:
    v = verifier({"scheme": "meta", "secrets": ["env:S"]}, {"S": APP_SECRET})
    sig = _hub(APP_SECRET, META_BODY)
    assert v.verify(signed({H: sig}, META_BODY, 0)).ok
    parsed = json.loads(META_BODY)
    for reserialised in (
        json.dumps(parsed).encode(),
        json.dumps(parsed, ensure_ascii=False).encode(),
        json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode(),
    ):
        assert reserialised != META_BODY
        assert v.verify(signed({H: sig}, reserialised, 0)).reason == "mismatch"


def test_rotation_reports_which_secret_matched() -> None:
    v = verifier(
        {"scheme": "meta", "secrets": ["env:NEW", "env:OLD"]}, {"NEW": "new-secret", "OLD": GH_SECRET}
    )
    r = v.verify(signed({H: GH_SIGNATURE}, GH_BODY, 0))
    assert (r.ok, r.secret_index) == (True, 1)


@pytest.mark.parametrize("scheme", ["github", "meta"])
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "missing"),
        ([(H, "")], "malformed"),
        ([(H, GH_SIGNATURE[len("sha256=") :])], "malformed"),  # prefix missing
        ([(H, "sha1=" + GH_SIGNATURE[len("sha256=") :])], "malformed"),  # wrong version tag
        ([(H, "SHA256=" + GH_SIGNATURE[len("sha256=") :])], "malformed"),
        ([(H, GH_SIGNATURE.upper().replace("SHA256=", "sha256="))], "malformed"),  # Meta: lowercase hex
        ([(H, GH_SIGNATURE + "00")], "malformed"),  # too long
        ([(H, GH_SIGNATURE[:-2])], "malformed"),  # too short
        ([(H, GH_SIGNATURE + " ")], "malformed"),  # trailing space
        ([(H, "sha256= " + GH_SIGNATURE[len("sha256=") :])], "malformed"),  # extra space
        ([(H, GH_SIGNATURE + "," + GH_SIGNATURE)], "malformed"),  # comma list
        ([(H, GH_SIGNATURE), (H, GH_SIGNATURE)], "malformed"),  # repeated header
        ([(H, "sha256=" + "é" * 64)], "malformed"),
        (
            [("X-Hub-Signature", "sha1=" + hmac.new(GH_SECRET.encode(), GH_BODY, "sha1").hexdigest())],
            "missing",
        ),
    ],
)
def test_malformed_headers_are_failures_never_exceptions(
    scheme: str, headers: list[tuple[str, str]], reason: str
) -> None:
    v = verifier({"scheme": scheme, "secrets": ["env:S"]}, {"S": GH_SECRET})
    r = v.verify(signed(headers, GH_BODY, 0))
    assert (r.ok, r.reason, r.secret_index) == (False, reason, None)
