"""Run-time overrides of the listen addresses: `run --listen/--admin-listen` and their
environment variables, so a container or a second local copy changes ports without editing
a copy of the config.

An override wins over the file for the life of the process: a reload applies it again to the
file it reads (so it neither reverts to the file's value nor counts as a restart-only change),
and `workers: N` passes it to every worker on its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping

from gateway.config import Config, ConfigError, Listen, parse_listen

LISTEN_ENV = "WEBHOOK_GATEWAY_LISTEN"
ADMIN_LISTEN_ENV = "WEBHOOK_GATEWAY_ADMIN_LISTEN"


@dataclasses.dataclass(frozen=True)
class Overrides:
    listen: Listen | None = None
    admin_listen: Listen | None = None

    def apply(self, config: Config) -> Config:
        """`config` with the overrides in place, checked as `build` checks the file's keys."""
        if self.listen is None and self.admin_listen is None:
            return config
        new = dataclasses.replace(
            config,
            listen=self.listen or config.listen,
            admin_listen=self.admin_listen or config.admin_listen,
        )
        problems = []
        if new.listen.port and new.listen == new.admin_listen:
            problems.append(
                f"admin_listen: {new.admin_listen} must differ from listen: admin endpoints never "
                "share the public port"
            )
        if new.workers > 1 and new.listen.port == 0:
            problems.append("listen: several workers share one fixed port: it cannot use port 0")
        if problems:
            raise ConfigError(problems)
        return new

    def argv(self) -> list[str]:
        """The command-line flags that give a child process the same overrides."""
        out: list[str] = []
        if self.listen is not None:
            out += ["--listen", str(self.listen)]
        if self.admin_listen is not None:
            out += ["--admin-listen", str(self.admin_listen)]
        return out


def listen_arg(text: str) -> Listen:
    """argparse `type=` for HOST:PORT: the config key's parser, argparse's error convention."""
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve(listen: Listen | None, admin_listen: Listen | None, environ: Mapping[str, str]) -> Overrides:
    """Flags first, then the environment variables; raises `ConfigError` for a bad variable."""
    problems: list[str] = []

    def from_env(name: str) -> Listen | None:
        value = environ.get(name, "").strip()
        if not value:
            return None
        try:
            return parse_listen(value)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return None

    env_listen, env_admin = from_env(LISTEN_ENV), from_env(ADMIN_LISTEN_ENV)
    if problems:
        raise ConfigError(problems)
    return Overrides(listen or env_listen, admin_listen or env_admin)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=listen_arg,
        metavar="HOST:PORT",
        help=f"public listener, instead of the config's `listen` (env: {LISTEN_ENV})",
    )
    parser.add_argument(
        "--admin-listen",
        type=listen_arg,
        metavar="HOST:PORT",
        help="admin listener (/metrics /healthz /readyz), instead of `admin_listen` "
        f"(env: {ADMIN_LISTEN_ENV})",
    )
