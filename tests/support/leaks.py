"""Everything gateways said during the session, kept for the secret-leak scan."""

from __future__ import annotations

import base64
import hmac
import json
import urllib.parse

from tests.support.env import ENV

# Every log stream, error body, raw response and /metrics text the suite sees a gateway produce
# is kept here; tests/adversarial/test_zz_secret_leaks.py scans all of it at the end of the
# session for every secret in ENV and every signature noted below. Helpers that talk to a
# gateway record on their own; a test reading gateway output some other way calls
# `record_output` itself.
OUTPUTS: list[tuple[str, str]] = []
SIGNATURES: set[str] = set()


def record_output(kind: str, data: str | bytes) -> None:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    if text:
        OUTPUTS.append((kind, text))


def note_signature(value: str) -> str:
    """Remember a signature a test computed (it must never come back out); returns it."""
    if value:
        SIGNATURES.add(value)
    return value


def hmac_signature(
    secret: str | bytes,
    body: bytes,
    *,
    algorithm: str = "sha256",
    encoding: str = "hex",
    prefix: str = "",
) -> str:
    """A header value for the `hmac` scheme, noted for the leak scan."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, body, algorithm).digest()
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    note_signature(encoded)
    return prefix + encoded


def secret_leaks(outputs: list[tuple[str, str]] | None = None) -> list[str]:
    """Where a configured secret or a noted signature shows up, described without the value."""
    needles: dict[str, str] = {}
    for name, value in ENV.items():
        raw = value.encode()
        needles[f"secret {name}"] = value
        needles[f"secret {name} (JSON-escaped)"] = json.dumps(value)[1:-1]
        needles[f"secret {name} (URL-encoded)"] = urllib.parse.quote(value, safe="")
        needles[f"secret {name} (hex)"] = raw.hex()
        needles[f"secret {name} (base64)"] = base64.b64encode(raw).decode().rstrip("=")
        needles[f"secret {name} (bytes repr)"] = repr(raw)[2:-1]
    for i, sig in enumerate(sorted(SIGNATURES)):
        needles[f"signature #{i} ({len(sig)} chars)"] = sig
    found = []
    for index, (kind, text) in enumerate(OUTPUTS if outputs is None else outputs):
        for label, needle in needles.items():
            if needle and needle in text:
                found.append(f"{label} in output #{index} ({kind})")
    return found
