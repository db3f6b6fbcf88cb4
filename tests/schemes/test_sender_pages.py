"""The sender pages under docs/senders/ show configs the gateway accepts."""

from __future__ import annotations

import re

import pytest
import yaml

from gateway import config as cfg
from tests.support.env import ROOT_DIR

PAGES = ["slack.md", "microsoft-graph.md"]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_config_is_valid(page: str) -> None:
    text = (ROOT_DIR / "docs" / "senders" / page).read_text()
    [block] = re.findall(r"^```yaml\n(.*?)^```$", text, re.S | re.M)
    raw = yaml.safe_load(block)
    names = re.findall(r"env:([A-Z_]+)", block)
    built = cfg.build(raw, environ=dict.fromkeys(names, "a-secret-value"))
    [route] = built.routes
    assert route.verify is not None and route.mode == "enforce"
