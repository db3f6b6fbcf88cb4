"""What the adversarial tests share: the gateway they attack (two enforcing routes in front of
a recording upstream) and hypothesis settings.

Sync on purpose: the adversarial tests speak bytes on sockets, and hypothesis drives sync
tests best. The gateway runs as `python -m gateway run --config FILE` exactly as users run it
(`tests.support.process.gateway_process`), with its own listener on the public port.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

from tests.support.upstream import ThreadedUpstream

TG_PATH = "/hook/tg"
HMAC_PATH = "/hook/hmac"

# Hypothesis examples per property test: few by default (CI time), more with ADVERSARIAL_EXAMPLES.
SETTINGS = settings(
    max_examples=int(os.environ.get("ADVERSARIAL_EXAMPLES", "40")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def gateway_config(upstream: ThreadedUpstream, **top: Any) -> dict[str, Any]:
    """Two enforcing routes (telegram token, body HMAC) that forward only authenticated updates."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "mode": "enforce",
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {"header_timeout": "3s", "body_timeout": "3s", "upstream_timeout": "10s"},
        "routes": [
            {
                "name": "tg",
                "path": TG_PATH,
                "upstream": upstream.url("/tg"),
                "verify": {"scheme": "telegram", "secrets": ["env:TG_SECRET", "env:TG_SECRET_2"]},
            },
            {
                "name": "hmac",
                "path": HMAC_PATH,
                "upstream": upstream.url("/hmac"),
                "verify": {
                    "scheme": "hmac",
                    "header": "X-Signature",
                    "algorithm": "sha256",
                    "encoding": "hex",
                    "prefix": "sha256=",
                    "secrets": ["env:HMAC_SECRET"],
                },
            },
        ],
    }
    config.update(top)
    return config
