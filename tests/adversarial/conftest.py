from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial.harness import (
    PARSERS,
    GatewayProcess,
    ThreadedUpstream,
    gateway_config,
    gateway_process,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedUpstream]:
    with ThreadedUpstream() as up:
        yield up


@pytest.fixture(scope="module", params=PARSERS, ids=[f"{p}-parser" for p in PARSERS])
def gateway(
    request: pytest.FixtureRequest, upstream: ThreadedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """One real gateway process per parser for a whole module, in front of `upstream`."""
    parser: str = request.param
    workdir: Path = tmp_path_factory.mktemp(f"gw-{parser}")
    with gateway_process(gateway_config(upstream), workdir, parser=parser) as gw:
        yield gw
        problems = gw.problems()
    assert not problems, "gateway logged errors:\n" + "\n".join(problems)
