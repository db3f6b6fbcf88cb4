"""Signature schemes, by config name. Adding a sender is one file plus one line here."""

from __future__ import annotations

from gateway.schemes.base import Scheme
from gateway.schemes.discord import DiscordScheme
from gateway.schemes.github import GithubScheme
from gateway.schemes.gitlab import GitlabScheme
from gateway.schemes.hmac_body import HmacScheme
from gateway.schemes.meta import MetaScheme
from gateway.schemes.sendgrid import SendgridScheme
from gateway.schemes.shopify import ShopifyScheme
from gateway.schemes.slack import SlackScheme
from gateway.schemes.sns import SnsScheme
from gateway.schemes.standard_webhooks import StandardWebhooksScheme
from gateway.schemes.stripe import StripeScheme
from gateway.schemes.telegram import TelegramScheme
from gateway.schemes.telnyx import TelnyxScheme
from gateway.schemes.twilio import TwilioScheme

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        TelegramScheme(),
        HmacScheme(),
        MetaScheme(),
        GithubScheme(),
        SlackScheme(),
        StripeScheme(),
        StandardWebhooksScheme(),
        ShopifyScheme(),
        GitlabScheme(),
        TwilioScheme(),
        DiscordScheme(),
        TelnyxScheme(),
        SendgridScheme(),
        SnsScheme(),
    )
}
