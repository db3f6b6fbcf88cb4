from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.harness import gateway_config
from tests.support.process import SyncGatewayProcess, gateway_process
from tests.support.upstream import ThreadedUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedUpstream]:
    with ThreadedUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    upstream: ThreadedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncGatewayProcess]:
    """One real gateway process for a whole module, in front of `upstream`."""
    workdir: Path = tmp_path_factory.mktemp("gw")
    with gateway_process(gateway_config(upstream), workdir) as gw:
        yield gw
        problems = gw.problems()
    assert not problems, "gateway logged errors:\n" + "\n".join(problems)
