"""``make bench``: every benchmark in turn, each printing figures and ratios against a floor
measured in the same run (compare ratios, not absolute figures, on a noisy machine).

    python benchmarks/run_all.py             # all
    python benchmarks/run_all.py stow qido   # some
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHES = ["stow", "wado", "render", "qido", "dimse"]


def main(names: list[str]) -> int:
    failed = []
    for name in names or BENCHES:
        print(f"\n=== bench_{name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{name}"], cwd=REPO)
        print(f"--- bench_{name}: exit {code} in {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
