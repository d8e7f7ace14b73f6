"""The body photo path's framing check on many cut-off and tightly framed renders.

    nice -n 5 .venv/bin/python bench/body_cutoff.py --people 200 --sex male --no-write   # and --sex female, side by side

bench/body.py crops the first 40 front renders per sex once through the knees and once through the
forehead. Here every drawn person's front render (the same people, cameras and scenes as
bench/body.py draws with --sex) is cropped through the hair, forehead, eyes and nose (1 / 2 / 4 / 6%
of the rendered person's height from the top) and through the knees, shins, ankles and toe tips
(72 / 85 / 95 / 98.5% from the top); each must be refused, naming the end that is cut off. The same
render framed tightly (4 and 12 px left above the head and below the feet), and the render whole,
must be measured.

Outcomes per crop: refused for that end (the fix names it), refused otherwise (no person found, or
the other end: still not measured, but the fix is less direct), measured (a miss). Each miss is
listed with the person and the background, to look at with the render.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body.photo import PhotoError, segment  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import render_scene  # noqa: E402
from atelier.body.statmodel import ANSUR_FILES, read_ansur  # noqa: E402
from bench.body_draw import person, scenes  # noqa: E402
from bench.report import write_section  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"
HEAD_CUTS = (0.01, 0.02, 0.04, 0.06)
FEET_CUTS = (0.72, 0.85, 0.95, 0.985)
MARGINS_PX = (4, 12)


def crops(image: np.ndarray, mask: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (the end cut off, or "" for a tight frame that must be measured; the crop)."""
    ys = np.nonzero(mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    tall = bottom - top
    out = {f"head {s:.1%}": ("head", image[top + max(1, int(s * tall)) :]) for s in HEAD_CUTS}
    out.update({f"feet {s:.1%}": ("feet", image[: top + int(s * tall)]) for s in FEET_CUTS})
    out.update({f"tight {m} px": ("", image[max(0, top - m) : bottom + m + 1]) for m in MARGINS_PX})
    out["whole"] = ("", image)
    return out


def outcome(crop: np.ndarray, end: str, pose: object) -> tuple[str, str]:
    """(what happened, the refusal's reason in short)."""
    try:
        segment(np.ascontiguousarray(crop), pose, "front")  # type: ignore[arg-type]
    except PhotoError as exc:
        said = exc.reason.split("cut off (")[1].split(" outside")[0] if "cut off (" in exc.reason else ""
        if end and end in said:
            return "refused for that end", said
        return "refused otherwise", said or exc.reason[:40]
    return "measured", ""


def run_sex(
    sex: str, people: int, data: Path, backgrounds: Path, render_px: int, only: str = "", lens: float = 1.0
) -> tuple[dict, list[str]]:
    columns = read_ansur(data / ANSUR_FILES[sex])
    rng = np.random.default_rng(7)  # bench/body.py's draw for one sex (--sex)
    test = rng.choice(len(columns["height"]), 200 if people <= 200 else people, replace=False)
    pose = load_pose_model(
        Path(os.environ.get("ATELIER_BODY_POSE_MODEL", default_bundle_path())),
        os.environ.get("ATELIER_BODY_MATTE_MODEL"),
    )
    backdrops = scenes(backgrounds)
    counts: dict[str, dict[str, int]] = {}
    misses = []
    for k, i in enumerate(test[:people]):
        body, camera, arm, scene = person(columns, sex, int(i), k, backdrops, render_px, lens)
        render = render_scene(body, "front", camera, scene, arm_angle_deg=arm, seed=int(i))
        for name, (end, crop) in crops(render.image_rgb, render.mask).items():
            if only and not name.startswith(tuple(only.split(","))):
                continue
            got, why = outcome(crop, end, pose)
            counts.setdefault(name, {})
            counts[name][got] = counts[name].get(got, 0) + 1
            if got != ("refused for that end" if end else "measured"):
                misses.append(
                    f"{sex} #{i} ({getattr(scene, 'name', scene)}): {name} {got}"
                    + (f" ({why})" if why else "")
                )
    return counts, misses


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--people", type=int, default=40, help="drawn people per sex (200 for the figures in BENCHMARKS.md)"
    )
    parser.add_argument("--sex", choices=("male", "female"), help="one sex only (two runs side by side)")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs (../shared/benchmarks/body)"
    )
    parser.add_argument("--backgrounds", type=Path, help="background photos (default: DATA/backgrounds)")
    parser.add_argument("--render-px", type=int, default=960, help="height of the renders in px")
    parser.add_argument(
        "--lens",
        type=float,
        default=1.0,
        help="the phone's lens as a multiple of its main camera's focal length (0.5: ultra-wide)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="only the crops whose name starts so (head, feet, tight, whole; comma-separated)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if not all((args.data / f).exists() for f in ANSUR_FILES.values()):
        print(f"ANSUR II CSVs not found in {args.data}: nothing to benchmark")
        return 1
    start = time.perf_counter()
    rows = [
        "| sex | crop | refused for that end | refused otherwise | measured |",
        "|---|---|---|---|---|",
    ]
    listed = []
    for sex in [args.sex] if args.sex else ["male", "female"]:
        counts, misses = run_sex(
            sex,
            args.people,
            args.data,
            args.backgrounds or args.data / "backgrounds",
            args.render_px,
            args.only,
            args.lens,
        )
        for name, got in counts.items():
            cells = [got.get(k, 0) for k in ("refused for that end", "refused otherwise", "measured")]
            rows.append(f"| {sex} | {name} | {' | '.join(str(c) for c in cells)} |")
        listed += misses
    body = "\n".join(
        [
            f"Front renders of {args.people} people per sex (bench/body.py's draw"
            + (f", through a {args.lens:g}x lens" if args.lens != 1 else "")
            + "), cropped through the head "
            "and the feet (share of the rendered person's height from the top) and framed tightly (px "
            "above the head and below the feet). A crop should be refused for its end; a tight frame, "
            "and the render whole, measured.",
            "",
            *rows,
            "",
            "Not as they should be: " + ("; ".join(listed) if listed else "none") + ".",
            "",
            f"{time.perf_counter() - start:.0f} s.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(
            "body-cutoff",
            body,
            f"nice -n 5 .venv/bin/python bench/body_cutoff.py --people {args.people}"
            + (f" --sex {args.sex}" if args.sex else "")
            + (f" --lens {args.lens:g}" if args.lens != 1 else ""),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
