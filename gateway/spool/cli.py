"""`webhook-gateway spool list | show ID | retry ID | purge`: inspect and repair the spool.

Works while the gateway runs: WAL lets this process read beside the gateway's writer, and
writes (retry, purge) wait up to `--wait` for the gateway's short write transactions. A
running gateway picks up a retried row within about a second (its workers poll).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import sys
import time
from typing import Any

from gateway import config as cfg
from gateway.spool.store import Row, SpoolError, Store

# Header values never printed: the sender's secret token travels in a request header.
_SECRET_HEADER = re.compile(r"secret|token|auth|signature|hash|cookie|key", re.IGNORECASE)
REDACTED = "<redacted>"


def add_parser(sub: Any, help_config: str) -> None:
    p = sub.add_parser("spool", help="list, show, retry or purge spooled updates (works while running)")
    p.add_argument("--config", help=help_config + "; only spool.path is read")
    p.add_argument("--db", help="spool database file (overrides the config's spool.path)")
    p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the write lock (5)")
    cmds = p.add_subparsers(dest="spool_command", required=True)
    ls = cmds.add_parser("list", help="pending updates (or dead letters with --dead), oldest first")
    ls.add_argument("--dead", action="store_true", help="list dead letters instead of pending rows")
    ls.add_argument("--route", help="only this route")
    ls.add_argument("--limit", type=int, default=100, help="at most this many rows (100)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    show = cmds.add_parser("show", help="one row: metadata, headers (secrets redacted) and body")
    show.add_argument("id", type=int)
    show.add_argument("--body", action="store_true", help="write only the exact body bytes to stdout")
    retry = cmds.add_parser(
        "retry", help="a dead letter back to pending (in its original place), or a pending row due now"
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?")
    which.add_argument("--all", action="store_true", help="every dead letter and every waiting row")
    retry.add_argument("--route", help="with --all: only this route")
    purge = cmds.add_parser("purge", help="delete rows: dead letters with --dead, else pending rows")
    purge.add_argument("--dead", action="store_true", help="delete dead letters")
    purge.add_argument("--route", help="only this route")
    purge.add_argument("--id", type=int, help="only this row")
    purge.add_argument(
        "--yes",
        action="store_true",
        help="required to delete pending rows: the senders were told they were stored",
    )


def spool_path(config_path: str) -> str:
    """spool.path from the config file, without resolving secrets (the CLI needs none)."""
    raw = cfg.parse_yaml(cfg.read_bytes(config_path).decode("utf-8", "replace"), config_path)
    section = raw.get("spool") if isinstance(raw, dict) else None
    path = section.get("path") if isinstance(section, dict) else None
    return str(path) if path else cfg.DEFAULT_SPOOL_PATH


def run(args: argparse.Namespace) -> int:
    try:
        path = args.db or spool_path(cfg.default_path(args.config))
    except cfg.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        store = Store.open(path, args.wait, create=False)
    except SpoolError as exc:
        print(f"spool: {exc}", file=sys.stderr)
        return 1
    try:
        return _dispatch(store, args)
    except SpoolError as exc:
        print(f"spool: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # sqlite3 errors: locked past --wait, disk full, ...
        print(f"spool: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _dispatch(store: Store, args: argparse.Namespace) -> int:
    now = time.time()
    cmd = args.spool_command
    if cmd == "list":
        rows = store.list(args.dead, args.route, max(1, args.limit))
        if args.json:
            for row in rows:
                print(json.dumps(_summary(row, args.dead, now)))
        else:
            _print_table(rows, args.dead, now)
        return 0
    if cmd == "show":
        found = store.get(args.id)
        if found is None:
            print(f"spool: no row {args.id}", file=sys.stderr)
            return 1
        state, row = found
        if args.body:
            sys.stdout.buffer.write(row.body)
            sys.stdout.buffer.flush()
            return 0
        print(json.dumps(_detail(row, state, now), indent=2))
        return 0
    if cmd == "retry":
        if args.id is not None and args.route:
            print("spool: --route goes with --all", file=sys.stderr)
            return 2
        count = store.retry(args.id, args.route, now)
        if args.id is not None and count == 0:
            print(f"spool: no row {args.id} (or it is already due)", file=sys.stderr)
            return 1
        print(f"{count} row(s) queued for delivery now")
        return 0
    if cmd == "purge":
        if not args.dead and not args.yes:
            print(
                "spool: purging pending rows deletes updates the senders were told are stored;"
                " add --yes to do it (or --dead for dead letters)",
                file=sys.stderr,
            )
            return 2
        count = store.purge(args.dead, args.route, args.id)
        print(f"{count} {'dead letter' if args.dead else 'pending'} row(s) deleted")
        return 0
    return 2


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(row: Row, dead: bool, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "route": row.route,
        "received": _iso(row.received),
        "age_s": round(now - row.received, 3),
        "attempts": row.attempts,
        "size": len(row.body),
        "sha256": row.sha256,
    }
    if dead:
        out.update(died=_iso(row.died), reason=row.reason)
    else:
        out.update(next_attempt_in_s=round(max(0.0, row.next_at - now), 3), last_error=row.last_error)
    return out


def _detail(row: Row, state: str, now: float) -> dict[str, Any]:
    out = {"state": state, **_summary(row, state == "dead", now), "query": row.query}
    out["headers"] = [[k, REDACTED if _SECRET_HEADER.search(k) else v] for k, v in row.headers]
    try:
        out["body"] = row.body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(row.body).decode()
    return out


def _print_table(rows: list[Row], dead: bool, now: float) -> None:
    last = "REASON" if dead else "LAST ERROR"
    print(f"{'ID':>8}  {'ROUTE':<20} {'AGE':>9} {'TRIES':>5} {'SIZE':>8}  {last}")
    for row in rows:
        note = row.reason if dead else (row.last_error or "")
        print(
            f"{row.id:>8}  {row.route:<20} {_age(now - row.received):>9} {row.attempts:>5}"
            f" {len(row.body):>8}  {note}"
        )
    print(f"{len(rows)} {'dead letter' if dead else 'pending'} row(s)")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
