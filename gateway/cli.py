"""Command line: `webhook-gateway run | check | demo`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from gateway import config as cfg
from gateway import logs

log = logging.getLogger("webhook_gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="webhook-gateway", description="Verifying reverse proxy for bot webhooks."
    )
    sub = p.add_subparsers(dest="command", required=True)
    help_config = f"config file (default: ${cfg.CONFIG_ENV}, else {cfg.DEFAULT_CONFIG_PATH})"
    run = sub.add_parser("run", help="serve")
    run.add_argument("--config", help=help_config)
    check = sub.add_parser("check", help="validate a config and list every problem")
    check.add_argument("--config", help=help_config)
    sub.add_parser("demo", help="run a gateway in front of a built-in echo bot and send three updates")
    worker = sub.add_parser("worker", help="internal: one of the processes `run` starts when workers > 1")
    worker.add_argument("--config", help=help_config)
    worker.add_argument("--ready-fd", type=int, required=True, help="pipe to write `ready` to")
    return p


def _load(path: str) -> cfg.Config | None:
    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return None


def cmd_check(path: str) -> int:
    config = _load(path)
    if config is None:
        return 1
    modes = ", ".join(f"{r.name}={r.mode}" for r in config.routes)
    print(f"{path}: ok ({len(config.routes)} route(s): {modes})")
    return 0


def cmd_run(path: str, ready_fd: int | None = None) -> int:
    from gateway.app import pure_python_parser, run

    logs.setup()
    config = _load(path)
    if config is None:
        return 1
    if pure_python_parser() and not config.allow_pure_python_parser:
        log.error(
            "refusing to start: aiohttp is using its pure-Python HTTP parser (AIOHTTP_NO_EXTENSIONS "
            "or no C extension); set allow_pure_python_parser: true to accept it"
        )
        return 1
    if config.workers > 1 and ready_fd is None:
        from gateway.workers import supervise

        return _loop_run(supervise(config, path))
    return _loop_run(run(config, path, ready_fd))


def _loop_run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; kept for odd platforms
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(cfg.default_path(args.config))
    if args.command == "run":
        return cmd_run(cfg.default_path(args.config))
    if args.command == "worker":
        return cmd_run(cfg.default_path(args.config), ready_fd=args.ready_fd)
    if args.command == "demo":
        from gateway.demo import run_demo

        return asyncio.run(run_demo())
    return 2


if __name__ == "__main__":
    sys.exit(main())
