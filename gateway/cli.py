"""Command line: `webhook-gateway run | check | sign | demo | spool | doctor | telegram`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway import config as cfg
from gateway import logs
from gateway.config import overrides
from gateway.spool import cli as spool_cli

log = logging.getLogger("webhook_gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webhook-gateway", description="Verifying reverse proxy for bot webhooks."
    )
    sub = p.add_subparsers(dest="command", required=True)
    help_config = f"config file (default: ${cfg.CONFIG_ENV}, else {cfg.DEFAULT_CONFIG_PATH})"
    run = sub.add_parser(
        "run",
        help="serve",
        description="Serve the config's routes until SIGTERM/SIGINT; SIGHUP or an edit of the file "
        "reloads it.",
    )
    run.add_argument("--config", help=help_config)
    overrides.add_arguments(run)
    check = sub.add_parser("check", help="validate a config and list every problem")
    check.add_argument("--config", help=help_config)
    demo = sub.add_parser("demo", help="run a gateway in front of a built-in echo bot and send three updates")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the echo bot and the gateway running (on 127.0.0.1:8080) and print a curl to try it",
    )
    overrides.add_arguments(demo)
    spool_cli.add_parser(sub, help_config)
    sign = sub.add_parser(
        "sign",
        help="print the headers a sender would send for a body, one 'Name: value' per line",
        description="Sign a body for one route with its first secret, as the sender would, and print "
        "the headers (usable with curl -H @FILE). The route's path, with any query the scheme "
        "signs, goes to stderr.",
    )
    sign.add_argument("--config", help=help_config)
    sign.add_argument("--route", required=True, help="route name")
    sign.add_argument("--body", required=True, help="file holding the exact body bytes ('-': stdin)")
    sign.add_argument("--content-type", default="application/json", help="default: application/json")
    sign.add_argument("--timestamp", type=int, help="unix time for timestamped schemes (default: now)")
    sign.add_argument("--query", default="", help="query string the request will carry (twilio signs it)")
    sign.add_argument("--id", default="", help="message id for standard-webhooks (default: random)")
    sign.add_argument(
        "--private-key",
        metavar="FILE",
        help="signing key for discord, telnyx, sendgrid, sns and standard-webhooks v1a "
        "(PEM, or the Ed25519 seed as hex, base64 or whsk_)",
    )
    sign.add_argument("--cert-url", default="", help="sns: the SigningCertURL to put in the message")
    sign.add_argument("--signed-body", metavar="FILE", help="sns: where to write the signed message to send")
    doctor = sub.add_parser("doctor", help="check a public webhook URL the way Telegram will use it")
    doctor.add_argument("url", help="the webhook URL, e.g. https://bot.example.com/tg/my-bot/SEGMENT")
    doctor.add_argument("--ca", help="PEM file of trusted CAs to verify with (default: system store)")
    doctor.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:IP",
        help="use IP for HOST instead of DNS, as curl --resolve (HOST:PORT:IP also accepted)",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable results")
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per network step")
    from gateway.commands.telegram import add_parser as add_telegram

    add_telegram(sub, help_config)
    worker = sub.add_parser("worker", help="internal: one of the processes `run` starts when workers > 1")
    worker.add_argument("--config", help=help_config)
    worker.add_argument("--ready-fd", type=int, required=True, help="pipe to write `ready` to")
    overrides.add_arguments(worker)
    return p


def _load(path: str) -> cfg.Config | None:
    warnings: list[str] = []
    try:
        config = cfg.load(path, warnings=warnings)
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return None
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def cmd_check(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    modes = ", ".join(f"{r.name}={r.mode}" for r in config.routes)
    print(f"{path}: ok ({len(config.routes)} route(s): {modes})")
    return 0


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; -> the soft limit now in force.

    Every idle client holds a descriptor: a default soft limit of 1024 would let a thousand
    idle sockets starve valid traffic long before memory or the hard limit would.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one on Linux (fs.nr_open caps it).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit", extra={"soft": soft, "error": str(exc)})
    return soft


def cmd_run(path: str, over: overrides.Overrides, ready_fd: int | None = None) -> int:
    from gateway.serve.service import run

    logs.setup()
    warnings: list[str] = []
    try:
        config = cfg.load(path, warnings=warnings)
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            log.error("refusing to start", extra={"problem": problem})
        return 1
    try:
        config = over.apply(config)
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    for warning in warnings:
        log.warning("config_deprecated", extra={"problem": warning})
    log.info("starting", extra={"public_parser": "llhttp", "fd_limit": raise_fd_limit()})
    if config.workers > 1 and ready_fd is None:
        from gateway.serve.workers import supervise

        return skip_exit_collection(_loop_run(supervise(config, path, over)))
    return skip_exit_collection(_loop_run(run(config, path, ready_fd, over)))


def skip_exit_collection(code: int) -> int:
    """Once serving has stopped: move every object to the collector's permanent generation, so
    the interpreter's exit-time collection does not walk the whole heap after `stopped`
    (docs/decisions/0003-garbage-collector.md)."""
    gc.freeze()
    return code


def _loop_run(main: Coroutine[Any, Any, int]) -> int:
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency; kept for odd platforms
            return asyncio.run(main)
        return uvloop.run(main)
    except cfg.ConfigError as exc:  # e.g. certificate files that broke between check and start
        for problem in exc.problems:
            log.error("refusing to start", extra={"problem": problem})
        return 1


def _overrides(args: argparse.Namespace) -> overrides.Overrides | None:
    """--listen/--admin-listen and their environment variables; None (after saying why) when a
    variable is malformed: a usage error, reported the way argparse reports a bad flag."""
    try:
        return overrides.resolve(args.listen, args.admin_listen, os.environ)
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            print(f"webhook-gateway {args.command}: error: {problem}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(cfg.default_path(args.config))
    if args.command in ("run", "worker"):
        from gateway.serve.service import hold_sighup

        hold_sighup()
        over = _overrides(args)
        if over is None:
            return 2
        ready_fd = args.ready_fd if args.command == "worker" else None
        return cmd_run(cfg.default_path(args.config), over, ready_fd=ready_fd)
    if args.command == "spool":
        return spool_cli.run(args)
    if args.command == "sign":
        from gateway.commands.sign import cmd_sign

        path = cfg.default_path(args.config)
        config = _load(path)
        if config is None:
            return 1
        return cmd_sign(
            config,
            args.route,
            args.body,
            args.content_type,
            args.timestamp,
            args.query,
            args.id,
            private_key=args.private_key,
            cert_url=args.cert_url,
            signed_body=args.signed_body,
        )
    if args.command == "demo":
        from gateway.commands.demo import run_demo, serve_demo

        if not args.serve:
            return asyncio.run(run_demo())
        over = _overrides(args)
        return 2 if over is None else asyncio.run(serve_demo(over))
    if args.command == "doctor":
        from gateway.commands.doctor import main as doctor

        return doctor(args.url, args.ca, args.resolve, args.json, args.timeout, sys.stdout)
    if args.command == "telegram":
        from gateway.commands.telegram import run as telegram

        config = _load(cfg.default_path(args.config))
        return 1 if config is None else telegram(args, config)
    return 2


if __name__ == "__main__":
    sys.exit(main())
