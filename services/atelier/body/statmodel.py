"""Statistical body model: a Gaussian over log-measurements per sex, fitted on ANSUR II.

Why a Gaussian: conditioning on whatever is known (height and weight only, or plus photo
widths/depths, or plus a few tape measurements) is one closed-form step, and every answer comes
with its uncertainty. Why logs: body dimensions scale multiplicatively (girth ~ weight / height),
so a Gaussian in log space fits better than in millimetres and never predicts a negative girth.
Two derived variables, (log weight)^2 and log height * log weight, make height+weight answers a
quadratic rather than a plane; the log Ramanujan ellipse perimeter of each width/depth pair is
the "fitted ellipse correction" of the photo path (the model learns how far the ellipse
underestimates each girth, for each body).

Two populations. ANSUR II measured US Army soldiers, few of them heavy (BMI 40 or more: 0.4% of
the men, 0.1% of the women); a retailer's customers are civilians (US adults in NHANES 2017-2020:
6% of the men and 12% of the women at BMI 40 or more), and from height and weight the soldiers'
model under-predicts a heavy civilian's hip girth by about 6 cm (bench/body_civilians.py). NHANES
measured height, weight and the hip girth where ANSUR measures its buttock circumference, nothing
else of ANSUR's. So each sex has two Gaussians: the soldiers' (ANSUR II alone), and the civilians'
(:func:`civilian_model`), whose height, weight and hip girth are NHANES's and whose every other
variable follows them as in ANSUR II (statistical matching: the rest given those three is taken to
be the same in both populations). Which one the service answers for is its POPULATION setting
(soldiers unless set, as before the civilians were added; :attr:`BodyModel.population`).

This module imports no gRPC and no pandas (pandas only in :func:`read_ansur` and :func:`read_nhanes`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARAMS_PATH = Path(__file__).with_name("model_params.json")
SEXES = ("female", "male")

# Public measurement name -> (ANSUR II column, divisor to cm or kg, description).
MEASUREMENTS: dict[str, tuple[str, float, str]] = {
    "height": ("stature", 10.0, "standing height"),
    "weight_kg": ("weightkg", 10.0, "body mass in kg"),
    "chest_girth": ("chestcircumference", 10.0, "chest/bust girth at nipple level"),
    "waist_girth": ("waistcircumference", 10.0, "waist girth at the navel"),
    "hip_girth": ("buttockcircumference", 10.0, "hip/seat girth at maximum buttock protrusion"),
    "inseam": ("crotchheight", 10.0, "crotch height (inseam)"),
    "sleeve_length": ("sleeveoutseam", 10.0, "shoulder (acromion) to wrist, sleeve outseam"),
    "sleeve_length_spine": ("sleevelengthspinewrist", 10.0, "spine to wrist over the shoulder"),
    "neck_girth": ("neckcircumference", 10.0, "neck girth"),
    "neck_base_girth": ("neckcircumferencebase", 10.0, "neck base girth (collar)"),
    "shoulder_width": ("biacromialbreadth", 10.0, "shoulder breadth between acromions"),
    "shoulder_girth": ("shouldercircumference", 10.0, "girth over the deltoids"),
    "thigh_girth": ("thighcircumference", 10.0, "upper thigh girth"),
    "calf_girth": ("calfcircumference", 10.0, "calf girth"),
    "wrist_girth": ("wristcircumference", 10.0, "wrist girth"),
    "bicep_girth": ("bicepscircumferenceflexed", 10.0, "upper arm girth (flexed)"),
    "back_length": ("waistbacklength", 10.0, "nape (cervicale) to waist along the back"),
    "crotch_length": ("crotchlengthomphalion", 10.0, "front waist through the crotch to back waist"),
    "chest_height": ("chestheight", 10.0, "height of the chest level"),
    "waist_height": ("waistheightomphalion", 10.0, "height of the navel"),
    "hip_height": ("buttockheight", 10.0, "height of the buttock level"),
    "shoulder_height": ("acromialheight", 10.0, "height of the acromion"),
    "trochanter_height": ("trochanterionheight", 10.0, "height of the greater trochanter"),
    "knee_height": ("kneeheightmidpatella", 10.0, "height of mid-patella"),
    "chest_width": ("chestbreadth", 10.0, "chest breadth, front view"),
    "chest_depth": ("chestdepth", 10.0, "chest depth, side view"),
    "waist_width": ("waistbreadth", 10.0, "waist breadth, front view"),
    "waist_depth": ("waistdepth", 10.0, "waist depth, side view"),
    "hip_width": ("hipbreadth", 10.0, "hip breadth, front view"),
    "hip_depth": ("buttockdepth", 10.0, "buttock depth, side view"),
    "deltoid_width": ("bideltoidbreadth", 10.0, "breadth across the deltoids (arms hanging)"),
}

# Width/depth pairs whose ellipse perimeter is a derived variable: girth name -> (width, depth).
ELLIPSES: dict[str, tuple[str, str]] = {
    "chest_girth": ("chest_width", "chest_depth"),
    "waist_girth": ("waist_width", "waist_depth"),
    "hip_girth": ("hip_width", "hip_depth"),
}
DERIVED = ("log_weight_sq", "log_height_x_log_weight", *(f"ellipse_{g}" for g in ELLIPSES))
VARIABLES: tuple[str, ...] = (*MEASUREMENTS, *DERIVED)
POPULATIONS = ("civilian", "soldier")
# What NHANES measured of the model's variables (the two height/weight terms follow from the first two).
NHANES_KNOWN = ("height", "weight_kg", "log_weight_sq", "log_height_x_log_weight", "hip_girth")
NHANES_PATH = Path(__file__).with_name("nhanes_adults.csv")
# NHANES column -> measurement, and its sex codes.
NHANES_COLUMNS = {"BMXHT": "height", "BMXWT": "weight_kg", "BMXHIP": "hip_girth"}
NHANES_SEX = {"male": 1, "female": 2}
# What a customer and a pattern maker want back (the rest are helpers for the photo path).
GARMENT_MEASUREMENTS = (
    "chest_girth",
    "waist_girth",
    "hip_girth",
    "shoulder_width",
    "sleeve_length",
    "inseam",
    "neck_girth",
    "thigh_girth",
    "back_length",
    "neck_base_girth",
    "shoulder_girth",
    "sleeve_length_spine",
    "bicep_girth",
    "wrist_girth",
    "calf_girth",
    "crotch_length",
)
# Plausible ranges of the inputs (cm / kg), wider than ANSUR's, used to validate requests.
HEIGHT_RANGE_CM = (100.0, 230.0)
WEIGHT_RANGE_KG = (25.0, 250.0)


def ellipse_perimeter_cm(width_cm: float | np.ndarray, depth_cm: float | np.ndarray) -> np.ndarray:
    """Ramanujan's second approximation for an ellipse with these full axes."""
    a, b = np.asarray(width_cm, float) / 2.0, np.asarray(depth_cm, float) / 2.0
    h = ((a - b) / (a + b)) ** 2
    return np.asarray(math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + np.sqrt(4.0 - 3.0 * h))))


