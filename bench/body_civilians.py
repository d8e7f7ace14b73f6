"""The body model's two populations on soldiers (ANSUR II) and civilians (NHANES 2017-March 2020).

    .venv/bin/python bench/body_civilians.py [--nhanes FILE] [--data ../shared/benchmarks/body]

The soldiers' model is fitted on ANSUR II, US Army personnel measured in 2010-2012, few of them
heavy. A retailer's customers are civilians. NHANES measured a sample of US adults with a tape
(public domain), and one of its girths is ANSUR's: the hip at the buttocks' greatest protrusion
(NHANES BMXHIP, ANSUR's buttock circumference). Its waist is taken at the iliac crest, ANSUR's at the
navel, so the waist is printed for the soldiers' model only and marked as another level. The
civilians' model (atelier.body.statmodel.civilian_model) takes height, weight and hip girth from
NHANES and the rest given those from ANSUR II.

Per sex and BMI band:

1. how many people each data set has;
2. hip girth from height and weight, held out: the soldiers' model (fitted on all of ANSUR II; NHANES
   is new to it; on ANSUR II its own 5-fold figures) and the civilians' model (fitted with four
   fifths of NHANES, scored on the fifth left out, 5 folds; on ANSUR II people answered as
   civilians): MAE / mean signed error (cm);
3. the photo path's plausibility test (atelier.body.photo, MAX_Z sd) on these people, held out as
   in 2: how often the true hip girth lies beyond it from the height/weight prediction, and the
   estimated chance that a true hip width is dropped as implausible (the model's hip width given
   height, weight and the true hip girth, mean and sd, plus a photo's 0.7 cm; model-based, as NHANES
   has no widths);
4. the waist, soldiers' model, NHANES's iliac-crest waist against ANSUR's navel waist.

5. with ``--photos N``: the photo path on renders of N NHANES people per sex, a third each at BMI
   under 30, 30-40 and 40 or more (from the first fold, so the civilians' model of 2 and 3 has not
   seen them). Each person's height, weight and hip girth are theirs; every other measurement the
   renderer needs is one draw from the civilians' model given those three (as atelier.body.scene
   draws ANSUR II people from their own measurements). Camera and backgrounds as in bench/body.py.
   Measured once with each population's model, front and side photos, against the person's real
   hip girth (NHANES): what the prior does to a heavy customer's photo measurement. The drawn shape
   follows the civilians' model's own assumption, so only the hip, which is real, is scored.

``--nhanes`` defaults to the file the model is fitted with (atelier/body/nhanes_adults.csv, whose
header gives its source); any CSV with NHANES's column names RIAGENDR, RIDAGEYR, BMXHT, BMXWT,
BMXHIP and BMXWAIST serves (the CDC's P_BMX joined with P_DEMO on SEQN).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy.stats import norm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body.evaluate import KNOWN_A, cv_predictions  # noqa: E402
from atelier.body.photo import MAX_Z  # noqa: E402
from atelier.body.statmodel import (  # noqa: E402
    ANSUR_FILES,
    MEASUREMENTS,
    NHANES_PATH,
    NHANES_SEX,
    VARIABLES,
    BodyModel,
    Observation,
    SexModel,
    civilian_model,
    fit_sex,
    log_observations,
    read_ansur,
    read_nhanes,
)

DATA = REPO.parent / "shared" / "benchmarks" / "body"
BANDS = ((0.0, 99.0), (0.0, 25.0), (25.0, 30.0), (30.0, 35.0), (35.0, 40.0), (40.0, 99.0))
PHOTO_SD_CM = 0.7
FOLDS = 5
INDEX = {v: i for i, v in enumerate(VARIABLES)}


def bmi(people: Mapping[str, np.ndarray]) -> np.ndarray:
    return people["weight_kg"] / (people["height"] / 100.0) ** 2


def conditional(
    model: SexModel, known: Mapping[str, np.ndarray], target: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (cm) and sd (cm) of ``target`` given exact ``known`` values (cm, kg; the height/weight
    terms are added), for every person."""
    logs = {name: np.log(values) for name, values in known.items()}
    if "height" in logs and "weight_kg" in logs:
        logs["log_weight_sq"] = logs["weight_kg"] ** 2
        logs["log_height_x_log_weight"] = logs["height"] * logs["weight_kg"]
    k = [INDEX[n] for n in logs]
    t = INDEX[target]
    x = np.column_stack(list(logs.values()))
    gain = np.linalg.solve(model.cov[np.ix_(k, k)], model.cov[k, t])
    mean = np.exp(model.mean[t] + (x - model.mean[k]) @ gain)
    var = model.cov[t, t] - model.cov[t, k] @ gain
    return mean, mean * np.sqrt(max(float(var), 0.0))


