"""atheris entry point shared by fuzz/fuzz_*.py: instruments the gateway, then fuzzes one target."""

from __future__ import annotations

import sys


def main(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["gateway", "fuzz.targets"]):
        from fuzz import targets

    atheris.Setup(sys.argv, targets.TARGETS_BY_NAME[name])
    atheris.Fuzz()