@dataclass(frozen=True)
class Observation:
    """A known value (cm, or kg for weight) and its measurement noise as one sd in cm (kg)."""

    value: float
    stddev: float = 0.0


@dataclass(frozen=True)
class Estimate:
    name: str
    value_cm: float
    stddev_cm: float


def log_observations(
    values: Mapping[str, Observation],
) -> tuple[dict[str, tuple[float, float]], dict[tuple[str, str], float]]:
    """Known values -> log-space (value, noise variance), with the derived variables added; and the
    noise covariances between variables derived from the same measured values."""
    out: dict[str, tuple[float, float]] = {}
    cov: dict[tuple[str, str], float] = {}
    for name, obs in values.items():
        out[name] = (math.log(obs.value), (obs.stddev / obs.value) ** 2)
    if "height" in out and "weight_kg" in out:
        lh, vh = out["height"]
        lw, vw = out["weight_kg"]
        out["log_weight_sq"] = (lw * lw, 4 * lw * lw * vw)
        out["log_height_x_log_weight"] = (lh * lw, lw * lw * vh + lh * lh * vw)
    for girth, (w, d) in ELLIPSES.items():
        if w in values and d in values:
            width, depth = values[w].value, values[d].value
            perimeter = float(ellipse_perimeter_cm(width, depth))
            # The log perimeter moves with the log width by a_w and the log depth by a_d = 1 - a_w
            # (the perimeter is homogeneous of degree 1): its noise is theirs, not a third one.
            a_w = (
                math.log(float(ellipse_perimeter_cm(width * 1.001, depth))) - math.log(perimeter)
            ) / math.log(1.001)
            a_d = 1.0 - a_w
            name = f"ellipse_{girth}"
            out[name] = (math.log(perimeter), a_w * a_w * out[w][1] + a_d * a_d * out[d][1])
            cov[(name, w)] = a_w * out[w][1]
            cov[(name, d)] = a_d * out[d][1]
    return out, cov