def plausibility(model: SexModel, people: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per person: whether the true hip girth lies beyond MAX_Z sd of the height/weight prediction,
    and the chance that a true hip width is dropped as implausible (see the module docstring)."""
    hw = hw_of(people)
    hip, hip_sd = conditional(model, hw, "hip_girth")
    ref, ref_sd = conditional(model, hw, "hip_width")
    likely, likely_sd = conditional(model, {**hw, "hip_girth": people["hip_girth"]}, "hip_width")
    limit = MAX_Z * np.hypot(ref_sd, PHOTO_SD_CM)
    shift, spread = likely - ref, np.hypot(likely_sd, PHOTO_SD_CM)
    dropped = norm.sf((limit - shift) / spread) + norm.cdf((-limit - shift) / spread)
    return np.abs(people["hip_girth"] - hip) > MAX_Z * hip_sd, dropped


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nhanes", type=Path, default=NHANES_PATH, help="NHANES adults CSV")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs")
    parser.add_argument("--min-age", type=float, default=18)
    parser.add_argument("--max-age", type=float, default=80, help="NHANES top-codes age at 80")
    parser.add_argument("--photos", type=int, default=0, help="NHANES people per sex to render and measure")
    parser.add_argument("--sex", choices=tuple(NHANES_SEX), help="one sex only for --photos")
    args = parser.parse_args()
    nhanes = read_nhanes(args.nhanes, (args.min_age, args.max_age), waist=True)
    ansur = {sex: read_ansur(args.data / name) for sex, name in ANSUR_FILES.items()}
    print(f"NHANES adults aged {args.min_age:.0f}-{args.max_age:.0f} with height, weight and hip girth")
    print()
    print("| sex | BMI | ANSUR II people (share) | NHANES people (share) |")
    print("|---|---|---|---|")
    for sex in NHANES_SEX:
        a, n = bmi(ansur[sex]), bmi(nhanes[sex])
        for lo, hi in BANDS[1:]:
            ia, inn = (a >= lo) & (a < hi), (n >= lo) & (n < hi)
            print(
                f"| {sex} | {lo:.0f}-{hi:.0f} | {ia.sum()} ({ia.mean():.1%}) | {inn.sum()} ({inn.mean():.1%}) |"
            )
    labels = ["all" if hi - lo > 90 else f"{lo:.0f}-{hi:.0f}" for lo, hi in BANDS]
    hip_rows, check_rows, waist_rows = [], [], []
    for sex, people in nhanes.items():
        soldiers = fit_sex(ansur[sex])
        fold = np.random.default_rng(0).permutation(len(people["height"])) % FOLDS
        hw = hw_of(people)
        hip_err = {"soldiers": conditional(soldiers, hw, "hip_girth")[0] - people["hip_girth"]}
        beyond, dropped = {}, {}
        beyond["soldiers"], dropped["soldiers"] = plausibility(soldiers, people)
        hip_err["civilians"] = np.zeros(len(fold))
        beyond["civilians"], dropped["civilians"] = np.zeros(len(fold), bool), np.zeros(len(fold))
        for f in range(FOLDS):
            test = fold == f
            civilians = civilian_model(soldiers, {k: v[~test] for k, v in people.items()})
            part = {k: v[test] for k, v in people.items()}
            hip_err["civilians"][test] = (
                conditional(civilians, hw_of(part), "hip_girth")[0] - part["hip_girth"]
            )
            beyond["civilians"][test], dropped["civilians"][test] = plausibility(civilians, part)
        ansur_hw = hw_of(ansur[sex])
        held_out, _ = cv_predictions(ansur[sex], KNOWN_A, ("hip_girth", "waist_girth"))
        on_ansur = {
            "soldiers": held_out["hip_girth"] - ansur[sex]["hip_girth"],
            "civilians": conditional(civilian_model(soldiers, people), ansur_hw, "hip_girth")[0]
            - ansur[sex]["hip_girth"],
        }
        n_bmi, a_bmi = bmi(people), bmi(ansur[sex])
        for name in ("soldiers", "civilians"):
            cells, checks = [], []
            for lo, hi in BANDS:
                sel = (n_bmi >= lo) & (n_bmi < hi)
                e = hip_err[name][sel]
                cells.append(f"{np.abs(e).mean():.2f} / {e.mean():+.2f}")
                checks.append(f"{beyond[name][sel].mean():.1%} / {dropped[name][sel].mean():.1%}")
            e = on_ansur[name]
            hip_rows.append(
                f"| {sex} | {name} | " + " | ".join(cells) + f" | {np.abs(e).mean():.2f} / {e.mean():+.2f} |"
            )
            check_rows.append(f"| {sex} | {name} | " + " | ".join(checks) + " |")
        waist = np.isfinite(people["waist_girth"])
        w_err = conditional(soldiers, {k: v[waist] for k, v in hw.items()}, "waist_girth")[0]
        w_err = w_err - people["waist_girth"][waist]
        a_err = held_out["waist_girth"] - ansur[sex]["waist_girth"]
        cells = []
        for lo, hi in BANDS:
            sel = (n_bmi[waist] >= lo) & (n_bmi[waist] < hi)
            a_sel = (a_bmi >= lo) & (a_bmi < hi)
            a_cell = f"{np.abs(a_err[a_sel]).mean():.2f}" if a_sel.sum() >= 5 else "–"
            cells.append(f"{np.abs(w_err[sel]).mean():.2f} / {w_err[sel].mean():+.2f} ({a_cell})")
        waist_rows.append(f"| {sex} | " + " | ".join(cells) + " |")
    head = " | ".join(f"BMI {label}" for label in labels)
    print()
    print("Hip girth from height and weight, held out: MAE / mean error (cm), NHANES by BMI, then ANSUR II")
    print()
    print(f"| sex | model | {head} | ANSUR II |")
    print("|---|---|" + "---|" * len(labels) + "---|")
    print("\n".join(hip_rows))
    print()
    print(
        f"The photo path's plausibility test on NHANES: true hip girth beyond {MAX_Z:.0f} sd / a true hip width dropped (est.)"
    )
    print()
    print(f"| sex | model | {head} |")
    print("|---|---|" + "---|" * len(labels))
    print("\n".join(check_rows))
    print()
    print(
        "Waist, soldiers' model: NHANES (iliac crest) MAE / mean error (ANSUR II navel waist, held-out MAE)"
    )
    print()
    print(f"| sex | {head} |")
    print("|---|" + "---|" * len(labels))
    print("\n".join(waist_rows))
    if args.photos:
        print()
        photo_table(ansur, nhanes, args.photos, args.data / "backgrounds", args.sex)
    return 0


PHOTO_BANDS = ((0.0, 30.0), (30.0, 40.0), (40.0, 99.0))


def drawn_body(model: SexModel, person: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
    """Every measurement of one person: height, weight and hip girth theirs, the rest one draw from
    ``model`` given those three (log space)."""
    known, _ = log_observations(
        {k: Observation(float(person[k])) for k in ("height", "weight_kg", "hip_girth")}
    )
    mean, cov, _ = model.condition(known)
    draw = rng.multivariate_normal(mean, (cov + cov.T) / 2, method="eigh")
    body = {name: float(np.exp(draw[INDEX[name]])) for name in MEASUREMENTS}
    body.update({k: float(person[k]) for k in ("height", "weight_kg", "hip_girth")})
    return body


def photo_table(
    ansur: dict[str, dict[str, np.ndarray]],
    nhanes: dict[str, dict[str, np.ndarray]],
    per_sex: int,
    backgrounds: Path,
    only: str | None,
) -> None:
    from atelier.body.photo import PhotoError, measure
    from atelier.body.pose import default_bundle_path, load_pose_model
    from atelier.body.scene import random_camera, render_scene
    from bench.body_draw import scenes

    pose = load_pose_model(default_bundle_path())
    backdrops = scenes(backgrounds)
    print(
        "The photo path on renders of NHANES people: hip girth MAE / mean error (cm) against their real hip"
    )
    print()
    print(
        "| sex | model | " + " | ".join(f"BMI {lo:.0f}-{hi:.0f}" for lo, hi in PHOTO_BANDS) + " | refused |"
    )
    print("|---|---|" + "---|" * len(PHOTO_BANDS) + "---|")
    for sex, people in nhanes.items():
        if only not in (None, sex):
            continue
        soldiers = fit_sex(ansur[sex])
        fold = np.random.default_rng(0).permutation(len(people["height"])) % FOLDS
        civilians = civilian_model(soldiers, {k: v[fold != 0] for k, v in people.items()})
        models = {
            name: BodyModel({sex: soldiers}, civilian_models={sex: civilians}, population=population)
            for name, population in (("soldiers", "soldier"), ("civilians", "civilian"))
        }
        n_bmi = bmi(people)
        chosen = []
        for lo, hi in PHOTO_BANDS:
            band = np.nonzero((fold == 0) & (n_bmi >= lo) & (n_bmi < hi))[0]
            chosen += list(np.random.default_rng(7).choice(band, min(len(band), per_sex // 3), replace=False))
        errors: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
        refused = dict.fromkeys(models, 0)
        for k, i in enumerate(chosen):
            rng = np.random.default_rng(int(i) + (0 if sex == "male" else 100_000))
            body = drawn_body(civilians, {key: people[key][i] for key in people}, rng)
            cam = random_camera(rng, body["height"])
            arm = float(rng.uniform(25, 40))
            scene = backdrops[k % len(backdrops)]
            front = render_scene(body, "front", cam, scene, arm_angle_deg=arm, seed=int(i)).image_rgb
            side = render_scene(body, "side", cam, scene, seed=int(i) + 1).image_rgb
            for name, model in models.items():
                try:
                    result = measure(front, side, body["height"], body["weight_kg"], sex, model, pose)
                except PhotoError:
                    refused[name] += 1
                    continue
                got = {m.name: m.value_cm for m in result.measurements}
                errors[name].append((n_bmi[i], got["hip_girth"] - body["hip_girth"]))
        for name, rows in errors.items():
            b, e = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
            cells = []
            for lo, hi in PHOTO_BANDS:
                sel = (b >= lo) & (b < hi)
                cells.append(f"{np.abs(e[sel]).mean():.2f} / {e[sel].mean():+.2f} ({sel.sum()})")
            print(f"| {sex} | {name} | " + " | ".join(cells) + f" | {refused[name]} |")
    if pose is not None:
        pose.close()


def hw_of(people: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: people[k] for k in ("height", "weight_kg")}


if __name__ == "__main__":
    sys.exit(main())
