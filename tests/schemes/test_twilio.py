"""twilio: base64 HMAC-SHA1 over public_url + query + sorted form params, or bodySHA256 for JSON.

Oracles: the vectors published with Twilio's Python SDK tests, and its RequestValidator both ways.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from gateway.schemes.base import ToSign
from tests.support.schemes import config_problems, flip, sign, signed, verifier

H = "X-Twilio-Signature"
FORM = "application/x-www-form-urlencoded"

# twilio-python's RequestValidator tests: auth token 12345, this URL and these parameters.
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php"
QUERY = "foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
FORM_BODY = urlencode(PARAMS).encode()  # "+" travels as %2B
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
JSON_BODY = b'{"property": "value", "boolean": true}'
JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
JSON_EXPECTED = "a9nBmqA0ju/hNViExpshrM61xv4="


def conf(public_url: str = URL) -> dict[str, object]:
    return {"scheme": "twilio", "secrets": ["env:T"], "public_url": public_url}


def check(body: bytes, sig: str, query: str = QUERY, ctype: str = FORM, public_url: str = URL, **extra: str):
    hdrs = {H: sig, "Content-Type": ctype, **extra}
    return verifier(conf(public_url), {"T": TOKEN}).verify(signed(hdrs, body, 0, query))


def test_published_form_example() -> None:
    r = check(FORM_BODY, EXPECTED)
    assert (r.ok, r.secret_index) == (True, 0)
    # Parameter order on the wire does not matter (Twilio sorts); a charset parameter neither.
    reordered = urlencode(sorted(PARAMS.items(), reverse=True)).encode()
    assert check(reordered, EXPECTED, ctype=FORM + "; charset=utf-8").ok


def test_published_form_example_one_change_fails() -> None:
    assert check(FORM_BODY.replace(b"1234", b"1235", 1), EXPECTED).reason == "mismatch"
    assert check(FORM_BODY + b"&Extra=1", EXPECTED).reason == "mismatch"
    assert check(FORM_BODY, EXPECTED, query="foo=1&bar=3").reason == "mismatch"
    assert check(FORM_BODY, EXPECTED, query="").reason == "mismatch"
    assert check(FORM_BODY, EXPECTED, public_url="https://mycompany.com/myapp.php/").reason == "mismatch"
    assert check(FORM_BODY, EXPECTED, public_url="http://mycompany.com/myapp.php").reason == "mismatch"


@pytest.mark.parametrize(
    ("public_url", "signature"),
    [
        ("https://mycompany.com:1234/myapp.php", EXPECTED),  # signed without the port
        (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443 added
        ("http://mycompany.com:1234/myapp.php", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        ("http://mycompany.com/myapp.php", "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80 added
    ],
)
def test_published_port_variants(public_url: str, signature: str) -> None:
    assert check(FORM_BODY, signature, public_url=public_url).ok


def test_published_duplicate_parameters() -> None:
    body = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234"
    assert check(body, "IK+Dwps556ElfBT0I3Rgjkr1wJU=").ok


def test_published_json_example() -> None:
    assert hashlib.sha256(JSON_BODY).hexdigest() == JSON_HASH
    query = f"{QUERY}&bodySHA256={JSON_HASH}"
    assert check(JSON_BODY, JSON_EXPECTED, query=query, ctype="application/json").ok
    # The body is covered by the hash in the signed URL: one byte off, or re-serialised, fails.
    assert (
        check(flip(JSON_BODY, 3), JSON_EXPECTED, query=query, ctype="application/json").reason == "mismatch"
    )
    compact = json.dumps(json.loads(JSON_BODY), separators=(",", ":")).encode()
    assert check(compact, JSON_EXPECTED, query=query, ctype="application/json").reason == "mismatch"


WIRE_PARAMS = [
    ("Body", "Héllo wörld 👋 & more=yes"),
    ("From", "whatsapp:+14155238886"),
    ("FromCity", ""),  # Twilio sends empty fields, and signs them
    ("MediaUrl0", "https://api.twilio.com/x?a=1&b=2"),
    ("To", "+15005550006"),
    ("a", "lowercase sorts after uppercase"),
]


def test_what_the_sdk_signs_passes() -> None:
    body = urlencode(WIRE_PARAMS).encode()
    query = "tenant=acme&x=%2F%20y"  # kept percent-encoded, exactly as sent
    sdk_sig = RequestValidator(TOKEN).compute_signature(f"{URL}?{query}", dict(WIRE_PARAMS))
    assert check(body, sdk_sig, query=query).ok
    for at in (0, len(body) // 2, -1):
        assert check(flip(body, at), sdk_sig, query=query).ok is False
    assert check(body, sdk_sig, query="tenant=acme&x=/%20y").reason == "mismatch"


def test_what_sign_prints_passes_the_sdk() -> None:
    body = urlencode(WIRE_PARAMS).encode()
    out = sign(conf(), {"T": TOKEN}, ToSign(body, 0, content_type=FORM, query="k=v"))
    ((name, value),) = out.headers
    assert name == H and out.query == "k=v"
    assert RequestValidator(TOKEN).validate(f"{URL}?k=v", dict(WIRE_PARAMS), value)
    # JSON: sign adds bodySHA256 to the query, as Twilio does, and the SDK agrees.
    out = sign(conf(), {"T": TOKEN}, ToSign(JSON_BODY, 0, content_type="application/json", query=QUERY))
    assert out.query == f"{QUERY}&bodySHA256={JSON_HASH}"
    assert out.headers[0][1] == JSON_EXPECTED
    assert RequestValidator(TOKEN).validate(f"{URL}?{out.query}", JSON_BODY.decode(), JSON_EXPECTED)


def test_shared_key_hmac_sha256() -> None:
    body = urlencode(WIRE_PARAMS).encode()
    sig = RequestValidator(TOKEN).compute_signature(URL, dict(WIRE_PARAMS), algorithm="HMAC_SHA256")
    settings = "key=webhooks_sharedkey_0123,algorithm=HMAC_SHA256"
    assert check(body, sig, query="", **{"X-Twilio-Webhooks-Signature-Settings": settings}).ok
    assert check(body, sig, query="").reason == "malformed"  # a SHA-256 MAC is not a SHA-1 one
    unknown = "key=k,algorithm=HMAC_MD5"
    assert (
        check(body, sig, query="", **{"X-Twilio-Webhooks-Signature-Settings": unknown}).reason == "malformed"
    )


@pytest.mark.parametrize(
    ("body", "sig", "query", "ctype", "reason"),
    [
        (FORM_BODY, None, QUERY, FORM, "missing"),
        (FORM_BODY, "", QUERY, FORM, "malformed"),
        (FORM_BODY, EXPECTED.rstrip("="), QUERY, FORM, "malformed"),  # bad base64
        (FORM_BODY, EXPECTED + "AAAA", QUERY, FORM, "malformed"),  # wrong length
        (FORM_BODY, " " + EXPECTED, QUERY, FORM, "malformed"),
        (FORM_BODY, EXPECTED + "," + EXPECTED, QUERY, FORM, "malformed"),
        (b"Body=%ff%fe", EXPECTED, QUERY, FORM, "malformed"),  # not UTF-8
        (JSON_BODY, JSON_EXPECTED, QUERY, "application/json", "malformed"),  # nothing signs the body
        (
            JSON_BODY,
            JSON_EXPECTED,
            f"{QUERY}&bodySHA256={JSON_HASH.upper()}",
            "application/json",
            "malformed",
        ),
        (JSON_BODY, JSON_EXPECTED, f"{QUERY}&bodySHA256=abc", "application/json", "malformed"),
        (JSON_BODY, JSON_EXPECTED, f"{QUERY}&bodySHA256={'0' * 64}", "application/json", "mismatch"),
        (b"", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", QUERY, "", "mismatch"),  # empty body: URL only
    ],
)
def test_malformed(body: bytes, sig: str | None, query: str, ctype: str, reason: str) -> None:
    hdrs = {"Content-Type": ctype} if ctype else {}
    if sig is not None:
        hdrs[H] = sig
    r = verifier(conf(), {"T": TOKEN}).verify(signed(hdrs, body, 0, query))
    assert (r.ok, r.reason) == (False, reason)


def test_repeated_content_type_is_malformed() -> None:
    hdrs = [(H, EXPECTED), ("Content-Type", FORM), ("Content-Type", "application/json")]
    assert verifier(conf(), {"T": TOKEN}).verify(signed(hdrs, FORM_BODY, 0, QUERY)).reason == "malformed"


@pytest.mark.parametrize(
    ("public_url", "message"),
    [
        (None, "routes[0].verify.public_url: is required"),
        ("https://bots.example.com/sms?tenant=1", "no query or fragment"),
        ("https://bots.example.com/sms#x", "no query or fragment"),
        ("ftp://bots.example.com/sms", "is not an http(s) URL"),
        ("/sms", "is not an http(s) URL"),
        ("https://bots.example.com/a b", "percent-encoded"),
        (42, "expected the URL Twilio is configured to call"),
    ],
)
def test_public_url_config(public_url: object, message: str) -> None:
    verify: dict[str, object] = {"scheme": "twilio", "secrets": ["env:T"]}
    if public_url is not None:
        verify["public_url"] = public_url
    problems = config_problems(verify, {"T": TOKEN})
    assert len(problems) == 1 and message in problems[0], problems
