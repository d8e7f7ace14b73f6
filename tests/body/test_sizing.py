from __future__ import annotations

import csv
import io
import json

from shapely.geometry import Polygon

from atelier.body.sizing import (
    BodyMeasurement,
    Size,
    SizeChart,
    SizeRange,
    chart_problems,
    recommend,
    size_grid,
    skirt_block,
)


def chart() -> SizeChart:
    sizes = []
    for i, label in enumerate(("S", "M", "L", "XL")):
        sizes.append(
            Size(
                label,
                (
                    SizeRange("chest_girth", 88 + 8 * i, 96 + 8 * i),
                    SizeRange("waist_girth", 76 + 8 * i, 84 + 8 * i),
                ),
            )
        )
    return SizeChart("shirts", "EN 13402", sizes)


def test_clear_size_has_good_fit_and_no_second_choice() -> None:
    rec = recommend(
        chart(), [BodyMeasurement("chest_girth", 100, 0.5), BodyMeasurement("waist_girth", 88, 0.5)]
    )
    assert rec.best.size == "M"
    assert {z.fit for z in rec.best.zones} == {"good"}
    assert rec.second is None


def test_between_sizes_gives_second_choice_and_tight_zone() -> None:
    rec = recommend(
        chart(), [BodyMeasurement("chest_girth", 104.5, 1.0), BodyMeasurement("waist_girth", 91, 1.0)]
    )
    assert {rec.best.size, rec.second.size if rec.second else None} == {"M", "L"}
    m = rec.best if rec.best.size == "M" else rec.second
    chest = next(z for z in m.zones if z.measurement == "chest_girth")
    assert chest.fit == "tight" and chest.outside_cm == 0.5


def test_beyond_the_chart_picks_the_closest_size() -> None:
    rec = recommend(chart(), [BodyMeasurement("chest_girth", 140), BodyMeasurement("waist_girth", 130)])
    assert rec.best.size == "XL"
    assert all(z.fit == "tight" for z in rec.best.zones)


def test_chart_problems_name_fields() -> None:
    bad = SizeChart("", "", [Size("S", (SizeRange("chest", 90, 80),)), Size("S", ())])
    fields = {f for f, _ in chart_problems(bad)}
    assert {
        "chart.display_name",
        "chart.sizes[0].ranges[0].measurement",
        "chart.sizes[0].ranges[0]",
        "chart.sizes[1].label",
        "chart.sizes[1].ranges",
    } <= fields


def test_size_grid_json_and_csv_agree() -> None:
    body = [BodyMeasurement("chest_girth", 101.23, 1.7, "photo+model"), BodyMeasurement("inseam", 81.0, 0.0)]
    j, c = size_grid(body)
    doc = json.loads(j)
    rows = list(csv.DictReader(io.StringIO(c.decode())))
    assert doc["units"] == "cm" and [r["measurement"] for r in rows] == ["chest_girth", "inseam"]
    assert float(rows[0]["value_cm"]) == doc["measurements"][0]["value_cm"] == 101.2
    assert doc["measurements"][0]["tolerance_cm"] == 1.0


def test_skirt_block_panels_fit_the_body() -> None:
    pieces = skirt_block(waist_girth_cm=72, hip_girth_cm=98, length_cm=60)
    assert [p.name for p in pieces] == ["skirt_front", "skirt_back"]
    for p in pieces:
        poly = Polygon(p.points_mm)
        assert poly.is_valid
        xs = [x for x, _ in p.points_mm]
        assert max(xs) == (98 + 4) / 4 * 10  # a quarter of hip + ease, in mm
        assert max(y for _, y in p.points_mm) == 600
    # Four quarter panels (two of each cut on the fold) give the hip with 4 cm ease.
    waist = []
    for p in pieces:
        pts = p.points_mm
        dart = pts[3][0] - pts[1][0]
        waist.append(pts[4][0] - dart)
    assert 2 * sum(waist) / 10 == 72 + 1
