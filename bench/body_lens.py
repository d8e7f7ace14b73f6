"""What radial lens distortion does to the body photo path, and what undoing it recovers.

    nice -n 10 .venv/bin/python bench/body_lens.py [--people 12] [--sex male] [--k1 -0.05]

The same held-out ANSUR II people and cameras as bench/body.py (its draw, seed 7, one sex per
run), rendered three ways: a pinhole camera (k1 = 0), the same camera with barrel distortion
``--k1`` (atelier.body.scene's Camera.k1), and the distorted photos undistorted again with
undistort() below (the camera's own focal length and k1: the best case, where both are known).
Prints the photo values' bias and MAE (observed minus true, cm) and the girth MAE for each. Here
the model is the shipped one (fitted on all people, these included): the three columns are
compared with each other, not with BENCHMARKS.md's held-out figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body.photo import PhotoError, measure  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import render_scene  # noqa: E402
from atelier.body.statmodel import ANSUR_FILES, BodyModel, read_ansur  # noqa: E402
from bench.body_draw import drawn_people, person, scenes  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"


def undistort(image_rgb: np.ndarray, k1: float, focal: float) -> np.ndarray:
    """The photo with Brown's first radial term ``k1`` undone (principal point at the centre), as
    atelier.body.scene renders it: the best case, where the lens's k1 and focal length are known."""
    if not k1:
        return image_rgb
    h, w = image_rgb.shape[:2]
    matrix = np.array([[focal, 0.0, (w - 1) / 2], [0.0, focal, (h - 1) / 2], [0.0, 0.0, 1.0]])
    out: np.ndarray = cv2.undistort(image_rgb, matrix, np.array([k1, 0.0, 0.0, 0.0]))
    return out


VALUES = ("shoulder_width", "chest_width", "waist_width", "hip_width", "chest_depth", "hip_depth", "inseam")
GIRTHS = ("chest_girth", "waist_girth", "hip_girth")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs and backgrounds/"
    )
    parser.add_argument("--people", type=int, default=12)
    parser.add_argument("--sex", choices=("male", "female"), default="male")
    parser.add_argument("--k1", type=float, default=-0.05)
    args = parser.parse_args()
    columns = read_ansur(args.data / ANSUR_FILES[args.sex])
    test = drawn_people(columns)
    backgrounds = scenes(args.data / "backgrounds")
    pose = load_pose_model(default_bundle_path())
    model = BodyModel.load()
    ways = ("pinhole", f"k1 {args.k1:+.2f}", "undistorted")
    observed: dict[str, dict[str, list[float]]] = {w: {v: [] for v in VALUES} for w in ways}
    girth: dict[str, dict[str, list[float]]] = {w: {g: [] for g in GIRTHS} for w in ways}
    refused = dict.fromkeys(ways, 0)
    for k, i in enumerate(test[: args.people]):
        body, cam, arm, scene = person(columns, args.sex, int(i), k, backgrounds)
        for way in ways:
            c = cam if way == "pinhole" else replace(cam, k1=args.k1)
            front = render_scene(body, "front", c, scene, arm_angle_deg=arm, seed=int(i)).image_rgb
            side = render_scene(body, "side", c, scene, seed=int(i) + 1).image_rgb
            if way == "undistorted":
                front = undistort(front, args.k1, cam.focal_px)
                side = undistort(side, args.k1, cam.focal_px)
            try:
                result = measure(front, side, body["height"], body["weight_kg"], args.sex, model, pose)
            except PhotoError:
                refused[way] += 1
                continue
            for name in VALUES:
                if name in result.observed_cm:
                    observed[way][name].append(result.observed_cm[name] - body[name])
            got = {m.name: m.value_cm for m in result.measurements}
            for g in GIRTHS:
                girth[way][g].append(abs(got[g] - body[g]))
    if pose is not None:
        pose.close()
    print(f"{args.sex}, {args.people} people, k1 {args.k1:+.3f}; refused: {refused}")
    print("| value | " + " | ".join(f"{w}: bias / MAE (n)" for w in ways) + " |")
    print("|---|" + "---|" * len(ways))
    for name in VALUES:
        cells = []
        for w in ways:
            e = np.array(observed[w][name])
            cells.append(f"{e.mean():+.2f} / {np.abs(e).mean():.2f} ({e.size})" if e.size else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for g in GIRTHS:
        print(f"| {g} MAE | " + " | ".join(f"{np.mean(girth[w][g]):.2f}" for w in ways) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