@dataclass
class SexModel:
    mean: np.ndarray  # log space, len(VARIABLES)
    cov: np.ndarray
    count: int

    def condition(
        self,
        known: Mapping[str, tuple[float, float]],
        noise_covariances: Mapping[tuple[str, str], float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Posterior mean, covariance (log space) and log-likelihood of the known values (log value,
        noise variance), with ``noise_covariances`` between pairs of them (a pair listed both ways
        counts twice)."""
        index = {v: i for i, v in enumerate(VARIABLES)}
        names = list(known)
        k = [index[n] for n in names]
        if not k:
            return self.mean.copy(), self.cov.copy(), 0.0
        z = np.array([known[n][0] for n in names])
        noise = np.diag([known[n][1] for n in names])
        position = {n: i for i, n in enumerate(names)}
        for (a, b), c in (noise_covariances or {}).items():  # each pair once; contributions add up
            noise[position[a], position[b]] += c
            noise[position[b], position[a]] += c
        s_kk = self.cov[np.ix_(k, k)] + noise + 1e-10 * np.eye(len(k))
        s_ak = self.cov[:, k]
        resid = z - self.mean[k]
        chol = np.linalg.cholesky(s_kk)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, resid))
        gain = np.linalg.solve(chol.T, np.linalg.solve(chol, s_ak.T)).T
        mean = self.mean + s_ak @ alpha
        cov = self.cov - gain @ s_ak.T
        loglik = (
            -0.5 * float(resid @ alpha)
            - float(np.log(np.diag(chol)).sum())
            - 0.5 * len(k) * math.log(2 * math.pi)
        )
        return mean, cov, loglik


@dataclass
class Prediction:
    estimates: dict[str, Estimate]
    # Probability of each sex given the known values (1.0 for the stated one).
    sex_probability: dict[str, float]


class BodyModel:
    """Per-sex Gaussians over log-measurements; :meth:`predict` conditions on what is known.

    ``models``: the soldiers' (ANSUR II) per sex; ``civilian_models``: the civilians' per sex, where
    fitted (:func:`civilian_model`). ``population``: whom :meth:`predict` answers for, soldiers by
    default (the service's POPULATION setting chooses).
    """

    def __init__(
        self,
        models: dict[str, SexModel],
        source: str = "",
        civilian_models: dict[str, SexModel] | None = None,
        population: str | None = None,
    ) -> None:
        self.soldier_models = models
        self.civilian_models = civilian_models or {}
        self.source = source
        population = population or "soldier"
        if population not in POPULATIONS:
            raise ValueError(f"population must be one of {', '.join(POPULATIONS)}, not {population!r}")
        if population == "civilian" and not self.civilian_models:
            raise ValueError("this model was fitted without civilians (NHANES): only population='soldier'")
        self.population = population

    @property
    def models(self) -> dict[str, SexModel]:
        """The per-sex Gaussians of :attr:`population`."""
        return self.civilian_models if self.population == "civilian" else self.soldier_models

    def for_population(self, population: str) -> BodyModel:
        """The same fit answering for another population."""
        return BodyModel(self.soldier_models, self.source, self.civilian_models, population)

    def predict(
        self,
        known: Mapping[str, Observation],
        sex: str | None = None,
        names: tuple[str, ...] | None = None,
        scale_groups: Sequence[tuple[Collection[str], float]] = (),
    ) -> Prediction:
        """Every measurement (cm) with one sd, given ``known`` (see MEASUREMENTS for names).

        With no sex the two sexes are mixed by how well each explains the known values.
        The value is the conditional median (exp of the log mean): it minimises absolute error.

        ``scale_groups``: (names, relative sd) for known values that share one scale error, such as
        every length read off one photo with one pixels-per-cm: their noises are correlated by it
        (in log space a common term; the ellipse perimeters of those widths and depths share it too).
        """
        unknown_names = [n for n in known if n not in MEASUREMENTS]
        if unknown_names:
            raise KeyError(f"unknown measurement(s): {', '.join(unknown_names)}")
        logs, noise_cov = log_observations(known)
        for group, rel_sd in scale_groups:
            members = [n for n in group if n in logs]
            members += [f"ellipse_{g}" for g, (w, d) in ELLIPSES.items() if w in members and d in members]
            var = math.log1p(rel_sd) ** 2
            for i, a in enumerate(members):
                logs[a] = (logs[a][0], logs[a][1] + var)
                for b in members[i + 1 :]:
                    noise_cov[(a, b)] = noise_cov.get((a, b), 0.0) + var
        sexes = (sex,) if sex else SEXES
        results = {s: self.models[s].condition(logs, noise_cov) for s in sexes}
        top = max(r[2] for r in results.values())
        weights = {s: math.exp(results[s][2] - top) for s in sexes}
        total = sum(weights.values())
        prob = {s: w / total for s, w in weights.items()}
        wanted = names or tuple(MEASUREMENTS)
        index = {v: i for i, v in enumerate(VARIABLES)}
        estimates = {}
        for name in wanted:
            i = index[name]
            mu = sum(prob[s] * results[s][0][i] for s in sexes)
            var = sum(prob[s] * (results[s][1][i, i] + (results[s][0][i] - mu) ** 2) for s in sexes)
            value = math.exp(mu)
            estimates[name] = Estimate(name, value, value * math.sqrt(max(var, 0.0)))
        return Prediction(estimates, prob)

    # --- persistence -------------------------------------------------------------------------
    def to_json(self) -> str:
        def sexes(models: dict[str, SexModel]) -> dict:
            return {
                s: {
                    "count": m.count,
                    "mean": [round(float(x), 7) for x in m.mean],
                    "cov": [[round(float(x), 9) for x in row] for row in m.cov],
                }
                for s, m in models.items()
            }

        doc = {"variables": list(VARIABLES), "source": self.source, "sexes": sexes(self.soldier_models)}
        if self.civilian_models:
            doc["civilian_sexes"] = sexes(self.civilian_models)
        return json.dumps(doc, indent=None, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str, population: str | None = None) -> BodyModel:
        doc = json.loads(text)
        if tuple(doc["variables"]) != VARIABLES:
            raise ValueError(
                "model_params.json was fitted for other variables: regenerate it (python -m atelier.body.fit)"
            )

        def sexes(part: dict) -> dict[str, SexModel]:
            return {
                s: SexModel(np.array(d["mean"]), np.array(d["cov"]), int(d["count"])) for s, d in part.items()
            }

        return cls(
            sexes(doc["sexes"]), doc.get("source", ""), sexes(doc.get("civilian_sexes", {})), population
        )

    @classmethod
    def load(cls, path: Path = PARAMS_PATH, population: str | None = None) -> BodyModel:
        return cls.from_json(path.read_text(), population)


def design_matrix(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows of log-space variables (len(VARIABLES) columns) from ANSUR columns in cm / kg."""
    lm = {name: np.log(np.asarray(columns[name], float)) for name in MEASUREMENTS}
    derived = {
        "log_weight_sq": lm["weight_kg"] ** 2,
        "log_height_x_log_weight": lm["height"] * lm["weight_kg"],
    }
    for girth, (w, d) in ELLIPSES.items():
        derived[f"ellipse_{girth}"] = np.log(ellipse_perimeter_cm(columns[w], columns[d]))
    return np.column_stack([lm[n] for n in MEASUREMENTS] + [derived[n] for n in DERIVED])


def fit_sex(columns: Mapping[str, np.ndarray]) -> SexModel:
    x = design_matrix(columns)
    return SexModel(x.mean(axis=0), np.cov(x, rowvar=False), len(x))


def civilian_model(soldiers: SexModel, civilians: Mapping[str, np.ndarray]) -> SexModel:
    """The civilians' Gaussian: height, weight and hip girth (with the height/weight terms) as NHANES
    measured them (``civilians``, :func:`read_nhanes`: their mean and covariance in log space), every
    other variable given those as in ``soldiers`` (the same regression on them and the same residual
    covariance). With K those five, R the rest, B the soldiers' regression of R on K and E its
    residual covariance: mean_R = mean_R(soldiers) + B (mean_K - mean_K(soldiers)), cov_RK =
    B cov_KK, cov_RR = E + B cov_KK B'.
    """
    index = {v: i for i, v in enumerate(VARIABLES)}
    k = [index[v] for v in NHANES_KNOWN]
    r = [i for i in range(len(VARIABLES)) if i not in k]
    lh, lw = np.log(civilians["height"]), np.log(civilians["weight_kg"])
    known = np.column_stack([lh, lw, lw * lw, lh * lw, np.log(civilians["hip_girth"])])
    mean_k, cov_kk = known.mean(axis=0), np.cov(known, rowvar=False)
    s = soldiers.cov
    slope = np.linalg.solve(s[np.ix_(k, k)], s[np.ix_(k, r)]).T
    residual = s[np.ix_(r, r)] - slope @ s[np.ix_(k, r)]
    mean = np.empty(len(VARIABLES))
    cov = np.empty((len(VARIABLES), len(VARIABLES)))
    mean[k] = mean_k
    mean[r] = soldiers.mean[r] + slope @ (mean_k - soldiers.mean[k])
    cov[np.ix_(k, k)] = cov_kk
    cov[np.ix_(r, k)] = slope @ cov_kk
    cov[np.ix_(k, r)] = cov[np.ix_(r, k)].T
    cov[np.ix_(r, r)] = residual + slope @ cov_kk @ slope.T
    return SexModel(mean, cov, len(known))


def read_ansur(path: Path) -> dict[str, np.ndarray]:
    """One ANSUR II CSV -> {measurement name: values in cm (kg for weight)}."""
    import pandas as pd  # only needed for fitting

    frame = pd.read_csv(path, encoding="latin-1")
    return {name: frame[col].to_numpy(float) / div for name, (col, div, _) in MEASUREMENTS.items()}


ANSUR_FILES = {"male": "ANSUR II MALE Public.csv", "female": "ANSUR II FEMALE Public.csv"}


def read_nhanes(
    path: Path = NHANES_PATH, ages: tuple[float, float] = (0.0, math.inf), waist: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """The NHANES adults with height, weight and hip girth measured, by sex: {measurement: values};
    only those aged within ``ages``; with ``waist`` their iliac-crest waist too (``waist_girth``,
    NaN where not taken; not ANSUR's navel waist, so never fitted)."""
    import pandas as pd  # only needed for fitting

    frame = pd.read_csv(path, comment="#").dropna(subset=list(NHANES_COLUMNS))
    frame = frame[frame["RIDAGEYR"].between(*ages)]
    columns = {**NHANES_COLUMNS, **({"BMXWAIST": "waist_girth"} if waist else {})}
    return {
        sex: {name: part[col].to_numpy(float) for col, name in columns.items()}
        for sex, code in NHANES_SEX.items()
        for part in [frame[frame["RIAGENDR"].eq(code)]]
    }


def fit_from_csv(folder: Path, nhanes: Path | None = NHANES_PATH) -> BodyModel:
    """The shipped model: ANSUR II's CSVs in ``folder``; with ``nhanes`` the civilians' too."""
    models = {sex: fit_sex(read_ansur(folder / name)) for sex, name in ANSUR_FILES.items()}
    source = "ANSUR II public release (US Army, 2012), male + female CSVs"
    if nhanes is None:
        return BodyModel(models, source=source)
    civilians = read_nhanes(nhanes)
    return BodyModel(
        models,
        source=source + "; civilians: NHANES 2017-March 2020 adults' height, weight and hip girth (CDC)",
        civilian_models={sex: civilian_model(models[sex], civilians[sex]) for sex in models},
    )
