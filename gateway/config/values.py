"""Parsers for the gateway's own value types: listen addresses, networks, upstreams, presets."""

from __future__ import annotations

import ipaddress
from importlib import resources
from typing import Any

import yaml
from yarl import URL

from gateway.config.model import Listen, Network, Upstream


def parse_listen(value: Any) -> Listen:
    text = str(value).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"{text!r} is not HOST:PORT (examples: 0.0.0.0:8080, [::]:8443)")
    return Listen(host, int(port))


def parse_network(value: Any) -> Network:
    text = str(value).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{text!r} has host bits set (did you mean {fixed}?)") from None
        raise ValueError(f"{text!r} is not an IP network in CIDR form") from None


def parse_upstream(value: Any) -> Upstream:
    text = str(value).strip()
    if text.startswith("unix:"):
        rest = text[len("unix:") :]
        cut = rest.rfind(":/")
        sock, http_path = (rest[:cut], rest[cut + 1 :]) if cut > 0 else (rest, "/")
        if not sock.startswith("/"):
            raise ValueError("a unix upstream is unix:/absolute/socket/path[:/http/path]")
        return Upstream(url=f"http://localhost{http_path}", unix_socket=sock)
    try:
        url = URL(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r}: an upstream is http(s)://host:port/path or unix:/socket:/path")
    if url.query_string or url.fragment:
        raise ValueError("an upstream URL carries no query or fragment")
    return Upstream(url=str(url))


def load_presets() -> dict[str, tuple[Network, ...]]:
    raw = yaml.safe_load(resources.files("gateway").joinpath("presets.yaml").read_text())
    return {name: tuple(ipaddress.ip_network(n) for n in nets) for name, nets in raw.items()}


PRESETS = load_presets()


ORDER_BY_HELP = "auto, route, chat or field:NAME[.NAME...] (a JSON field of the body)"


def parse_order_by(value: Any) -> str:
    """The `spool_order_by` route key: auto (chat for Telegram, else route), route, chat, or
    field:a.b.c."""
    if not isinstance(value, str):
        raise ValueError(f"expected one of: {ORDER_BY_HELP}")
    if value in ("auto", "route", "chat"):
        return value
    if value.startswith("field:") and all(part for part in value[6:].split(".")):
        return value
    raise ValueError(f"{value!r} is not one of: {ORDER_BY_HELP}")
