"""4-point grading arithmetic against hand-computed cases."""

from __future__ import annotations

import base64
import json

import pytest

from atelier.inspection.grading import (
    GradeDefect,
    Uninspected,
    Verdict,
    defect_points,
    grade_roll,
    report_html,
    report_json,
)

IN = 25.4  # mm per inch
YD = 914.4  # mm per yard


@pytest.mark.parametrize(
    ("length_in", "hole", "points"),
    [
        (0.5, False, 1),
        (3.0, False, 1),
        (3.01, False, 2),
        (6.0, False, 2),
        (6.5, False, 3),
        (9.0, False, 3),
        (9.01, False, 4),
        (40.0, False, 4),
        (0.5, True, 2),
        (1.0, True, 2),
        (1.01, True, 4),
        (5.0, True, 4),
    ],
)
def test_points_by_length(length_in: float, hole: bool, points: int) -> None:
    assert defect_points(length_in * IN, hole) == points


def test_roll_rate_hand_computed() -> None:
    # 60 in wide, 100 yd long roll; defects 2 in (1 pt), 5 in (2), 8 in (3), 12 in (4), hole 0.5 in (2)
    # in different yards: 12 points. 12 * 3600 / (60 * 100) = 7.2 points per 100 sq yd.
    defects = [
        GradeDefect(position_mm=0.5 * YD, across_mm=100, length_mm=2 * IN),
        GradeDefect(position_mm=10.2 * YD, across_mm=100, length_mm=5 * IN),
        GradeDefect(position_mm=20.7 * YD, across_mm=100, length_mm=8 * IN),
        GradeDefect(position_mm=30.1 * YD, across_mm=100, length_mm=12 * IN),
        GradeDefect(position_mm=40.0 * YD + 1, across_mm=100, length_mm=0.5 * IN, is_hole=True),
    ]
    grade = grade_roll("R1", 60 * IN, 100 * YD, defects, 40.0)
    assert [g.points for g in grade.defects] == [1, 2, 3, 4, 2]
    assert grade.total_points == 12
    assert grade.points_per_100_sq_yd == pytest.approx(7.2)
    # per 100 m^2: 12 * 100 / (1.524 m * 91.44 m) = 8.6111...
    assert grade.points_per_100_m2 == pytest.approx(12 * 100 / (1.524 * 91.44))
    assert grade.passed


def test_four_points_per_linear_yard_cap() -> None:
    # Three 10 in defects (4 points each) in the same yard count 4, not 12; one more in yard 2 adds 4.
    defects = [GradeDefect(position_mm=p, across_mm=0, length_mm=10 * IN) for p in (100, 400, 900)]
    defects.append(GradeDefect(position_mm=YD + 10, across_mm=0, length_mm=1 * IN))
    grade = grade_roll("R2", 50 * IN, 10 * YD, defects, 40.0)
    assert grade.total_points == 5
    assert grade.capped_yards == [0]
    # 5 * 3600 / (50 * 10) = 36 -> passes 40, fails 30
    assert grade.points_per_100_sq_yd == pytest.approx(36.0)
    assert grade.passed
    assert not grade_roll("R2", 50 * IN, 10 * YD, defects, 30.0).passed


def test_reports_carry_the_numbers() -> None:
    grade = grade_roll("ROLL-7", 1500, 50_000, [GradeDefect(1000, 200, 120, 30, 120, kind="weft_line")], 40)
    doc = json.loads(report_json(grade))
    assert doc["total_points"] == 2 and doc["pass"] is True
    assert doc["defects"][0]["points"] == 2 and doc["defects"][0]["yard"] == 2
    page = report_html(grade).decode()
    assert (
        "ROLL-7" in page and "<svg" in page and "weft_line" in page and "signature" in page and "PASS" in page
    )


def test_uninspected_length_makes_the_roll_incomplete_never_pass() -> None:
    # 60 in x 100 yd roll, one 2 in defect (1 point); 10 yd of it not inspected (a failed frame).
    defects = [GradeDefect(position_mm=0.5 * YD, across_mm=100, length_mm=2 * IN)]
    gap = Uninspected(3, "frame-3.png", 20 * YD, 10 * YD, "NOT_FOUND: no profile")
    grade = grade_roll("R3", 60 * IN, 100 * YD, defects, 40.0, [gap])
    assert grade.verdict is Verdict.INCOMPLETE and not grade.passed
    assert grade.inspected_length_mm == pytest.approx(90 * YD)
    assert grade.uninspected_length_mm == pytest.approx(10 * YD)
    # The rate is over the inspected area only: 1 * 3600 / (60 * 90).
    assert grade.points_per_100_sq_yd == pytest.approx(3600 / (60 * 90))
    doc = json.loads(report_json(grade))
    assert doc["verdict"] == "INCOMPLETE" and doc["pass"] is False
    assert doc["uninspected"][0]["name"] == "frame-3.png" and "NOT_FOUND" in doc["uninspected"][0]["reason"]
    page = report_html(grade).decode()
    assert "INCOMPLETE" in page and "frame-3.png" in page and "NOT_FOUND: no profile" in page
    assert ">PASS<" not in page


def test_nothing_inspected_is_incomplete_and_points_found_can_still_fail() -> None:
    # Every frame failed (even their sizes unknown): no rate, INCOMPLETE.
    nothing = grade_roll("R4", 1500, 0.0, [], 40.0, [Uninspected(0, "a.png", 0, 0, "INVALID_ARGUMENT")])
    assert nothing.verdict is Verdict.INCOMPLETE and nothing.points_per_100_sq_yd == 0
    # 4 points in 1 yd of a 60 in x 2 yd roll, the other yard uninspected: even if that yard were clean,
    # 4 * 3600 / (60 * 2) = 120 > 40, so the roll fails whatever the gap holds.
    big = [GradeDefect(position_mm=100, across_mm=0, length_mm=10 * IN)]
    grade = grade_roll("R5", 60 * IN, 2 * YD, big, 40.0, [Uninspected(1, "b.png", YD, YD, "INTERNAL")])
    assert grade.verdict is Verdict.FAIL
    assert grade_roll("R5", 60 * IN, 2 * YD, big, 200.0, [Uninspected(1, "b.png", YD, YD, "x")]).verdict is (
        Verdict.INCOMPLETE
    )


def test_report_shows_crops_and_metres() -> None:
    crop = b"\x89PNG-crop"
    heat = b"\x89PNG-heat"
    d = GradeDefect(2500, 300, 20, 20, 20, kind="nep", crop_png=crop, heat_png=heat)
    page = report_html(grade_roll("R6", 1500, 10_000, [d], 40)).decode()
    assert base64.b64encode(crop).decode() in page and base64.b64encode(heat).decode() in page
    assert "<td>2.500</td><td>0.300</td>" in page  # along and across the roll, in metres
    doc = json.loads(report_json(grade_roll("R6", 1500, 10_000, [d], 40)))
    assert doc["defects"][0]["position_m"] == 2.5 and "crop_png" not in doc["defects"][0]
