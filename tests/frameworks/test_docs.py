"""The framework pages show the code the tests run and a config the gateway accepts."""

from __future__ import annotations

import re

import pytest
import yaml

from gateway import config as cfg
from tests.support.env import ENV, ROOT_DIR

PAGES = {
    "aiogram.md": ROOT_DIR / "tests" / "frameworks" / "aiogram_bot.py",
    "python-telegram-bot.md": ROOT_DIR / "tests" / "frameworks" / "ptb_bot.py",
}


def blocks(page: str, language: str) -> list[str]:
    text = (ROOT_DIR / "docs" / "frameworks" / page).read_text()
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_shows_the_bot_the_tests_run(page: str) -> None:
    [code] = blocks(page, "python")
    assert code == PAGES[page].read_text(), f"docs/frameworks/{page} differs from {PAGES[page].name}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_config_is_valid_and_points_at_the_bot(page: str) -> None:
    [text] = blocks(page, "yaml")
    built = cfg.build(yaml.safe_load(text), environ=dict(ENV))
    [route] = built.routes
    assert route.mode == "report-only"
    assert route.verify is not None
    upstream = yaml.safe_load(text)["routes"][0]["upstream"]
    port = re.search(r"port=(\d+)\)", PAGES[page].read_text())
    assert port and upstream == f"http://127.0.0.1:{port.group(1)}/webhook"
