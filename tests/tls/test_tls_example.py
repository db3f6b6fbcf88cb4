"""config/examples/https-telegram.yaml passes `webhook-gateway check` once its certificate
paths exist (here: a generated chain in their place)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.botapi import BOT_TOKEN
from tests.support.env import ROOT_DIR
from tests.support.tls import make_pki

LIVE = "/etc/letsencrypt/live/bot.example.com"


def test_https_example_passes_check(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    cert, key = pki.write(pki.leaf("bot.example.com"), "bot")
    text = (ROOT_DIR / "config/examples/https-telegram.yaml").read_text()
    assert text.count(LIVE) == 2
    text = text.replace(f"{LIVE}/fullchain.pem", str(cert)).replace(f"{LIVE}/privkey.pem", str(key))
    config = tmp_path / "c.yaml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TG_SECRET": "abc", "SUPPORT_BOT_TOKEN": BOT_TOKEN},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: ok (1 route(s): support-bot=enforce)"
    # Without the files, check names the missing one at its location.
    config.write_text((ROOT_DIR / "config/examples/https-telegram.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        cwd=ROOT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TG_SECRET": "abc", "SUPPORT_BOT_TOKEN": BOT_TOKEN},
    )
    assert result.returncode == 1
    assert f"tls.certificates[0].cert_file: cannot read {LIVE}/fullchain.pem: No such file" in result.stderr
