"""The spool database: SQLite in WAL mode with `synchronous=FULL` (docs/decisions/0004-spool-on-sqlite.md).

Synchronous code only: the gateway calls it from one dedicated thread (`SpoolStore` in
`gateway/spool/service.py`), the `spool` subcommand calls it directly. WAL lets the command
read while the gateway writes; `busy_timeout` makes either side wait briefly for the other's
write lock instead of failing at once.

Tables:
- `pending`: updates acknowledged to the sender and not yet delivered, in arrival order (`id`).
- `dead`: updates given up on (the upstream refused them, or they grew too old). They keep
  their `id`, so `retry` puts one back in its original place in the queue.
- Every row carries its `order_key` (see `gateway/spool/order.py`): rows of one key are
  delivered in `id` order, different keys concurrently.
- `marks`: (route, key) -> expiry, written in the same transaction as the `pending` row, so a
  sender's retry of an acknowledged update is recognised as a duplicate, even after a crash.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    route TEXT NOT NULL,
    received REAL NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    order_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS pending_by_route ON pending (route, id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    received REAL NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    died REAL NOT NULL,
    reason TEXT NOT NULL,
    order_key TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS dead_by_route ON dead (route, id);
CREATE TABLE IF NOT EXISTS marks (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (route, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS marks_by_expiry ON marks (expires);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolError(Exception):
    """The spool could not store (or read) an update. `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # full | disk_full | locked | error | unavailable | timeout


class SpoolFull(SpoolError):
    def __init__(self, detail: str) -> None:
        super().__init__("full", detail)


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    route: str
    received: float
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    sha256: str
    size: int
    attempts: int
    # pending rows only
    next_at: float = 0.0
    last_error: str | None = None
    # dead rows only
    died: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RouteStats:
    pending: int
    oldest: float | None  # arrival time of the oldest pending row
    dead: int


def classify(exc: sqlite3.Error) -> SpoolError:
    """Map an SQLite error to a short reason (for the metric and the log, never the sender)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "disk is full" in text or "disk I/O" in text:
            return SpoolError("disk_full", text)
        if "locked" in text or "busy" in text:
            return SpoolError("locked", text)
    return SpoolError("error", f"{type(exc).__name__}: {text}")


def _prepare_file(path: str) -> None:
    """Create the directory (0700) and the database file (0600) before SQLite does.

    The rows hold request headers, which may carry a sender's secret token; SQLite gives its
    -wal and -shm files the same mode as the database file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def connect(path: str, busy_timeout: float, create: bool = True) -> sqlite3.Connection:
    """Open (and if needed create) the spool; raises `SpoolError` with a reason."""
    try:
        if create:
            _prepare_file(path)
        elif not os.path.exists(path):
            raise SpoolError("unavailable", f"{path}: no spool database here")
        # Autocommit mode: every transaction below is an explicit BEGIN IMMEDIATE ... COMMIT.
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout, check_same_thread=False)
    except OSError as exc:
        raise SpoolError("unavailable", f"{path}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise classify(exc) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError("error", f"{path}: journal_mode is {mode}, WAL could not be enabled")
        # FULL: the WAL is fsynced at every commit, so a 200 survives a power cut, not only a
        # process crash (NORMAL in WAL mode may lose the last transactions on power loss).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
        if create:
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is not None and int(version[0]) == 1:
            _migrate_v1(conn)
            version = (str(SCHEMA_VERSION),)
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise SpoolError("error", f"{path}: unknown spool schema version {version}")
    except sqlite3.Error as exc:
        conn.close()
        raise classify(exc) from None
    except SpoolError:
        conn.close()
        raise
    return conn


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """v1 -> v2, in place and in one transaction: rows stored before ordering keys existed get
    the route's key (''), i.e. they stay one queue in arrival order, as v1 delivered them."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in ("pending", "dead"):
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if "order_key" not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN order_key TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Store:
    """Every statement the spool runs. Not thread-safe: one thread at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # Rows (pending + dead) and their bytes, kept for the bounds check on every write so it
        # costs no table scan; `refresh_totals` re-reads them (the CLI may have purged rows).
        self.items = 0
        self.bytes = 0
        self.refresh_totals()

    @classmethod
    def open(cls, path: str, busy_timeout: float, create: bool = True) -> Store:
        return cls(connect(path, busy_timeout, create))

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------ transactions

    def _tx(self) -> _Transaction:
        return _Transaction(self.conn)

    # ------------------------------------------------------------ the write path

    def accept(
        self,
        route: str,
        key: str | None,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        sha256: str,
        now: float,
        mark_ttl: float,
        max_items: int,
        max_bytes: int,
        order_key: str = "",
    ) -> int | None:
        """Store one update; return its id, or None when `key` marks it as a duplicate.

        Returns only after COMMIT, i.e. after the WAL was fsynced: the caller may answer 200.
        """
        header_text = json.dumps(list(headers), separators=(",", ":"))
        size = len(body) + len(header_text)
        try:
            with self._tx():
                if key is not None:
                    row = self.conn.execute(
                        "SELECT expires FROM marks WHERE route = ? AND key = ?", (route, key)
                    ).fetchone()
                    if row is not None and row[0] > now:
                        return None
                if self.items + 1 > max_items:
                    raise SpoolFull(f"spool holds {self.items} rows (max_items {max_items})")
                if self.bytes + size > max_bytes:
                    raise SpoolFull(f"spool holds {self.bytes} bytes (max_bytes {max_bytes})")
                cur = self.conn.execute(
                    "INSERT INTO pending (route, received, query, headers, body, sha256, size, next_at,"
                    " order_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (route, now, query, header_text, body, sha256, size, now, order_key),
                )
                if key is not None:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO marks (route, key, expires) VALUES (?, ?, ?)",
                        (route, key, now + mark_ttl),
                    )
                row_id = cur.lastrowid
        except sqlite3.Error as exc:
            raise classify(exc) from None
        assert row_id is not None
        self.items += 1
        self.bytes += size
        return int(row_id)

    # ------------------------------------------------------------ the delivery side

    def head(self, route: str, limit: int) -> list[Row]:
        """The oldest pending rows of a route, in arrival order."""
        cur = self.conn.execute(
            "SELECT id, route, received, query, headers, body, sha256, size, attempts, next_at, last_error"
            " FROM pending WHERE route = ? ORDER BY id LIMIT ?",
            (route, limit),
        )
        return [_pending_row(r) for r in cur]

    def head_keys(self, route: str, limit: int) -> list[tuple[int, str, float]]:
        """(id, order_key, next_at) of the oldest pending rows: cheap (no body, no headers),
        read at every scheduling pass."""
        return self.conn.execute(
            "SELECT id, order_key, next_at FROM pending WHERE route = ? ORDER BY id LIMIT ?",
            (route, limit),
        ).fetchall()

    def pending_rows(self, ids: list[int]) -> list[Row]:
        if not ids:
            return []
        cur = self.conn.execute(
            "SELECT id, route, received, query, headers, body, sha256, size, attempts, next_at,"
            " last_error FROM pending WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ids),),
        )
        return [_pending_row(r) for r in cur]

    def delivered(self, row_id: int) -> None:
        self.delivered_many([row_id])

    def delivered_many(self, ids: list[int]) -> None:
        """Forget delivered rows, many in one transaction (one fsync for the batch)."""
        gone: list[tuple[int]] = []
        with self._tx():
            for row_id in ids:
                cur = self.conn.execute("DELETE FROM pending WHERE id = ? RETURNING size", (row_id,))
                gone += cur.fetchall()
        for (size,) in gone:
            self.items -= 1
            self.bytes -= size

    def due_now(self, route: str, now: float) -> int:
        """Cut the backoff of a route's rows: all due now (the upstream is reachable again)."""
        with self._tx():
            return self.conn.execute(
                "UPDATE pending SET next_at = ?1 WHERE route = ?2 AND next_at > ?1", (now, route)
            ).rowcount

    def failed(self, row_id: int, next_at: float, error: str) -> None:
        with self._tx():
            self.conn.execute(
                "UPDATE pending SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                (next_at, error, row_id),
            )

    def bury(self, row_id: int, now: float, reason: str) -> bool:
        """Move a pending row to the dead letters (counting the attempt that just failed)."""
        with self._tx():
            cur = self.conn.execute(
                "INSERT INTO dead (id, route, received, query, headers, body, sha256, size, attempts,"
                " died, reason, order_key) SELECT id, route, received, query, headers, body, sha256,"
                " size, attempts + 1, ?, ?, order_key FROM pending WHERE id = ?",
                (now, reason, row_id),
            )
            moved = cur.rowcount > 0
            self.conn.execute("DELETE FROM pending WHERE id = ?", (row_id,))
        return moved

    def expire_marks(self, now: float, limit: int = 10_000) -> int:
        """Forget marks past their expiry, a bounded batch at a time (short write locks)."""
        with self._tx():
            cur = self.conn.execute(
                "DELETE FROM marks WHERE (route, key) IN"
                " (SELECT route, key FROM marks WHERE expires <= ? LIMIT ?)",
                (now, limit),
            )
            return cur.rowcount

    # ------------------------------------------------------------ reading, for metrics and the CLI

    def refresh_totals(self) -> None:
        n1, b1 = self.conn.execute("SELECT count(*), total(size) FROM pending").fetchone()
        n2, b2 = self.conn.execute("SELECT count(*), total(size) FROM dead").fetchone()
        self.items = int(n1) + int(n2)
        self.bytes = int(b1) + int(b2)

    def stats(self) -> dict[str, RouteStats]:
        """Per route: pending count, arrival time of the oldest, dead count.

        Runs every second on the database thread, so it must stay cheap with 100k rows: the
        counts scan only the (route, id) indexes, and the oldest row is the first by id (ids
        follow arrival) instead of a min() that would read every row.
        """
        pending = dict(self.conn.execute("SELECT route, count(*) FROM pending GROUP BY route").fetchall())
        dead = dict(self.conn.execute("SELECT route, count(*) FROM dead GROUP BY route").fetchall())
        out: dict[str, RouteStats] = {}
        for route in set(pending) | set(dead):
            oldest = None
            if pending.get(route):
                row = self.conn.execute(
                    "SELECT received FROM pending WHERE route = ? ORDER BY id LIMIT 1", (route,)
                ).fetchone()
                oldest = row[0] if row else None
            out[route] = RouteStats(int(pending.get(route, 0)), oldest, int(dead.get(route, 0)))
        return out

    def list(self, dead: bool, route: str | None, limit: int) -> list[Row]:
        if dead:
            cur = self.conn.execute(
                "SELECT id, route, received, query, headers, body, sha256, size, attempts, died, reason"
                " FROM dead WHERE (?1 IS NULL OR route = ?1) ORDER BY id LIMIT ?2",
                (route, limit),
            )
            return [_dead_row(r) for r in cur]
        cur = self.conn.execute(
            "SELECT id, route, received, query, headers, body, sha256, size, attempts, next_at,"
            " last_error FROM pending WHERE (?1 IS NULL OR route = ?1) ORDER BY id LIMIT ?2",
            (route, limit),
        )
        return [_pending_row(r) for r in cur]

    def get(self, row_id: int) -> tuple[str, Row] | None:
        """('pending' | 'dead', row)."""
        r = self.conn.execute(
            "SELECT id, route, received, query, headers, body, sha256, size, attempts, next_at,"
            " last_error FROM pending WHERE id = ?",
            (row_id,),
        ).fetchone()
        if r is not None:
            return "pending", _pending_row(r)
        r = self.conn.execute(
            "SELECT id, route, received, query, headers, body, sha256, size, attempts, died, reason"
            " FROM dead WHERE id = ?",
            (row_id,),
        ).fetchone()
        if r is not None:
            return "dead", _dead_row(r)
        return None

    # ------------------------------------------------------------ operator actions (the CLI)

    def retry(self, row_id: int | None, route: str | None, now: float) -> int:
        """Dead rows go back to pending in their original place (they keep their id), with a
        fresh attempt count; pending rows become due now. `row_id` None: every row (of `route`)."""
        with self._tx():
            revived = self.conn.execute(
                "INSERT INTO pending (id, route, received, query, headers, body, sha256, size, attempts,"
                " next_at, last_error, order_key) SELECT id, route, received, query, headers, body,"
                " sha256, size, 0, ?1, 'retried: ' || reason, order_key FROM dead"
                " WHERE (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR route = ?3)",
                (now, row_id, route),
            ).rowcount
            self.conn.execute(
                "DELETE FROM dead WHERE ?1 IS NOT NULL"
                " AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR route = ?3)",
                (now, row_id, route),
            )
            due = self.conn.execute(
                "UPDATE pending SET next_at = ?1 WHERE next_at > ?1"
                " AND (?2 IS NULL OR id = ?2) AND (?3 IS NULL OR route = ?3)",
                (now, row_id, route),
            ).rowcount
        return revived + due

    def purge(self, dead: bool, route: str | None, row_id: int | None) -> int:
        with self._tx():
            if dead:
                return self.conn.execute(
                    "DELETE FROM dead WHERE (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR id = ?2)",
                    (route, row_id),
                ).rowcount
            return self.conn.execute(
                "DELETE FROM pending WHERE (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR id = ?2)",
                (route, row_id),
            ).rowcount

    def integrity(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any exception).

    IMMEDIATE takes the write lock up front, so waiting for another writer happens in BEGIN
    (bounded by busy_timeout), never as a failed upgrade halfway through.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error:
                # A failed COMMIT (disk full) may leave the transaction open: never keep it.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _common(r: tuple) -> dict[str, Any]:  # type: ignore[type-arg]
    """The columns pending and dead rows share, in the order both SELECTs list them."""
    return {
        "id": r[0],
        "route": r[1],
        "received": r[2],
        "query": r[3],
        "headers": [(k, v) for k, v in json.loads(r[4])],
        "body": bytes(r[5]),
        "sha256": r[6],
        "size": r[7],
        "attempts": r[8],
    }


def _pending_row(r: tuple) -> Row:  # type: ignore[type-arg]
    return Row(**_common(r), next_at=r[9], last_error=r[10])


def _dead_row(r: tuple) -> Row:  # type: ignore[type-arg]
    return Row(**_common(r), died=r[9], reason=r[10])
