"""The side outline's plausibility check: the three depths tested together, not only one by one."""

from __future__ import annotations

import math

import numpy as np

from atelier.body.photo import (
    JOINT_DEPTH_ALPHA,
    JOINT_DEPTH_MAX,
    LEVELS,
    MAX_Z,
    MIN_RUN_SHARE,
    ViewResult,
    side_outline_problem,
)
from atelier.body.statmodel import BodyModel, Observation


def _side_view() -> ViewResult:
    mask = np.zeros((960, 720), bool)
    mask[60:900, 320:400] = True
    return ViewResult(mask, 60.0, 899.0, 360.0, {}, "test")


def test_chi_square_threshold_is_the_tabled_point() -> None:
    # Tables: chi-square with 3 dof exceeds 12.838 with probability 0.005, 7.815 with 0.05.
    assert JOINT_DEPTH_ALPHA == 0.005
    assert abs(JOINT_DEPTH_MAX - 12.838) < 1e-3


def test_depths_each_plausible_but_unlikely_together_discard_the_side_photo() -> None:
    model = BodyModel.load()
    base = {"height": Observation(178.0), "weight_kg": Observation(80.0)}
    reference = model.predict(base, "male")
    # Front widths as the model expects them for this height and weight.
    widths = {
        f"{level}_width": Observation(reference.estimates[f"{level}_width"].value_cm, 0.6) for level in LEVELS
    }
    given_widths = model.predict({**base, **widths}, "male")

    def depths_at(z: float) -> dict[str, Observation]:
        out = {}
        for level in LEVELS:
            est = given_widths.estimates[f"{level}_depth"]
            sd = 0.8
            out[level] = Observation(est.value_cm + z * math.hypot(est.stddev_cm, sd), sd)
        return out

    # All three depths 2.6 sd too large (a broken outline's pattern: each +3.5..+5 cm): sum of z^2 20.
    broken = depths_at(2.6)
    for level, depth in broken.items():
        est = reference.estimates[f"{level}_depth"]
        assert abs(depth.value - est.value_cm) < MAX_Z * math.hypot(est.stddev_cm, depth.stddev)
    side = _side_view()
    assert side_outline_problem(side, broken, reference) == ""  # the per-depth test alone passes them
    problem = side_outline_problem(side, broken, reference, given_widths)
    assert "unlikely together" in problem
    # Depths 1.5 sd off each (sum of z^2 6.75) stay.
    assert side_outline_problem(side, depths_at(1.5), reference, given_widths) == ""
    # Two depths only: the joint test needs all three.
    assert side_outline_problem(side, {k: broken[k] for k in ("chest", "hip")}, reference, given_widths) == ""


def test_a_level_without_a_run_through_the_body_discards_the_side_photo() -> None:
    """Depths the model finds plausible, but the outline runs through the body's centre on fewer
    than MIN_RUN_SHARE of the rows about the hip level: the outline is broken there (a share just
    at the bound elsewhere is kept)."""
    model = BodyModel.load()
    reference = model.predict({"height": Observation(178.0), "weight_kg": Observation(80.0)}, "male")
    depths = {level: Observation(reference.estimates[f"{level}_depth"].value_cm, 0.8) for level in LEVELS}
    side = _side_view()
    assert side_outline_problem(side, depths, reference, run_shares=dict.fromkeys(LEVELS, 1.0)) == ""
    shares = {"chest": 1.0, "waist": MIN_RUN_SHARE, "hip": MIN_RUN_SHARE - 0.1}
    problem = side_outline_problem(side, depths, reference, run_shares=shares)
    assert problem == "no outline through the body about the hip level"
