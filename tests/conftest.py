import sys
from pathlib import Path

import pytest

# Tests import the package from this checkout, installed or not.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.leakscan import LeakScanPlugin  # noqa: E402 - needs ROOT on sys.path first


def pytest_configure(config: pytest.Config) -> None:
    # pytest replays pytest_configure (a historic hook) to plugins registered here.
    config.pluginmanager.register(LeakScanPlugin(), "leak-scan")
