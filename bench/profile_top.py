"""``python -m bench.profile_top FILE [N]``: the hottest functions of a py-spy profile.

Reads the collapsed stacks that ``python -m bench --profile DIR`` leaves
(py-spy's ``raw`` format: frames joined by ``;``, then a space and a sample
count) and prints the functions with the most samples on top of the stack
(self) and anywhere in it (inclusive), as shares of all samples.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["hottest", "read_stacks"]

DEFAULT_TOP = 25


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """Each sampled stack (outermost frame first) with its count."""
    stacks = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, line = where.rpartition(":")
    return f"{name} ({'/'.join(file.split('/')[-2:])}:{line})" if file else frame


def hottest(stacks: list[tuple[list[str], int]], top: int) -> tuple[int, list[str]]:
    """Total samples, and the lines of the self and inclusive rankings."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for frames, count in stacks:
        total += count
        own[_short(frames[-1])] += count
        for frame in {_short(frame) for frame in frames}:
            anywhere[frame] += count
    lines = ["self:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in anywhere.most_common(top)]
    return total, lines


def main(argv: list[str]) -> int:
    """Print the rankings of one profile."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    top = int(argv[1]) if len(argv) > 1 else DEFAULT_TOP
    total, lines = hottest(read_stacks(Path(argv[0])), top)
    print(f"{total} samples")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
