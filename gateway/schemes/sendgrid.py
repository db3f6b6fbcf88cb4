"""SendGrid Event Webhook (signed): `X-Twilio-Email-Event-Webhook-Signature` = base64 DER ECDSA
P-256 / SHA-256 signature of timestamp + raw body, the timestamp from
`X-Twilio-Email-Event-Webhook-Timestamp`. The verification key SendGrid shows is base64 of the
SubjectPublicKeyInfo DER; it goes in `public_keys:` as it is.
"""

from __future__ import annotations

from gateway.schemes.asymmetric import BASE64, Layout, TimestampedKeyScheme

LAYOUT = Layout(
    "X-Twilio-Email-Event-Webhook-Signature",
    "X-Twilio-Email-Event-Webhook-Timestamp",
    "p256",
    *BASE64,
    joiner=b"",
)


class SendgridScheme(TimestampedKeyScheme):
    def __init__(self) -> None:
        super().__init__("sendgrid", LAYOUT)
