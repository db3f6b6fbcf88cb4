"""No secret and no signature in anything the suite saw a gateway produce.

`tests.support.leaks.OUTPUTS` holds every access log, operational log record, stderr/stdout of the
gateway processes, error body, raw response and /metrics text of the whole session (see
tests/support/leakscan.py); this test runs after every other one, wherever it was collected.
"""

from __future__ import annotations

import pytest

from tests.support.env import ENV, TG_SECRET
from tests.support.leaks import OUTPUTS, SIGNATURES, hmac_signature, secret_leaks


def test_scanner_finds_planted_secrets_and_signatures_without_repeating_them() -> None:
    sig = hmac_signature(ENV["HMAC_SECRET"], b"planted body")
    planted = [
        ("log", f'{{"event": "x", "token": "{TG_SECRET}"}}'),
        ("error body", "Invalid header: 'hmac%20secret%3A%20bytes%20and%20spaces%21'"),
        ("metrics", f'x{{sig="{sig}"}} 1'),
        ("clean", "nothing to see"),
    ]
    found = secret_leaks(planted)
    assert any("TG_SECRET in output #0" in f for f in found), found
    assert any("HMAC_SECRET (URL-encoded) in output #1" in f for f in found), found
    assert any("signature" in f and "output #2" in f for f in found), found
    assert not any("output #3" in f for f in found)
    assert not any(secret in f for f in found for secret in ENV.values())


@pytest.mark.leak_scan
def test_no_secret_or_signature_leaked_anywhere_in_the_session(request: pytest.FixtureRequest) -> None:
    others = [item for item in request.session.items if item is not request.node]
    if not others:
        pytest.skip("nothing else ran in this session: the scan needs the rest of the suite")
    kinds = {kind for kind, _ in OUTPUTS}
    assert OUTPUTS, "no gateway output was collected: the collection in tests/support/leaks.py is broken"
    if any("tests/adversarial/test_raw_http.py" in item.nodeid for item in others):
        assert {"gateway stderr", "metrics", "raw response"} <= kinds, kinds
    assert SIGNATURES, "no signature was noted"
    leaks = secret_leaks()
    assert not leaks, f"{len(leaks)} leak(s) in {len(OUTPUTS)} outputs:\n" + "\n".join(leaks[:50])
