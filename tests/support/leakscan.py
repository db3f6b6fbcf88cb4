"""Session-wide collection for the secret-leak scan (see `tests.support.leaks.OUTPUTS`).

Registered by tests/conftest.py so it sees the whole suite: it keeps every log record the
in-process gateways emit (formatted as production formats them, tracebacks included) and runs
tests marked `leak_scan` after everything else, whatever order the files were collected in.
"""

from __future__ import annotations

import logging

import pytest

from gateway.logs import JsonFormatter
from tests.support.leaks import record_output


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._json.format(record)
            if record.exc_info and record.exc_info[0] is not None:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a log record we cannot format must not fail the test that logged it
            text = repr(record.__dict__)
        record_output(f"log {record.name}", text)


class LeakScanPlugin:
    def __init__(self) -> None:
        self._handler = _Collector()
        self._old_level: int | None = None

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "leak_scan: scans the whole session's output; runs last")

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        root = logging.getLogger()
        root.addHandler(self._handler)
        if root.level > logging.INFO:  # what `gateway.logs.setup` runs with in production
            self._old_level = root.level
            root.setLevel(logging.INFO)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        if self._old_level is not None:
            root.setLevel(self._old_level)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        last = [item for item in items if item.get_closest_marker("leak_scan")]
        if last:
            items[:] = [item for item in items if not item.get_closest_marker("leak_scan")] + last
