"""The scheme registry: every sender the README lists, its replay key and its config keys."""

from __future__ import annotations

import pytest

from gateway.schemes import SCHEMES
from tests.support.schemes import config_problems


def test_every_scheme_is_registered_under_its_name() -> None:
    assert sorted(SCHEMES) == sorted(
        [
            "telegram",
            "hmac",
            "meta",
            "github",
            "slack",
            "stripe",
            "standard-webhooks",
            "shopify",
            "gitlab",
            "twilio",
            "basic-auth",
            "api-key",
            "hmac-template",
            "zoom",
            "twitch",
            "x",
            "box",
            "dropbox",
            "xero",
            "teams",
            "worldline",
            "msgraph",
            "discord",
            "telnyx",
            "sendgrid",
            "sns",
        ]
    )
    for name, scheme in SCHEMES.items():
        assert scheme.name == name


@pytest.mark.parametrize(
    ("scheme", "header"),
    [
        ("telegram", None),  # update_id in the body
        ("hmac", None),
        ("meta", None),
        ("github", "X-GitHub-Delivery"),
        ("slack", None),
        ("stripe", None),  # evt_ id in the body; the signed timestamp bounds replays
        ("standard-webhooks", "webhook-id"),
        ("shopify", "X-Shopify-Webhook-Id"),
        ("gitlab", "Idempotency-Key"),
        ("twilio", "I-Twilio-Idempotency-Token"),
        ("msgraph", None),  # subscriptionId + resource in the body
        ("discord", None),  # the interaction id is in the body
        ("telnyx", None),
        ("sendgrid", None),  # sg_event_id per event, in the body
        ("sns", "x-amz-sns-message-id"),  # checked against the signed MessageId
    ],
)
def test_replay_key_suggestions(scheme: str, header: str | None) -> None:
    assert SCHEMES[scheme].replay_header == header


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        (
            {"scheme": "github", "secrets": ["env:S"], "tolerance": "5m"},
            "routes[0].verify.tolerance: unknown key",
        ),
        (
            {"scheme": "slack", "secrets": ["env:S"], "tolerance": "soon"},
            "routes[0].verify.tolerance: 'soon' is not a duration",
        ),
        (
            {"scheme": "stripe", "secrets": ["env:W"], "tolerence": "5m"},
            "unknown key (did you mean tolerance?)",
        ),
        (
            {"scheme": "meta", "secrets": ["env:S"], "verify_token": "inline-token"},
            "routes[0].verify.verify_token: secrets come only from env:NAME or file:PATH",
        ),
        (
            {"scheme": "meta", "secrets": ["env:S"], "verify_token": "env:NOPE"},
            "routes[0].verify.verify_token: environment variable NOPE is not set",
        ),
        (
            {"scheme": "meta", "secrets": ["env:S"], "verify_token": "file:/nonexistent/token"},
            "routes[0].verify.verify_token: cannot read secret file",
        ),
        (
            {"scheme": "twilio", "secrets": ["env:S"], "public_url": "https://x.example/t", "header": "X"},
            "routes[0].verify.header: unknown key",
        ),
    ],
)
def test_scheme_option_errors_have_locations(verify: dict[str, object], expected: str) -> None:
    problems = config_problems(verify, {"S": "s3cr3t-value", "W": "whsec_abc"})
    assert any(expected in p for p in problems), problems
    assert not any("s3cr3t-value" in p or "inline-token" in p for p in problems)
