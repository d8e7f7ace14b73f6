"""Where the body photo path's girth error comes from: bench/body.py's people measured again with
parts of the truth handed in.

    nice -n 10 .venv/bin/python bench/body_budget.py [--people 200] [--sex male]

The same held-out ANSUR II people, cameras and photos as bench/body.py (its draw: seed 7, one sex
per run, the model refitted without the 200 drawn people of that sex), each measured three times:

1. as measured (bench/body.py's photo path, unchanged);
2. camera known: the renderer's pitch and focal length replace the estimated ones, so levelling is
   exact (every photo levelled, a level camera too);
3. camera and scale known: as 2, and the front photo's pixels per cm are the camera's (focal length
   over distance) instead of the stated height over head top to floor.

And three replays of 1 through the same model (no photo measured again):

4. photo values true: the values the path gave the model (same names, same declared sds, same
   shared-scale groups) replaced by the person's true ones;
5. six widths and depths true: as 4, with every torso width and side depth given, also where the
   path lost them (what keeping every side photo would give);
6. exact: height, weight and the six true widths and depths with no noise declared (bench/body.py's
   last column).

Per variant: girth MAE (cm) for chest, waist and hip, the waist girth's mean signed error, and the
waist MAE of the people whose side depths the path used and of those whose it did not. Oracle
variants patch atelier.body's module functions for the length of one measurement (a benchmark
harness, not a code path of the service).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body import camera, photo  # noqa: E402
from atelier.body.photo import PhotoError, measure  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import Camera, render_scene  # noqa: E402
from atelier.body.statmodel import ANSUR_FILES, Observation, read_ansur  # noqa: E402
from bench.body_draw import drawn_people, held_out_model, person, scenes  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"
GIRTHS = ("chest_girth", "waist_girth", "hip_girth")
SIX = ("chest_width", "waist_width", "hip_width", "chest_depth", "waist_depth", "hip_depth")
MEASURED = ("as measured", "camera known", "camera and scale known")
REPLAYED = ("photo values true", "six widths and depths true", "exact")


@contextlib.contextmanager
def patched(module: object, name: str, value: object) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def oracle(cam: Camera, height_cm: float, scale: bool) -> Iterator[None]:
    """The photo path with the renderer's camera: its pitch and focal length; with ``scale`` the
    front photo's pixels per cm too (a level camera's f / distance, set through the floor row)."""
    levelled = photo._levelled

    def with_scale(image_rgb, view, pitch, pose_model, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        image, again = levelled(image_rgb, view, pitch, pose_model, name, *args, **kwargs)
        if name == "front" and again is not view:
            again.bottom_px = again.top_px + height_cm * cam.focal_px / cam.distance_cm
        return image, again

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(photo, "_camera_pitch_deg", lambda *a, **k: cam.pitch_deg))
        stack.enter_context(patched(camera, "focal_px", lambda shape: cam.focal_px))
        stack.enter_context(patched(camera, "MIN_PITCH_DEG", 0.0))
        if scale:
            stack.enter_context(patched(photo, "_levelled", with_scale))
        yield


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs and backgrounds/"
    )
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--sex", choices=("male", "female"), default="male")
    args = parser.parse_args()
    columns = read_ansur(args.data / ANSUR_FILES[args.sex])
    test = drawn_people(columns)
    backgrounds = scenes(args.data / "backgrounds")
    pose = load_pose_model(default_bundle_path())
    model = held_out_model(columns, args.sex, test)
    # What the photo path gives the model last (its final prediction): for the replays.
    inputs: list[tuple[dict[str, Observation], list]] = []
    predict = model.predict

    def spy(known, sex=None, names=None, scale_groups=()):  # type: ignore[no-untyped-def]
        inputs.append((dict(known), list(scale_groups)))
        return predict(known, sex, names, scale_groups)

    model.predict = spy  # type: ignore[method-assign]
    errors: dict[str, list[dict[str, float]]] = {v: [] for v in (*MEASURED, *REPLAYED)}
    with_depths: list[bool] = []
    refused = dict.fromkeys(MEASURED, 0)
    start = time.perf_counter()
    for k, i in enumerate(test[: args.people]):
        body, cam, arm, scene = person(columns, args.sex, int(i), k, backgrounds)
        front = render_scene(body, "front", cam, scene, arm_angle_deg=arm, seed=int(i)).image_rgb
        side = render_scene(body, "side", cam, scene, seed=int(i) + 1).image_rgb
        results: dict[str, dict[str, float] | None] = {}
        for variant in MEASURED:
            inputs.clear()
            context = (
                contextlib.nullcontext()
                if variant == "as measured"
                else oracle(cam, body["height"], scale=variant == "camera and scale known")
            )
            try:
                with context:
                    result = measure(front, side, body["height"], body["weight_kg"], args.sex, model, pose)
            except PhotoError:
                refused[variant] += 1
                results[variant] = None
                continue
            got = {m.name: m.value_cm for m in result.measurements}
            results[variant] = {g: got[g] - body[g] for g in GIRTHS}
            if variant == "as measured":
                final_known, groups = inputs[-1]
        if any(r is None for r in results.values()):
            continue  # every variant on the same people
        for variant, r in results.items():
            assert r is not None
            errors[variant].append(r)
        with_depths.append("waist_depth" in final_known)
        true_known = {
            n: Observation(body[n], o.stddev) if n not in ("height", "weight_kg") else o
            for n, o in final_known.items()
        }
        sds = {n: o.stddev for n, o in final_known.items()}
        # A width or depth the path lost gets 0.6 cm, about the median sd it declares for them.
        six = {**true_known, **{n: Observation(body[n], sds.get(n, 0.6)) for n in SIX}}
        exact = {n: Observation(body[n]) for n in ("height", "weight_kg", *SIX)}
        # One shared scale for all of them (as where the side photo takes the front's).
        six_groups = [(sorted({n for g, _ in groups for n in g} | set(SIX)), groups[0][1])] if groups else []
        for variant, known, grp in (
            ("photo values true", true_known, groups),
            ("six widths and depths true", six, six_groups),
            ("exact", exact, []),
        ):
            est = predict(known, args.sex, names=GIRTHS, scale_groups=grp).estimates
            errors[variant].append({g: est[g].value_cm - body[g] for g in GIRTHS})
    if pose is not None:
        pose.close()
    kept = np.array(with_depths)
    print(
        f"{args.sex}: {kept.size} people measured by every variant (refused: {refused}); "
        f"side depths used for {int(kept.sum())}; {time.perf_counter() - start:.0f} s"
    )
    print()
    print(
        "| variant | chest MAE | waist MAE | hip MAE | waist mean error | "
        f"waist MAE, depths used ({int(kept.sum())}) | waist MAE, depths not used ({int((~kept).sum())}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, rows in errors.items():
        e = {g: np.array([r[g] for r in rows]) for g in GIRTHS}
        waist = e["waist_girth"]
        split = [f"{np.abs(waist[m]).mean():.2f}" if m.any() else "–" for m in (kept, ~kept)]
        print(
            f"| {variant} | "
            + " | ".join(f"{np.abs(e[g]).mean():.2f}" for g in GIRTHS)
            + f" | {waist.mean():+.2f} | {split[0]} | {split[1]} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
