"""Regenerates ``model_params.json`` from the ANSUR II CSVs and the NHANES adults.

    python -m atelier.body.fit [--data ../shared/benchmarks/body] [--nhanes FILE] [--check]

The NHANES file (US civilians' height, weight and hip girth; public domain) lives in the package,
``nhanes_adults.csv``, whose header says where it comes from.

The JSON ships in the package so the service works where the CSVs are absent;
tests/body/test_statmodel.py checks that regenerating gives the same parameters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atelier.body.statmodel import NHANES_PATH, PARAMS_PATH, BodyModel, fit_from_csv

DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "body"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the ANSUR II CSVs")
    parser.add_argument("--nhanes", type=Path, default=NHANES_PATH, help="NHANES adults CSV")
    parser.add_argument("--out", type=Path, default=PARAMS_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the shipped JSON differs")
    args = parser.parse_args(argv)
    text = fit_from_csv(args.data, args.nhanes).to_json()
    if args.check:
        same = args.out.exists() and BodyModel.from_json(args.out.read_text()).to_json() == text
        print("model_params.json is up to date" if same else "model_params.json differs: regenerate it")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
