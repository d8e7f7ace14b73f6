"""The people, cameras and scenes of the body benchmarks. bench/body.py draws its people for both
sexes from one generator; with ``--sex`` (one sex a run) they are these: 200 held-out ANSUR II people (seed 7), each with a phone camera and arm
angle from the person's own seed, on the drawn room, the plain wall and the shared background
photos in turn. bench/body_lens.py, body_person_px.py and body_budget.py measure the same people.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from atelier.body.scene import Camera, random_camera
from atelier.body.statmodel import MEASUREMENTS, BodyModel, civilian_model, fit_sex, read_nhanes

PEOPLE_PER_SEX = 200
Scene = Path | str | None


def drawn_people(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Indices of the drawn people in ``columns`` (one sex's ANSUR II table)."""
    return np.random.default_rng(7).choice(len(columns["height"]), PEOPLE_PER_SEX, replace=False)


def scenes(backgrounds: Path) -> list[Scene]:
    """The backgrounds in turn: a drawn room, a plain wall, then each photo in ``backgrounds``."""
    photos = sorted(p for p in backgrounds.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return ["drawn", None, *photos]


def held_out_model(
    columns: Mapping[str, np.ndarray], sex: str, test: np.ndarray, population: str = "soldier"
) -> BodyModel:
    """This sex refitted without the drawn people (they are measured unseen), the other as shipped;
    answering for ``population``: soldiers by default, as the drawn people are ANSUR II's (civilians:
    the civilians' model built on the refitted soldiers', to see what that setting does here)."""
    train = np.setdiff1d(np.arange(len(columns["height"])), test)
    other = "male" if sex == "female" else "female"
    shipped = BodyModel.load()
    soldiers = {
        sex: fit_sex({k: columns[k][train] for k in MEASUREMENTS}),
        other: shipped.soldier_models[other],
    }
    if population == "soldier":
        return BodyModel(soldiers)
    civilians = {
        sex: civilian_model(soldiers[sex], read_nhanes()[sex]),
        other: shipped.civilian_models[other],
    }
    return BodyModel(soldiers, civilian_models=civilians, population=population)


def person(
    columns: Mapping[str, np.ndarray],
    sex: str,
    index: int,
    k: int,
    backgrounds: list[Scene],
    render_px: int = 960,
    lens: float = 1.0,
) -> tuple[dict[str, float], Camera, float, Scene]:
    """The ``k``-th drawn person (ANSUR row ``index``): measurements, camera (photos ``render_px``
    tall, 3/4 as wide; ``lens`` x a phone main camera's focal length), arm angle and scene."""
    body = {m: float(columns[m][index]) for m in MEASUREMENTS}
    rng = np.random.default_rng(int(index) + (0 if sex == "male" else 100_000))
    cam = random_camera(rng, body["height"], width_px=render_px * 3 // 4, height_px=render_px, lens=lens)
    arm = float(rng.uniform(25, 40))
    return body, cam, arm, backgrounds[k % len(backgrounds)]
