"""Fuzz parse_ip / client_ip (X-Forwarded-For) with atheris.

    python fuzz/fuzz_clientip.py -max_total_time=600 -artifact_prefix=/tmp/

Any libFuzzer flag works; a crash prints the Python traceback and writes the input that caused
it under -artifact_prefix. `python -m pytest tests/adversarial -k fuzz` runs this for a few
seconds (FUZZ_SECONDS=N for longer).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz.run import main

if __name__ == "__main__":
    main("clientip")
