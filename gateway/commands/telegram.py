"""`webhook-gateway telegram set-webhook | info`: the Bot API calls, fed from the gateway config.

set-webhook registers the route's first secret as `secret_token`, so the secret Telegram sends
is, by construction, one the route accepts. Nothing secret is printed: the token and the secret
are named by where they come from (`env:BOT_TOKEN`), never shown.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from typing import IO, Any

import aiohttp
from yarl import URL

from gateway import config as cfg
from gateway.serve.telegram_watch import same_url
from gateway.telegram.api import BotApi, BotApiError

# The update types a bot receives when allowed_updates is not given (Telegram's own default).
DEFAULT_UPDATES = "all except chat_member, message_reaction and message_reaction_count"


class CommandError(Exception):
    pass


def add_parser(sub: Any, help_config: str) -> None:
    tg = sub.add_parser("telegram", help="setWebhook / getWebhookInfo for the configured bots")
    tg_sub = tg.add_subparsers(dest="telegram_command", required=True)
    s = tg_sub.add_parser("set-webhook", help="point a bot's webhook at a route, with its secret")
    s.add_argument("--config", help=help_config)
    s.add_argument("--route", required=True, help="route name (its telegram: section has the bot token)")
    s.add_argument("--url", help="public URL Telegram will POST to (default: telegram.expected_url)")
    s.add_argument(
        "--allowed-updates",
        help="comma-separated update types, e.g. message,callback_query (default: keep Telegram's)",
    )
    s.add_argument("--max-connections", type=int, help="1-100 parallel deliveries (Telegram default 40)")
    s.add_argument("--drop-pending-updates", action="store_true", help="discard updates queued so far")
    i = tg_sub.add_parser("info", help="getWebhookInfo, readable")
    i.add_argument("--config", help=help_config)
    i.add_argument("--route", help="one route (default: every route with a telegram: section)")
    i.add_argument("--json", action="store_true", help="print Telegram's answers as JSON")


def run(
    args: argparse.Namespace, config: cfg.Config, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr
) -> int:
    try:
        if args.telegram_command == "set-webhook":
            return asyncio.run(_set_webhook(args, config, out, err))
        return asyncio.run(_info(args, config, out))
    except CommandError as exc:
        print(f"error: {exc}", file=err)
        return 1


def _routes(config: cfg.Config, name: str | None) -> list[tuple[int, cfg.RouteConfig]]:
    with_tg = [(i, r) for i, r in enumerate(config.routes) if r.telegram is not None]
    if name is None:
        if not with_tg:
            raise CommandError("no route has a telegram: section (bot_token: env:NAME or file:PATH)")
        return with_tg
    for i, r in enumerate(config.routes):
        if r.name == name:
            if r.telegram is None:
                raise CommandError(f"routes[{i}] ({name}) has no telegram: section with a bot_token")
            return [(i, r)]
    names = ", ".join(r.name for r in config.routes)
    raise CommandError(f"no route named {name!r} (routes: {names})")


def _params(args: argparse.Namespace, index: int, route: cfg.RouteConfig, err: IO[str]) -> dict[str, Any]:
    tg = route.telegram
    assert tg is not None
    verify = route.verify
    if verify is None or verify.scheme != "telegram":
        raise CommandError(
            f"routes[{index}] ({route.name}) does not verify with scheme: telegram; setWebhook "
            "would register a webhook without a secret_token that the route checks"
        )
    url = args.url or tg.expected_url
    if not url:
        raise CommandError("--url is required (or set the route's telegram.expected_url)")
    try:
        parsed = URL(url)
    except ValueError:
        raise CommandError(f"{url!r} is not a URL") from None
    if parsed.path != route.path:
        print(
            f"warning: Telegram will POST to {parsed.path}, but route {route.name} listens on "
            f"{route.path} (fine only if a proxy in front rewrites the path)",
            file=err,
        )
    if tg.expected_url and not same_url(url, tg.expected_url):
        print(
            f"warning: {url} is not the route's telegram.expected_url ({tg.expected_url}); "
            "the watcher will report webhook_url_matches 0 until the config says the same",
            file=err,
        )
    params: dict[str, Any] = {"url": url, "secret_token": verify.secrets[0].value.decode("ascii")}
    if args.allowed_updates is not None:
        params["allowed_updates"] = [u.strip() for u in args.allowed_updates.split(",") if u.strip()]
    if args.max_connections is not None:
        if not 1 <= args.max_connections <= 100:
            raise CommandError("--max-connections is 1 to 100")
        params["max_connections"] = args.max_connections
    if args.drop_pending_updates:
        params["drop_pending_updates"] = True
    return params


async def _set_webhook(args: argparse.Namespace, config: cfg.Config, out: IO[str], err: IO[str]) -> int:
    [(index, route)] = _routes(config, args.route)
    params = _params(args, index, route, err)  # refuses a route without a telegram secret
    tg = route.telegram
    assert tg is not None and route.verify is not None
    async with aiohttp.ClientSession() as session:
        api = BotApi(tg, session)
        try:
            await api.set_webhook(params)
            info = await api.get_webhook_info()
        except BotApiError as exc:
            print(f"error: route {route.name} (bot {tg.bot_id}): {exc}", file=err)
            return 1
    secret = route.verify.secrets[0]
    print(f"route {route.name}: webhook set", file=out)
    print(f"  url             {params['url']}", file=out)
    print(f"  secret_token    routes[{index}].verify.secrets[0] ({secret.source})", file=out)
    shown = ", ".join(params.get("allowed_updates", [])) or "unchanged"
    print(f"  allowed updates {shown}", file=out)
    if "max_connections" in params:
        print(f"  max connections {params['max_connections']}", file=out)
    if params.get("drop_pending_updates"):
        print("  pending updates dropped", file=out)
    if not same_url(str(info.get("url") or ""), params["url"]):
        print(f"error: getWebhookInfo reports url {info.get('url')!r} after setWebhook", file=err)
        return 1
    return 0


async def _info(args: argparse.Namespace, config: cfg.Config, out: IO[str]) -> int:
    routes = _routes(config, args.route)
    failed = False
    answers: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for _, route in routes:
            tg = route.telegram
            assert tg is not None
            try:
                info = await BotApi(tg, session).get_webhook_info()
            except BotApiError as exc:
                failed = True
                answers[route.name] = {"error": str(exc)}
                if not args.json:
                    print(f"route {route.name} (bot {tg.bot_id}): error: {exc}", file=out)
                continue
            answers[route.name] = info
            if not args.json:
                out.write(describe(route, info))
    if args.json:
        json.dump(answers, out, indent=2, sort_keys=True)
        out.write("\n")
    return 1 if failed else 0


def describe(route: cfg.RouteConfig, info: dict[str, Any], now: float | None = None) -> str:
    """getWebhookInfo as a few aligned lines a person can read at 3 a.m."""
    tg = route.telegram
    assert tg is not None
    now = time.time() if now is None else now
    url = str(info.get("url") or "")
    if not url:
        url_line = "(none: no webhook set; the bot is in getUpdates mode or was deleted)"
    elif tg.expected_url is None:
        url_line = url
    elif same_url(url, tg.expected_url):
        url_line = f"{url}  (matches expected_url)"
    else:
        url_line = f"{url}  (DIFFERS from expected_url {tg.expected_url})"
    lines = [
        f"route {route.name} (bot {tg.bot_id}, {tg.api_base})",
        f"  url               {url_line}",
        f"  pending updates   {info.get('pending_update_count', 0)}",
        f"  last error        {_when(info.get('last_error_date'), now, info.get('last_error_message'))}",
        f"  last sync error   {_when(info.get('last_synchronization_error_date'), now, None)}",
        f"  max connections   {info.get('max_connections', 'default (40)')}",
        f"  allowed updates   {', '.join(info.get('allowed_updates') or []) or DEFAULT_UPDATES}",
        f"  ip address        {info.get('ip_address', 'unknown')}",
        f"  custom cert       {'yes (self-signed upload)' if info.get('has_custom_certificate') else 'no'}",
    ]
    return "\n".join(lines) + "\n"


def _when(ts: Any, now: float, message: Any) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "none"
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = f"{stamp} ({_ago(now - ts)})"
    return f"{text}: {message}" if message else text


def _ago(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
