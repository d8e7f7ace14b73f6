"""A task for the job runner tests: `python -m tests.deploy.sample_task --exit 0 --sleep 0.1 --touch FILE`."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--touch", default="")
    args = parser.parse_args()
    print(f"sample task for {os.environ.get('ATELIER_OPERATION', '?')} starting", flush=True)
    time.sleep(args.sleep)
    if args.touch:
        Path(args.touch).write_text(os.environ.get("ATELIER_OPERATION", ""))
    print(f"sample task exiting with {args.exit}", flush=True)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
