"""webhook-gateway: a verifying reverse proxy for chat-bot webhooks."""

__version__ = "0.1.0"
