"""The docs site builds in strict mode, and the README stays short and links only to real pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.env import ROOT_DIR


def test_site_builds_strict(tmp_path: Path) -> None:
    # Strict: a broken link or anchor, or a page under docs/ missing from the nav, fails.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "getting-started" / "index.html").exists()


def test_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT_DIR / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    # The secret-token fact stays near the top.
    assert readme.index("X-Telegram-Bot-Api-Secret-Token") < readme.index("## Quick start")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith("http")]
    assert local, "the README links to the docs pages"
    for link in local:
        assert (ROOT_DIR / link).is_file(), link
