"""The body model on civilians: ANSUR II (soldiers) against NHANES 2017-March 2020 (US adults).

    .venv/bin/python bench/body_civilians.py --nhanes PATH/nhanes_p_demo_bmx_2020.csv

(Without --nhanes it looks in ../shared/benchmarks/body/nhanes/ and says it skipped when the file
is not there: the NHANES file is not among the shared benchmark data.)

The statistical body model is fitted on ANSUR II, US Army personnel measured in 2010-2012: few of
them are heavy (BMI 40 or more: 0.44% of the men, 0.10% of the women). A retailer's customers are
civilians. NHANES measures a sample of the US population with a tape (public domain), and one of
its girths is ANSUR's: the hip at the buttocks' greatest protrusion (NHANES BMXHIP, ANSUR buttock
circumference). Its waist is taken at the iliac crest, ANSUR's at the navel (omphalion), so the
waist rows mix a definition gap with the population gap; they are printed, marked so.

Per sex, for NHANES adults aged --min-age to --max-age with height, weight and the girth measured,
and by BMI band:

- the girth from height and weight alone (the model as shipped): MAE and mean signed error, beside
  the same model's 5-fold held-out figures on ANSUR II (the population it was fitted on);
- how often the true hip girth lies more than MAX_Z (4) sd from the prediction, which is the test
  the photo path applies to its photo values (atelier.body.photo: a value beyond it is dropped as
  implausible for the height and weight);
- the estimated chance that the photo path drops a true hip width as implausible: the ANSUR model's
  hip width given height, weight and the person's true hip girth (mean and sd), with a photo's
  0.7 cm, tested as the photo path tests it. A model-based estimate: NHANES has no widths.

The data file is the CDC's P_BMX joined with P_DEMO, as kept in gagolews/teaching-data
(marek/nhanes_p_demo_bmx_2020.csv); any CSV with the NHANES column names RIAGENDR, RIDAGEYR, BMXHT,
BMXWT, BMXHIP and BMXWAIST serves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import norm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body.evaluate import KNOWN_A, cv_predictions  # noqa: E402
from atelier.body.photo import MAX_Z  # noqa: E402
from atelier.body.statmodel import (  # noqa: E402
    ANSUR_FILES,
    VARIABLES,
    BodyModel,
    Observation,
    design_matrix,
    read_ansur,
)

DATA = REPO.parent / "shared" / "benchmarks" / "body"
NHANES = DATA / "nhanes" / "nhanes_p_demo_bmx_2020.csv"
BANDS = ((0.0, 25.0), (25.0, 30.0), (30.0, 35.0), (35.0, 40.0), (40.0, 99.0))
GIRTHS = {"hip_girth": "BMXHIP", "waist_girth": "BMXWAIST"}
NHANES_SEX = {"male": 1, "female": 2}
PHOTO_SD_CM = 0.7
INDEX = {v: i for i, v in enumerate(VARIABLES)}


def read_nhanes(path: Path, min_age: float, max_age: float) -> dict[str, dict[str, np.ndarray]]:
    """NHANES adults by sex: height, weight (cm, kg), hip and waist girth (cm), NaN where missing."""
    import pandas as pd

    frame = pd.read_csv(path, comment="#")
    frame = frame[frame["RIDAGEYR"].between(min_age, max_age)]
    frame = frame.dropna(subset=["BMXHT", "BMXWT"])
    return {
        sex: {
            "height": part.BMXHT.to_numpy(float),
            "weight_kg": part.BMXWT.to_numpy(float),
            **{girth: part[col].to_numpy(float) for girth, col in GIRTHS.items()},
        }
        for sex, code in NHANES_SEX.items()
        for part in [frame[frame["RIAGENDR"].eq(code)]]
    }


def bmi(columns: dict[str, np.ndarray]) -> np.ndarray:
    return columns["weight_kg"] / (columns["height"] / 100.0) ** 2


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nhanes", type=Path, default=NHANES, help="NHANES P_DEMO + P_BMX CSV")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with the ANSUR II CSVs")
    parser.add_argument("--min-age", type=float, default=18)
    parser.add_argument("--max-age", type=float, default=60, help="ANSUR II's oldest are 58")
    args = parser.parse_args()
    if not args.nhanes.exists():
        # Not among the shared benchmark data: `make bench` (every bench, no arguments) passes by.
        print(f"skipped: no NHANES file at {args.nhanes} (see this script's docstring for where to get it)")
        return 0
    model = BodyModel.load()
    nhanes = read_nhanes(args.nhanes, args.min_age, args.max_age)
    print(
        f"NHANES adults aged {args.min_age:.0f}-{args.max_age:.0f} with height and weight: "
        + ", ".join(f"{len(c['height'])} {sex}" for sex, c in nhanes.items())
    )
    print()
    print("| sex | BMI | ANSUR II people (share) | NHANES people (share) |")
    print("|---|---|---|---|")
    ansur = {sex: read_ansur(args.data / name) for sex, name in ANSUR_FILES.items()}
    for sex in NHANES_SEX:
        a, n = bmi(ansur[sex]), bmi(nhanes[sex])
        for lo, hi in BANDS:
            ia, inn = (a >= lo) & (a < hi), (n >= lo) & (n < hi)
            print(
                f"| {sex} | {lo:.0f}-{hi:.0f} | {ia.sum()} ({ia.mean():.1%}) | {inn.sum()} ({inn.mean():.1%}) |"
            )
    print()
    print(
        "| sex | girth | BMI | NHANES n | MAE | mean error | ANSUR II held-out MAE / mean error (n) "
        f"| true girth beyond {MAX_Z:.0f} sd | true hip width dropped (est.) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for sex, columns in nhanes.items():
        held_out, _ = cv_predictions(ansur[sex], KNOWN_A, tuple(GIRTHS))
        ansur_bmi = bmi(ansur[sex])
        for girth in GIRTHS:
            have = np.isfinite(columns[girth])
            pred, sd, dropped = [], [], []
            for h, w, g in zip(
                columns["height"][have], columns["weight_kg"][have], columns[girth][have], strict=True
            ):
                base = {"height": Observation(h), "weight_kg": Observation(w)}
                ref = model.predict(base, sex).estimates
                pred.append(ref[girth].value_cm)
                sd.append(ref[girth].stddev_cm)
                if girth == "hip_girth":
                    likely = model.predict({**base, girth: Observation(g)}, sex, names=("hip_width",))
                    width = likely.estimates["hip_width"]
                    limit = MAX_Z * np.hypot(ref["hip_width"].stddev_cm, PHOTO_SD_CM)
                    mu, spread = (
                        width.value_cm - ref["hip_width"].value_cm,
                        np.hypot(width.stddev_cm, PHOTO_SD_CM),
                    )
                    dropped.append(float(norm.sf((limit - mu) / spread) + norm.cdf((-limit - mu) / spread)))
            err = np.array(pred) - columns[girth][have]
            z = -err / np.array(sd)
            n_bmi = bmi(columns)[have]
            for lo, hi in ((0.0, 99.0), *BANDS):
                sel = (n_bmi >= lo) & (n_bmi < hi)
                a_sel = (ansur_bmi >= lo) & (ansur_bmi < hi)
                a_err = held_out[girth][a_sel] - ansur[sex][girth][a_sel]
                a_cell = (
                    f"{np.abs(a_err).mean():.2f} / {a_err.mean():+.2f} ({a_sel.sum()})"
                    if a_sel.sum() >= 5
                    else "–"
                )
                drop = f"{np.mean(np.array(dropped)[sel]):.1%}" if dropped else "–"
                label = "all" if hi == 99.0 and lo == 0.0 else f"{lo:.0f}-{hi:.0f}"
                name = girth if girth == "hip_girth" else "waist_girth (other level)"
                print(
                    f"| {sex} | {name} | {label} | {sel.sum()} | {np.abs(err[sel]).mean():.2f} | "
                    f"{err[sel].mean():+.2f} | {a_cell} | {np.mean(np.abs(z[sel]) > MAX_Z):.1%} | {drop} |"
                )
    print()
    joint_table(ansur, nhanes)
    return 0


def nhanes_rows(columns: dict[str, np.ndarray]) -> np.ndarray:
    """NHANES people as rows of the model's log-space variables: height, weight, hip girth and the
    two height/weight terms known, the rest NaN (NHANES's waist is at another level: left out)."""
    have = np.isfinite(columns["hip_girth"])
    rows = np.full((int(have.sum()), len(VARIABLES)), np.nan)
    lh, lw = np.log(columns["height"][have]), np.log(columns["weight_kg"][have])
    rows[:, INDEX["height"]], rows[:, INDEX["weight_kg"]] = lh, lw
    rows[:, INDEX["hip_girth"]] = np.log(columns["hip_girth"][have])
    rows[:, INDEX["log_weight_sq"]], rows[:, INDEX["log_height_x_log_weight"]] = lw * lw, lh * lw
    return rows


def joint_fit(full: np.ndarray, partial: np.ndarray, iterations: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian over ANSUR's complete rows and NHANES's partial ones (one missing pattern), by
    EM: each partial row's missing variables are replaced by their conditional mean given its known
    ones, and their conditional covariance is added back to the scatter."""
    mean, cov = full.mean(axis=0), np.cov(full, rowvar=False)
    known = ~np.isnan(partial[0])
    missing = ~known
    n = len(full) + len(partial)
    for _ in range(iterations):
        gain = np.linalg.solve(cov[np.ix_(known, known)], cov[np.ix_(known, missing)])
        filled = partial.copy()
        filled[:, missing] = mean[missing] + (partial[:, known] - mean[known]) @ gain
        rest = cov[np.ix_(missing, missing)] - cov[np.ix_(missing, known)] @ gain
        rows = np.vstack([full, filled])
        mean = rows.mean(axis=0)
        scatter = (rows - mean).T @ (rows - mean)
        scatter[np.ix_(missing, missing)] += len(partial) * rest
        cov = scatter / (n - 1)
    return mean, cov


def hip_from_height_weight(mean: np.ndarray, cov: np.ndarray, rows: np.ndarray) -> np.ndarray:
    k = [INDEX[v] for v in KNOWN_A]
    t = INDEX["hip_girth"]
    return np.exp(mean[t] + (rows[:, k] - mean[k]) @ np.linalg.solve(cov[np.ix_(k, k)], cov[k, t]))


def joint_table(ansur: dict[str, dict[str, np.ndarray]], nhanes: dict[str, dict[str, np.ndarray]]) -> None:
    """Hip girth from height and weight, 5-fold held out on both data sets: the model fitted on ANSUR
    II alone (as shipped) against one fitted on ANSUR II and NHANES together (:func:`joint_fit`)."""
    print(
        "| sex | fit | NHANES hip MAE / mean error | "
        + " | ".join(f"NHANES BMI {lo:.0f}-{hi:.0f}" for lo, hi in BANDS)
        + " | ANSUR II hip MAE / mean error |"
    )
    print("|---|---|---|" + "---|" * len(BANDS) + "---|")
    for sex in NHANES_SEX:
        full = design_matrix(ansur[sex])
        partial = nhanes_rows(nhanes[sex])
        rng = np.random.default_rng(0)
        fold_a = rng.permutation(len(full)) % 5
        fold_n = rng.permutation(len(partial)) % 5
        pred = {"ANSUR II only": (np.zeros(len(full)), np.zeros(len(partial)))}
        pred["ANSUR II + NHANES"] = (np.zeros(len(full)), np.zeros(len(partial)))
        for f in range(5):
            train_a, train_n = full[fold_a != f], partial[fold_n != f]
            fits = {
                "ANSUR II only": (train_a.mean(axis=0), np.cov(train_a, rowvar=False)),
                "ANSUR II + NHANES": joint_fit(train_a, train_n),
            }
            for name, (mean, cov) in fits.items():
                pred[name][0][fold_a == f] = hip_from_height_weight(mean, cov, full[fold_a == f])
                pred[name][1][fold_n == f] = hip_from_height_weight(mean, cov, partial[fold_n == f])
        n_bmi = np.exp(partial[:, INDEX["weight_kg"]]) / (np.exp(partial[:, INDEX["height"]]) / 100) ** 2
        for name, (on_ansur, on_nhanes) in pred.items():
            e_n = on_nhanes - np.exp(partial[:, INDEX["hip_girth"]])
            e_a = on_ansur - ansur[sex]["hip_girth"]
            bands = []
            for lo, hi in BANDS:
                sel = (n_bmi >= lo) & (n_bmi < hi)
                bands.append(f"{np.abs(e_n[sel]).mean():.2f} / {e_n[sel].mean():+.2f}")
            print(
                f"| {sex} | {name} | {np.abs(e_n).mean():.2f} / {e_n.mean():+.2f} | "
                + " | ".join(bands)
                + f" | {np.abs(e_a).mean():.2f} / {e_a.mean():+.2f} |"
            )


if __name__ == "__main__":
    sys.exit(main())
