"""Summarise a py-spy `--format raw` profile (collapsed stacks): where the samples are.

    python bench/profile_summary.py bench/results/profile-*-tg_accepted.txt [--top 25]

Prints the functions with the most samples on top of the stack (self) and anywhere in it
(inclusive), as percentages of all samples. Idle time in the event loop's poll shows as
samples in uvloop's `run_forever` with nothing above it.
"""

from __future__ import annotations

import argparse
import collections
import re

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame)
        if m:
            file = m.group("file").rsplit("/", 2)
            out.append(f"{m.group('func')} ({'/'.join(file[-2:])})")
        else:
            out.append(frame)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            fs = frames(stack)
            own[fs[-1]] += n
            for f in set(fs):
                inclusive[f] += n
    print(f"{total} samples\n\nself:")
    for f, n in own.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("\ninclusive:")
    for f, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
