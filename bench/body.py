"""Body service benchmarks on ANSUR II: statistical model, synthetic photo path, size recommendation.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/body.py [--photos N] [--no-write]

1. Held-out accuracy (5-fold CV per sex, MAE cm) from (a) height+weight, (b) + ideal widths/depths,
   beside a plain least-squares fit on the same folds and the anchors from the data README.
2. The full photo path on synthetic front/side renders of held-out ANSUR people (model refitted
   without them), MAE against their measured girths; target within 1.3x of row (b).
3. Size recommendation: a chest/waist chart; for people whose true measurements fall in one size,
   the share recommended that size (best, and best-or-second) from held-out predictions.
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

from atelier.body.evaluate import (  # noqa: E402
    KNOWN_A,
    KNOWN_B,
    PHOTO_VARIABLES,
    TARGETS,
    cross_validate,
    cv_predictions,
)
from atelier.body.photo import PhotoError, measure  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.scene import random_outfit, render_scene  # noqa: E402
from atelier.body.sizing import BodyMeasurement, Size, SizeChart, SizeRange, recommend  # noqa: E402
from atelier.body.statmodel import (  # noqa: E402
    ANSUR_FILES,
    POPULATIONS,
    Observation,
    read_ansur,
)
from bench.body_draw import held_out_model, person, scenes  # noqa: E402
from bench.report import write_section  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body"
ANCHOR_A = {
    "chest_girth": (2.52, 3.37),
    "waist_girth": (3.49, 3.80),
    "hip_girth": (2.04, 2.29),
    "inseam": (1.84, 1.88),
    "sleeve_length": (1.45, 1.42),
    "neck_girth": (1.16, 0.95),
}
ANCHOR_B = {"chest_girth": (1.67, 1.63), "waist_girth": (1.18, 1.37), "hip_girth": (1.17, 1.03)}
SEX_COL = {"male": 0, "female": 1}
PHOTO_TARGETS = ("chest_girth", "waist_girth", "hip_girth", "inseam")


def model_table(data: dict) -> tuple[str, dict]:
    rows = [
        "| target | sex | (a) ours | (a) OLS same folds | (a) anchor | (b) ours | (b) OLS same folds | (b) anchor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    row_b: dict[tuple[str, str], float] = {}
    for sex, columns in data.items():
        a = {r.target: r for r in cross_validate(columns, sex, KNOWN_A, TARGETS)}
        b = {r.target: r for r in cross_validate(columns, sex, KNOWN_B, TARGETS[:3], with_photo=True)}
        for t in TARGETS:
            cells = [
                t,
                sex,
                f"{a[t].model_mae_cm:.2f}",
                f"{a[t].ols_mae_cm:.2f}",
                f"{ANCHOR_A[t][SEX_COL[sex]]:.2f}",
            ]
            if t in b:
                row_b[(sex, t)] = b[t].model_mae_cm
                cells += [
                    f"{b[t].model_mae_cm:.2f}",
                    f"{b[t].ols_mae_cm:.2f}",
                    f"{ANCHOR_B[t][SEX_COL[sex]]:.2f}",
                ]
            else:
                cells += ["–", "–", "–"]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows), row_b


def photo_table(
    data: dict,
    per_sex: int,
    row_b: dict,
    backgrounds: Path,
    cut_per_sex: int = 40,
    max_seconds: float = 0.0,
    render_px: int = 960,
    smooth_torso: bool = False,
    population: str = "soldier",
    same_spot: bool = False,
    lens: float = 1.0,
    exif: bool = False,
) -> str:
    """The photo path on 3D renders (atelier.body.scene): a phone camera at a random height, distance
    and pitch; drawn rooms, a plain wall and the shared background photos in turn; random outfits,
    light and arm angles (25-40 degrees, as the app asks: arms away from the body)."""
    pose_path = Path(os.environ.get("ATELIER_BODY_POSE_MODEL", default_bundle_path()))
    # ATELIER_BODY_MATTE_MODEL as the service reads it: unset, the matte beside the bundle; empty, none.
    pose = load_pose_model(pose_path, os.environ.get("ATELIER_BODY_MATTE_MODEL"))
    backdrops = scenes(backgrounds)
    rng = np.random.default_rng(7)
    rows = [
        "| target | sex | photo path MAE | row (b) | ratio | target 1.3x | same people, ideal widths/depths |",
        "|---|---|---|---|---|---|---|",
    ]
    methods: dict[str, int] = {}
    failures: list[str] = []
    seconds = []
    render_seconds = []
    bias_rows = []
    cut_refused = cut_total = 0
    cut_messages: dict[str, int] = {}
    started = time.perf_counter()
    reached: dict[str, int] = {}
    for sex_index, (sex, columns) in enumerate(data.items()):
        n = len(columns["height"])
        test = rng.choice(n, per_sex, replace=False)
        # A time budget, shared by the sexes still to come: stop drawing people when it is spent.
        budget = (
            (max_seconds - (time.perf_counter() - started)) / (len(data) - sex_index) if max_seconds else 0.0
        )
        sex_start = time.perf_counter()
        # Refit without the rendered people so the photo path is scored on unseen bodies.
        model = held_out_model(columns, sex, test, population)
        errors: dict[str, list[float]] = {t: [] for t in PHOTO_TARGETS}
        # The same people through the same model with their measured widths/depths: how hard this
        # sample is (row (b) is over all people), so the photo path's own share can be read off.
        ideal: dict[str, list[float]] = {t: [] for t in PHOTO_TARGETS[:3]}
        observed_err: dict[str, list[float]] = {}
        for k, i in enumerate(test):
            if budget and time.perf_counter() - sex_start > budget:
                break
            reached[sex] = k + 1
            body, camera, arm, scene = person(columns, sex, int(i), k, backdrops, render_px, lens)
            # The lens as a phone's EXIF gives it, or (as most of this bench's history) not given.
            focal = camera.focal_35mm if exif else None
            start = time.perf_counter()
            front_r = render_scene(
                body,
                "front",
                camera,
                scene,
                arm_angle_deg=arm,
                seed=int(i),
                smooth_torso=smooth_torso,
            )
            front = front_r.image_rgb
            side = render_scene(
                body,
                "side",
                camera,
                scene,
                seed=int(i) + 1,
                smooth_torso=smooth_torso,
                # One spot: the front photo's background and clothes.
                background_seed=int(i) if same_spot else None,
                outfit=random_outfit(np.random.default_rng(int(i))) if same_spot else None,
            ).image_rgb
            render_seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            try:
                result = measure(
                    front, side, body["height"], body["weight_kg"], sex, model, pose, focal_35mm=focal
                )
            except PhotoError as exc:
                failures.append(f"{sex} #{i} on {getattr(scene, 'name', scene)}: {exc.reason}")
                continue
            seconds.append(time.perf_counter() - start)
            methods[result.segmentation_method] = methods.get(result.segmentation_method, 0) + 1
            got = {m.name: m.value_cm for m in result.measurements}
            for t in PHOTO_TARGETS:
                errors[t].append(abs(got[t] - body[t]))
            for name, value in result.observed_cm.items():
                observed_err.setdefault(name, []).append(value - body[name])
            known = {k2: Observation(body[k2]) for k2 in ("height", "weight_kg", *PHOTO_VARIABLES)}
            exact = model.predict(known, sex, names=tuple(ideal)).estimates
            for t in ideal:
                ideal[t].append(abs(exact[t].value_cm - body[t]))
            if k < cut_per_sex:
                # Really cut off: the same front photo cropped through the knees, and through the forehead.
                ys = np.nonzero(front_r.mask)[0]
                top, bottom = int(ys.min()), int(ys.max())
                for crop in (
                    front[: top + int(0.72 * (bottom - top))],
                    front[top + int(0.04 * (bottom - top)) :],
                ):
                    cut_total += 1
                    try:
                        measure(
                            crop, None, body["height"], body["weight_kg"], sex, model, pose, focal_35mm=focal
                        )
                    except PhotoError as exc:
                        cut_refused += 1
                        key = (
                            exc.reason.split("(")[1].split(")")[0]
                            if "cut off (" in exc.reason
                            else exc.reason[:60]
                        )
                        cut_messages[key] = cut_messages.get(key, 0) + 1
        for t in PHOTO_TARGETS:
            mae = float(np.mean(errors[t]))
            ref = row_b.get((sex, t))
            ratio = f"{mae / ref:.2f}" if ref else "–"
            ok = ("yes" if mae <= 1.3 * ref else "no") if ref else "–"
            same = f"{np.mean(ideal[t]):.2f}" if t in ideal else "–"
            rows.append(
                f"| {t} | {sex} | {mae:.2f} | {f'{ref:.2f}' if ref else '–'} | {ratio} | {ok} | {same} |"
            )
        for name in (
            "shoulder_width",
            "sleeve_length",
            "chest_width",
            "waist_width",
            "hip_width",
            "chest_depth",
            "waist_depth",
            "hip_depth",
            "inseam",
        ):
            e = observed_err.get(name, [])
            if e:
                bias_rows.append(
                    f"| {name} | {sex} | {len(e)} | {np.mean(e):+.2f} | {np.mean(np.abs(e)):.2f} |"
                )
    if pose is not None:
        pose.close()
    rows.append("")
    rows.append(
        ", ".join(f"{n} {sex}" for sex, n in reached.items())
        + f" people drawn, 3D renders {render_px * 3 // 4}x{render_px} px; segmentation used: "
        + ", ".join(f"{k} x{v}" for k, v in methods.items())
        + f"; refused: {len(failures)} of {sum(reached.values())}; median {np.median(seconds):.2f} s per front+side "
        f"pair to measure, {np.median(render_seconds):.2f} s to render."
    )
    rows.append("")
    rows.append(
        "Photo values before the model (observed minus true, cm), all people measured: "
        "shoulder width and sleeve from the outline's shoulder points."
    )
    rows.append("")
    rows.append("| value | sex | n | bias | MAE |")
    rows.append("|---|---|---|---|---|")
    rows.extend(bias_rows)
    rows.append("")
    rows.append(
        f"Really cut-off photos (the first {cut_per_sex} front renders per sex cropped through the knees "
        f"and through the forehead): refused {cut_refused} of {cut_total} "
        f"({', '.join(f'{k}: {v}' for k, v in cut_messages.items())})."
    )
    if failures:
        rows.append("")
        rows.append(
            "Refused good photos: " + "; ".join(failures[:10]) + (" ..." if len(failures) > 10 else "")
        )
    return "\n".join(rows)


def chart_for(sex: str) -> SizeChart:
    """A chest/waist chart with 8 cm steps (EN 13402-3 style body ranges)."""
    if sex == "male":
        chest0, waist0, labels = 84, 72, ("XS", "S", "M", "L", "XL", "XXL", "3XL")
    else:
        chest0, waist0, labels = 76, 62, ("XS", "S", "M", "L", "XL", "XXL", "3XL")
    sizes = [
        Size(
            label,
            (
                SizeRange("chest_girth", chest0 + 8 * i, chest0 + 8 * (i + 1)),
                SizeRange("waist_girth", waist0 + 8 * i, waist0 + 8 * (i + 1)),
            ),
        )
        for i, label in enumerate(labels)
    ]
    return SizeChart(f"{sex} tops", "EN 13402", sizes)


def recommendation_table(data: dict) -> str:
    rows = [
        "| sex | known | people in one size | best = true size | best or second = true size |",
        "|---|---|---|---|---|",
    ]
    for sex, columns in data.items():
        chart = chart_for(sex)
        for label, known in (("height+weight", KNOWN_A), ("+ ideal widths/depths", KNOWN_B)):
            pred, sd = cv_predictions(columns, known, ("chest_girth", "waist_girth"))
            hits = hits2 = total = 0
            for i in range(len(columns["height"])):
                true = [
                    s.label
                    for s in chart.sizes
                    if all(r.min_cm <= columns[r.measurement][i] < r.max_cm for r in s.ranges)
                ]
                if len(true) != 1:
                    continue
                total += 1
                rec = recommend(
                    chart,
                    [
                        BodyMeasurement(t, float(pred[t][i]), float(sd[t][i]))
                        for t in ("chest_girth", "waist_girth")
                    ],
                )
                hits += rec.best.size == true[0]
                hits2 += rec.best.size == true[0] or (rec.second is not None and rec.second.size == true[0])
            rows.append(f"| {sex} | {label} | {total} | {hits / total:.1%} | {hits2 / total:.1%} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=40, help="synthetic people per sex for the photo path")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs (../shared/benchmarks/body)"
    )
    parser.add_argument(
        "--backgrounds", type=Path, help="background photos for the renders (default: DATA/backgrounds)"
    )
    parser.add_argument("--sex", choices=("male", "female"), help="one sex only (two runs side by side)")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="stop drawing people after this long")
    parser.add_argument(
        "--render-px", type=int, default=960, help="height of the rendered photos in px (width 3/4 of it)"
    )
    parser.add_argument(
        "--smooth-torso",
        action="store_true",
        help="render the torso between its levels as a monotone cubic, not straight segments",
    )
    parser.add_argument(
        "--population",
        choices=POPULATIONS,
        default="soldier",
        help="whom the photo path's model answers for (ATELIER_BODY_POPULATION); the people are ANSUR II's",
    )
    parser.add_argument(
        "--same-spot",
        action="store_true",
        help="the side photo from where the front one was taken: the same background and clothes "
        "(the phone stayed put while the person turned); default: another crop and outfit per photo",
    )
    parser.add_argument(
        "--lens",
        type=float,
        default=1.0,
        help="the phone's lens as a multiple of its main camera's focal length (0.5: ultra-wide, 2: telephoto)",
    )
    parser.add_argument(
        "--exif",
        action="store_true",
        help="give the path each photo's focal length, as a phone's EXIF does (default: none, a main camera assumed)",
    )
    args = parser.parse_args()
    backgrounds = args.backgrounds or args.data / "backgrounds"
    if not all((args.data / f).exists() for f in ANSUR_FILES.values()):
        print(f"ANSUR II CSVs not found in {args.data}: nothing to benchmark")
        return 1
    data = {sex: read_ansur(args.data / f) for sex, f in ANSUR_FILES.items() if args.sex in (None, sex)}
    load_before = os.getloadavg()
    start = time.perf_counter()
    table_model, row_b = model_table(data)
    table_rec = recommendation_table(data)
    table_photo = photo_table(
        data,
        args.photos,
        row_b,
        backgrounds,
        max_seconds=args.max_seconds,
        render_px=args.render_px,
        smooth_torso=args.smooth_torso,
        population=args.population,
        same_spot=args.same_spot,
        lens=args.lens,
        exif=args.exif,
    )
    load_after = os.getloadavg()
    body = "\n\n".join(
        [
            "Statistical body model, held-out ANSUR II people (5-fold CV per sex), MAE in cm. "
            "(a) height+weight; (b) + ideal front widths and side depths (the manually measured breadths/depths). "
            "Anchors: plain least squares from the data README; 'OLS same folds' recomputes it on our folds.",
            table_model,
            "Full photo path on 3D renders of held-out ANSUR people (model refitted without them; "
            "atelier.body.scene: elliptical cross-sections, limbs, clothing textures, light, soft shadows, "
            f"a phone camera at 90-160 cm{f' with a {args.lens:g}x lens' if args.lens != 1 else ''}, "
            f"{'its focal length given as EXIF gives it, ' if args.exif else ''}"
            "pitched at the body or level, in drawn rooms, on a plain wall and on "
            "the 17 shared background photos): learned segmentation (full-height strips when the whole photo "
            "gives no person), framing checks, scale from head top to the floor (front: ankle landmarks plus "
            "ANSUR's malleolus height; side: heel landmarks), side view told from the landmarks and side outlines "
            "checked, the side photo given the front's pixels per cm where both come from one camera (same size, "
            "own scales within 6%, or the side outline the shorter with its head top on the front's row), "
            "levels (acromion height from the outline, hip where the side outline's back "
            "edge lies furthest back, chest at the upper torso's greatest depth, waist where ANSUR's proportions "
            "put the navel given those levels), widths/depths with sub-pixel edges, arms "
            "carved out, chest edges taken below the last steep inward move under the armpits (an arm lying "
            "against the chest, background taken in beside it), side outlines with no run through the body "
            "about a level not used, then the model. "
            "MAE in cm vs the measured girths. Nothing here is fitted on the rendered people or the renderer. "
            "Last column: the same people through the same model given their true widths/depths "
            "(how hard this sample is; row (b) is over all people).",
            table_photo,
            "Size recommendation (chest/waist chart, 8 cm steps), held-out predictions with their sd; people whose "
            "true chest and waist fall in one size.",
            table_rec,
            f"Load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f} (2 shared cores); "
            f"total {time.perf_counter() - start:.0f} s.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(
            "body",
            body,
            f"nice -n 10 flock /tmp/atelier-bench.lock .venv/bin/python bench/body.py --photos {args.photos}"
            + (f" --population {args.population}" if args.population != "soldier" else "")
            + (f" --lens {args.lens:g}" if args.lens != 1 else "")
            + (" --exif" if args.exif else ""),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
