"""The Telegram companion: setWebhook / getWebhookInfo from the route's config, and a watcher."""
