"""One step of the body photo path on and off, on the same renders: what that step is worth.

    nice .venv/bin/python bench/body_ab.py --without perspective --sex male [--people 200] [--start 0]

bench/body.py's draw (seed 7, one sex per run, the model refitted without the 200 drawn people of
that sex; the same cameras, backgrounds and clothes), each pair measured twice: as the service
does, and with one step taken out (ABLATIONS). The outlines are found once per photo and reused by
both measurements (the pose model and the matte run once), so the difference is the step's alone.
Prints the girth MAE and mean error of both, the torso widths' and depths' bias and MAE, how many
side photos gave depths, and each person whose girths the step changed by more than 0.5 cm.
The step is patched out for the length of one measurement (a benchmark harness, not a code path of
the service).

With ``--outline-cache DIR`` the outlines are also kept in DIR (about 0.5 MB a photo; 1,500 files,
700 MB, for 200 of each sex), and a later run reads them: 200 per sex in under 6 minutes instead of 15 (both
sexes side by side; 18p's side-rescue table reproduced to 0.01 cm), which
is what makes trying a change to the measurement (photo._measure_photos and below) quick. The
files are keyed on the photo's pixels and segment()'s arguments only: delete DIR after changing
the segmentation (photo.segment and what it calls) or the models.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gzip
import hashlib
import os
import pickle
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body import photo  # noqa: E402
from atelier.body.photo import PhotoError, measure  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import render_scene  # noqa: E402
from atelier.body.statmodel import ANSUR_FILES, read_ansur  # noqa: E402
from bench.body_draw import held_out_model, person, scenes  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"
# Step -> (photo's function, what it gives back when the step is out).
ABLATIONS = {
    # The front widths as seen, not at their cross-sections' depth.
    "perspective": ("_correct_front_perspective", None),
    # A side outline that failed its checks is dropped, not measured again where the matte agrees.
    "side-rescue": ("_matte_trimmed_side", None),
    # The lens's focal length as the photo's EXIF gives it (the renderer's camera), not assumed.
    "exif": ("", None),
}
GIRTHS = ("chest_girth", "waist_girth", "hip_girth")
VALUES = ("chest_width", "waist_width", "hip_width", "chest_depth", "waist_depth", "hip_depth")


def _digest(value: object) -> object:
    """What identifies a segment() argument: an array's pixels, a plain value itself, and for any
    other object (the pose model) its type and whether it carries a matte (a run with
    ATELIER_BODY_MATTE_MODEL empty gets outlines of its own), so that keys hold across processes."""
    if isinstance(value, np.ndarray):
        return hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return (type(value).__name__, getattr(value, "matte", None) is not None)


@contextlib.contextmanager
def _outlines_once(cache: Path | None = None) -> Iterator[None]:
    """photo.segment memoised on the photo's pixels and its arguments (copies handed out); with
    ``cache``, also in files there that later runs read (the photo itself is not stored: the key
    is its pixels, and the caller's array is handed back in its place)."""
    original = photo.segment
    memo: dict[str, tuple[str, Any]] = {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    def segment(image_rgb: np.ndarray, *args: object, **kwargs: object) -> object:
        key = hashlib.sha1(
            repr(
                (
                    _digest(image_rgb),
                    tuple(_digest(a) for a in args),
                    tuple(sorted((k, _digest(v)) for k, v in kwargs.items())),
                )
            ).encode()
        ).hexdigest()
        path = cache / f"{key}.pkl.gz" if cache is not None else None
        if key not in memo and path is not None and path.exists():
            memo[key] = pickle.loads(gzip.decompress(path.read_bytes()))
        if key not in memo:
            try:
                view = original(image_rgb, *args, **kwargs)  # type: ignore[arg-type]
                memo[key] = (
                    "ok",
                    dataclasses.replace(view, image_rgb=None) if view.image_rgb is image_rgb else view,
                )
            except PhotoError as exc:
                memo[key] = ("error", (exc.field, exc.reason))
            if path is not None:
                # Whole or not at all: a run stopped mid-write leaves no truncated file behind.
                part = path.with_suffix(f".{os.getpid()}.part")
                part.write_bytes(gzip.compress(pickle.dumps(memo[key]), compresslevel=3))
                part.replace(path)
        kind, value = memo[key]
        if kind == "error":
            raise PhotoError(*value)
        found = copy.deepcopy(value)
        assert isinstance(found, photo.ViewResult)
        if found.image_rgb is None:
            found.image_rgb = image_rgb
        return found

    photo.segment = segment  # type: ignore[assignment]
    try:
        yield
    finally:
        photo.segment = original


@contextlib.contextmanager
def _without(step: str) -> Iterator[None]:
    name, value = ABLATIONS[step]
    if not name:  # a step that is an argument of measure(), not one of photo's functions
        yield
        return
    original = getattr(photo, name)
    setattr(photo, name, lambda *args, **kwargs: value)
    try:
        yield
    finally:
        setattr(photo, name, original)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--without", choices=sorted(ABLATIONS), required=True)
    parser.add_argument("--sex", choices=("male", "female"), default="male")
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--start", type=int, default=0, help="skip the draw's first people")
    parser.add_argument("--data", type=Path, default=DATA, help="the ANSUR II CSVs and backgrounds/")
    parser.add_argument(
        "--lens",
        type=float,
        default=1.0,
        help="the phone's lens, x its main camera's focal length (0.5, 2, ...)",
    )
    parser.add_argument(
        "--outline-cache",
        type=Path,
        help="keep the outlines in this folder for later runs (about 0.5 MB a photo); delete it after changing "
        "photo.segment or what it calls, or the models",
    )
    args = parser.parse_args()
    columns = read_ansur(args.data / ANSUR_FILES[args.sex])
    # ATELIER_BODY_MATTE_MODEL as the service reads it: unset, the matte beside the bundle; empty, none.
    pose = load_pose_model(Path(default_bundle_path()), os.environ.get("ATELIER_BODY_MATTE_MODEL"))
    backdrops = scenes(args.data / "backgrounds")
    rng = np.random.default_rng(7)
    test = rng.choice(len(columns["height"]), 200, replace=False)
    model = held_out_model(columns, args.sex, test, "soldier")
    errors: dict[str, list[np.ndarray]] = {"with": [], "without": []}
    values: dict[str, list[np.ndarray]] = {"with": [], "without": []}
    refused = 0
    started = time.perf_counter()
    with _outlines_once(args.outline_cache):
        for k in range(args.start, min(args.start + args.people, test.size)):
            i = int(test[k])
            body, cam, arm, scene = person(columns, args.sex, i, k, backdrops, lens=args.lens)
            front = render_scene(body, "front", cam, scene, arm_angle_deg=arm, seed=i).image_rgb
            side = render_scene(body, "side", cam, scene, seed=i + 1).image_rgb
            got = {}
            for mode in ("with", "without"):
                step_out = _without(args.without) if mode == "without" else contextlib.nullcontext()
                focal = cam.focal_35mm if args.without == "exif" and mode == "with" else None
                with step_out, contextlib.suppress(PhotoError):
                    got[mode] = measure(
                        front,
                        side,
                        body["height"],
                        body["weight_kg"],
                        args.sex,
                        model,
                        pose,
                        focal_35mm=focal,
                    )
            if len(got) < 2:
                refused += 1
                how = "both ways" if not got else f"only {'with' if 'without' in got else 'without'} it"
                print(f"#{i} ({getattr(scene, 'name', scene)}): refused {how}")
                continue
            for mode, result in got.items():
                est = {m.name: m.value_cm for m in result.measurements}
                errors[mode].append(np.array([est[t] - body[t] for t in GIRTHS]))
                values[mode].append(np.array([result.observed_cm.get(v, np.nan) - body[v] for v in VALUES]))
            moved = errors["with"][-1] - errors["without"][-1]
            if np.abs(moved).max() > 0.5:
                print(
                    f"#{i} ({getattr(scene, 'name', scene)}): girth errors without "
                    + " / ".join(f"{e:+.2f}" for e in errors["without"][-1])
                    + ", with "
                    + " / ".join(f"{e:+.2f}" for e in errors["with"][-1])
                )
    if pose is not None:
        pose.close()
    n = len(errors["with"])
    print(
        f"\n{args.sex}, people {args.start}-{args.start + args.people - 1} of the draw: {n} measured both ways, "
        f"{refused} refused, {time.perf_counter() - started:.0f} s; without {args.without!r} / with it"
    )
    print("| | " + " | ".join(GIRTHS) + " (MAE, mean error) | side depths used |")
    print("|---|---|---|")
    for mode in ("without", "with"):
        e = np.array(errors[mode])
        v = np.array(values[mode])
        print(
            f"| {mode} | "
            + " / ".join(f"{m:.2f}" for m in np.abs(e).mean(0))
            + " ("
            + " / ".join(f"{m:+.2f}" for m in e.mean(0))
            + f") | {int(np.isfinite(v[:, 4]).sum())} |"
        )
    print("\n| value (bias, MAE; cm) | without | with |")
    print("|---|---|---|")
    for j, name in enumerate(VALUES):
        cells = []
        for mode in ("without", "with"):
            col = np.array(values[mode])[:, j]
            col = col[np.isfinite(col)]
            cells.append(f"{col.mean():+.2f}, {np.abs(col).mean():.2f} (n {col.size})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
