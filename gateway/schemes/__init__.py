"""Signature schemes, by config name. Adding a sender is one file plus one line here."""

from __future__ import annotations

from gateway.schemes.api_key import ApiKeyScheme
from gateway.schemes.base import Scheme
from gateway.schemes.basic_auth import BasicAuthScheme
from gateway.schemes.discord import DiscordScheme
from gateway.schemes.github import GithubScheme
from gateway.schemes.gitlab import GitlabScheme
from gateway.schemes.hmac_body import HmacScheme
from gateway.schemes.meta import MetaScheme
from gateway.schemes.msgraph import MsgraphScheme
from gateway.schemes.presets import PRESET_SCHEMES
from gateway.schemes.sendgrid import SendgridScheme
from gateway.schemes.shopify import ShopifyScheme
from gateway.schemes.slack import SlackScheme
from gateway.schemes.sns import SnsScheme
from gateway.schemes.standard_webhooks import StandardWebhooksScheme
from gateway.schemes.stripe import StripeScheme
from gateway.schemes.telegram import TelegramScheme
from gateway.schemes.telnyx import TelnyxScheme
from gateway.schemes.template import TemplateScheme
from gateway.schemes.twilio import TwilioScheme

_ALL: tuple[Scheme, ...] = (
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
    BasicAuthScheme(),
    ApiKeyScheme(),
    TemplateScheme(),
    MsgraphScheme(),
    DiscordScheme(),
    TelnyxScheme(),
    SendgridScheme(),
    SnsScheme(),
    *PRESET_SCHEMES,
)
SCHEMES: dict[str, Scheme] = {s.name: s for s in _ALL}
