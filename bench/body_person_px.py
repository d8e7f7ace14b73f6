"""How the body photo path's accuracy falls with the person's height in pixels (to set MIN_PERSON_PX).

    nice -n 10 .venv/bin/python bench/body_person_px.py --sex male [--people 24] [--sizes 150,200,250,300]

The first ``--people`` of bench/body.py's held-out draw for one sex (seed 7, as a ``--sex`` run
draws them; the model refitted without them), rendered as bench/body.py renders them, then the
front and side photos reduced (INTER_AREA, as a smaller photo) so the front person is N px tall,
and measured with the minimum person height lowered out of the way. Prints the girth MAE per
size, at full resolution and from height and weight alone, the photo values' bias, and refusals.
Run the two sexes side by side; a setting is chosen on both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body import photo  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import render_scene  # noqa: E402
from atelier.body.statmodel import ANSUR_FILES, Observation, read_ansur  # noqa: E402
from bench.body_draw import drawn_people, held_out_model, person, scenes  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"
GIRTHS = ("chest_girth", "waist_girth", "hip_girth")
VALUES = ("shoulder_width", "sleeve_length", "chest_width", "waist_width", "hip_width", "waist_depth")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs and backgrounds/"
    )
    parser.add_argument("--sex", choices=("male", "female"), required=True)
    parser.add_argument("--people", type=int, default=24)
    parser.add_argument("--sizes", default="150,200,250,300", help="front person heights, px")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    columns = read_ansur(args.data / ANSUR_FILES[args.sex])
    test = drawn_people(columns)
    model = held_out_model(columns, args.sex, test)
    backgrounds = scenes(args.data / "backgrounds")
    pose = load_pose_model(default_bundle_path())
    photo.MIN_PERSON_PX = 40  # measure every size; the refusals counted are the other kinds
    labels = [*sizes, 0]  # 0: full resolution
    errors: dict[int, dict[str, list[float]]] = {s: {g: [] for g in GIRTHS} for s in labels}
    values: dict[int, dict[str, list[float]]] = {s: {v: [] for v in VALUES} for s in labels}
    refused: dict[int, list[str]] = {s: [] for s in labels}
    alone: dict[str, list[float]] = {g: [] for g in GIRTHS}
    for k, i in enumerate(test[: args.people]):
        body, cam, arm, scene = person(columns, args.sex, int(i), k, backgrounds)
        front = render_scene(body, "front", cam, scene, arm_angle_deg=arm, seed=int(i))
        side = render_scene(body, "side", cam, scene, seed=int(i) + 1).image_rgb
        known = {"height": Observation(body["height"]), "weight_kg": Observation(body["weight_kg"])}
        est = model.predict(known, args.sex, names=GIRTHS).estimates
        for g in GIRTHS:
            alone[g].append(abs(est[g].value_cm - body[g]))
        ys = np.nonzero(front.mask)[0]
        for s in labels:
            f = s / float(ys.max() - ys.min()) if s else 1.0
            if f >= 1 and s:
                continue
            a, b = front.image_rgb, side
            if s:
                a = cv2.resize(a, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
                b = cv2.resize(b, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            try:
                result = photo.measure(a, b, body["height"], body["weight_kg"], args.sex, model, pose)
            except photo.PhotoError as exc:
                refused[s].append(f"#{i}: {exc.reason[:80]}")
                continue
            got = {m.name: m.value_cm for m in result.measurements}
            for g in GIRTHS:
                errors[s][g].append(abs(got[g] - body[g]))
            for v in VALUES:
                if v in result.observed_cm:
                    values[s][v].append(result.observed_cm[v] - body[v])
    if pose is not None:
        pose.close()
    print(
        f"{args.sex}, {args.people} people; girth MAE from height and weight alone: "
        + " / ".join(f"{np.mean(alone[g]):.2f}" for g in GIRTHS)
    )
    print(
        "| person px | n | refused | chest / waist / hip girth MAE | "
        + " | ".join(f"{v} bias" for v in VALUES)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(VALUES))
    for s in labels:
        girth = " / ".join(f"{np.mean(errors[s][g]):.2f}" if errors[s][g] else "–" for g in GIRTHS)
        bias = " | ".join(f"{np.mean(values[s][v]):+.2f}" if values[s][v] else "–" for v in VALUES)
        print(f"| {s or 'full'} | {len(errors[s]['chest_girth'])} | {len(refused[s])} | {girth} | {bias} |")
    for s in labels:
        for line in refused[s]:
            print(f"refused at {s or 'full'}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
