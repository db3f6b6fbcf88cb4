"""What every test gateway runs with: the secrets it reads from its environment, Telegram's
address, the repository root."""

from __future__ import annotations

from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[2]
TG_SECRET = "tg-secret_TOKEN-0123456789"
TG_SECRET_2 = "second-secret-token_abcdef"
HMAC_SECRET = "hmac secret: bytes and spaces!"
ENV = {"TG_SECRET": TG_SECRET, "TG_SECRET_2": TG_SECRET_2, "HMAC_SECRET": HMAC_SECRET}
TELEGRAM_IP = "149.154.167.220"
