"""`webhook-gateway sign`: the headers a sender would send, so a route can be tried with curl.

Signs with the route's first configured secret (the current one in a rotation list), or for
the public-key schemes with `--private-key FILE`. The output is one `Name: value` line per
header, usable with `curl -H @file`; the headers it prints are credentials for that route, just
as the sender's own would be. SNS signs fields inside the body: the signed message is written
to `--signed-body FILE` and sent instead of the input.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from gateway import config as cfg
from gateway.schemes import SCHEMES
from gateway.schemes.base import ToSign


class SignError(Exception):
    pass


@dataclass(frozen=True)
class Signed:
    headers: list[tuple[str, str]]  # Content-Type first, then the scheme's headers
    path: str  # the route path, with the query to send (Twilio signs it) when there is one
    body: bytes | None = None  # sns: the message with its signature, to send instead of the input


def sign_route(
    config: cfg.Config,
    route_name: str,
    body: bytes,
    *,
    now: int,
    content_type: str = "application/json",
    query: str = "",
    message_id: str = "",
    private_key: bytes = b"",
    cert_url: str = "",
) -> Signed:
    route = next((r for r in config.routes if r.name == route_name), None)
    if route is None:
        names = ", ".join(r.name for r in config.routes)
        raise SignError(f"no route named {route_name!r} (routes: {names})")
    if route.verify is None:
        raise SignError(f"route {route_name!r} has no verify: there is nothing to sign")
    scheme = SCHEMES[route.verify.scheme]
    try:
        sig = scheme.sign(
            route.verify, ToSign(body, now, content_type, query, message_id, private_key, cert_url)
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignError(f"route {route_name!r} ({route.verify.scheme}): {exc}") from None
    headers = [("Content-Type", content_type), *sig.headers]
    return Signed(headers, route.path + ("?" + sig.query if sig.query else ""), sig.body)


def read_body(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SignError(f"{path}: cannot read body: {exc.strerror or exc}") from None


def cmd_sign(
    config: cfg.Config,
    route_name: str,
    body_path: str,
    content_type: str,
    timestamp: int | None,
    query: str,
    message_id: str,
    *,
    private_key: str | None = None,
    cert_url: str = "",
    signed_body: str | None = None,
) -> int:
    try:
        body = read_body(body_path)
        key = b""
        if private_key is not None:
            try:
                with open(private_key, "rb") as fh:
                    key = fh.read()
            except OSError as exc:
                raise SignError(
                    f"{private_key}: cannot read the private key: {exc.strerror or exc}"
                ) from None
        signed = sign_route(
            config,
            route_name,
            body,
            now=int(time.time()) if timestamp is None else timestamp,
            content_type=content_type,
            query=query,
            message_id=message_id,
            private_key=key,
            cert_url=cert_url,
        )
        if signed.body is not None:
            if signed_body is None:
                raise SignError(
                    "this scheme signs fields inside the body: give --signed-body FILE to write it to"
                )
            try:
                with open(signed_body, "wb") as fh:
                    fh.write(signed.body)
            except OSError as exc:
                raise SignError(f"{signed_body}: cannot write: {exc.strerror or exc}") from None
    except SignError as exc:
        print(f"sign: {exc}", file=sys.stderr)
        return 1
    for name, value in signed.headers:
        print(f"{name}: {value}")
    what = f"the body in {signed_body}" if signed.body is not None else "the body unchanged"
    print(f"sign: POST {signed.path} with these headers and {what}", file=sys.stderr)
    return 0
