"""Run the benchmarks: `make bench` (all) or `make bench BENCH_ARGS="nesting trends"`.

Each bench/<name>.py is a script that measures, prints its table and rewrites its own
section of BENCHMARKS.md (see bench/report.py). Figures are only ever what a run printed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    available = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {"run", "report", "__init__"})
    chosen = argv or available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}")
        return 2
    failed = []
    for name in chosen:
        print(f"== bench {name}", flush=True)
        if subprocess.call([sys.executable, str(HERE / f"{name}.py")]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
