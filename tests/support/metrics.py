"""Reading one sample out of a Prometheus text exposition."""

from __future__ import annotations

import re
from collections.abc import Mapping


def metric_value(text: str, name: str, labels: Mapping[str, str]) -> float:
    """Value of one sample, 0.0 when it is absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def metric(text: str, name: str, **labels: str) -> float:
    """`metric_value` with the labels as keywords."""
    return metric_value(text, name, labels)
