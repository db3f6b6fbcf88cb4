"""Telnyx (API v2 webhooks): `telnyx-signature-ed25519` = base64 Ed25519 signature of
`{timestamp}|{raw body}`, the timestamp from `telnyx-timestamp`, refused outside `tolerance`
(default 300 s, as Telnyx's own SDKs). The public key is the base64 one in the Mission Control
portal.
"""

from __future__ import annotations

from gateway.schemes.asymmetric import BASE64, Layout, TimestampedKeyScheme

LAYOUT = Layout("telnyx-signature-ed25519", "telnyx-timestamp", "ed25519", *BASE64, joiner=b"|")


class TelnyxScheme(TimestampedKeyScheme):
    def __init__(self) -> None:
        super().__init__("telnyx", LAYOUT)
