"""Size charts, size recommendation, made-to-measure size grids and a straight skirt block.

Pure domain: dataclasses in, dataclasses out; no gRPC, no storage.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

from atelier.body.statmodel import MEASUREMENTS

MAX_SIZES = 40
MAX_RANGES = 30
MAX_LABEL_CHARS = 32
MAX_RANGE_CM = 300.0
# A size whose range is a single value (min == max) covers +-this around it.
POINT_HALF_WIDTH_CM = 1.0
# Below this probability ratio to the best size the runner-up is not "between sizes".
SECOND_CHOICE_RATIO = 0.35
# An estimate with no stated sd is treated as a tape measurement of this sd.
DEFAULT_SD_CM = 0.5


@dataclass(frozen=True)
class SizeRange:
    measurement: str
    min_cm: float
    max_cm: float


@dataclass(frozen=True)
class Size:
    label: str
    ranges: tuple[SizeRange, ...]


@dataclass
class SizeChart:
    display_name: str
    system: str
    sizes: list[Size]
    name: str = ""
    version: int = 0


@dataclass(frozen=True)
class BodyMeasurement:
    name: str
    value_cm: float
    stddev_cm: float = 0.0
    method: str = "given"


@dataclass(frozen=True)
class ZoneFit:
    measurement: str
    fit: str  # "tight" | "good" | "loose"
    difference_cm: float
    outside_cm: float


@dataclass
class SizeChoice:
    size: str
    zones: list[ZoneFit]
    score: float


@dataclass
class Recommendation:
    best: SizeChoice
    second: SizeChoice | None = None
    # Chart zones for which no measurement was given (ignored in the choice).
    ignored_zones: list[str] = field(default_factory=list)


def chart_problems(chart: SizeChart, prefix: str = "chart") -> list[tuple[str, str]]:
    """Every (field path, reason) wrong with a chart; empty when it is valid."""
    problems: list[tuple[str, str]] = []
    if not chart.display_name.strip():
        problems.append((f"{prefix}.display_name", "required"))
    if not 1 <= len(chart.sizes) <= MAX_SIZES:
        problems.append((f"{prefix}.sizes", f"must have 1..{MAX_SIZES} sizes, got {len(chart.sizes)}"))
    seen: set[str] = set()
    for i, size in enumerate(chart.sizes):
        path = f"{prefix}.sizes[{i}]"
        if not size.label.strip() or len(size.label) > MAX_LABEL_CHARS:
            problems.append((f"{path}.label", f"must be 1..{MAX_LABEL_CHARS} characters"))
        elif size.label in seen:
            problems.append((f"{path}.label", f"duplicate size label {size.label!r}"))
        seen.add(size.label)
        if not 1 <= len(size.ranges) <= MAX_RANGES:
            problems.append((f"{path}.ranges", f"must have 1..{MAX_RANGES} ranges"))
        names: set[str] = set()
        for j, r in enumerate(size.ranges):
            rpath = f"{path}.ranges[{j}]"
            if r.measurement not in MEASUREMENTS:
                problems.append((f"{rpath}.measurement", f"unknown measurement {r.measurement!r}"))
            elif r.measurement in names:
                problems.append((f"{rpath}.measurement", f"{r.measurement} appears twice in this size"))
            names.add(r.measurement)
            if not (0 < r.min_cm <= r.max_cm <= MAX_RANGE_CM) or not all(
                map(math.isfinite, (r.min_cm, r.max_cm))
            ):
                problems.append((f"{rpath}", f"need 0 < min_cm <= max_cm <= {MAX_RANGE_CM:.0f}"))
    return problems


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _zone(body: BodyMeasurement, r: SizeRange) -> tuple[ZoneFit, float]:
    lo, hi = r.min_cm, r.max_cm
    if hi - lo < 1e-9:
        lo, hi = lo - POINT_HALF_WIDTH_CM, hi + POINT_HALF_WIDTH_CM
    v = body.value_cm
    outside = v - hi if v > hi else (v - lo if v < lo else 0.0)
    fit = "tight" if outside > 0 else ("loose" if outside < 0 else "good")
    sd = max(body.stddev_cm, DEFAULT_SD_CM)
    # Probability that the true body value lies in the range, given the estimate's uncertainty.
    prob = _normal_cdf((hi - v) / sd) - _normal_cdf((lo - v) / sd)
    return ZoneFit(r.measurement, fit, v - 0.5 * (r.min_cm + r.max_cm), outside), max(prob, 1e-12)


def recommend(chart: SizeChart, body: list[BodyMeasurement]) -> Recommendation:
    """Best size: the highest probability that all zones fall inside the size's ranges.

    Zones of the chart without a body measurement are ignored (listed in ``ignored_zones``);
    raises ValueError when no zone of the chart can be compared at all.
    """
    known = {m.name: m for m in body}
    zones_in_chart = {r.measurement for s in chart.sizes for r in s.ranges}
    usable = zones_in_chart & known.keys()
    if not usable:
        raise ValueError(f"none of the chart's measurements ({', '.join(sorted(zones_in_chart))}) was given")
    choices: list[tuple[float, int, SizeChoice]] = []
    for index, size in enumerate(chart.sizes):
        zones, log_p = [], 0.0
        for r in size.ranges:
            if r.measurement in known:
                zone, prob = _zone(known[r.measurement], r)
                zones.append(zone)
                log_p += math.log(prob)
        choices.append((log_p, index, SizeChoice(size.label, zones, 0.0)))
    # Sizes missing a zone that others have would win unfairly: penalise each missing zone as p=0.5.
    for i, (log_p, index, choice) in enumerate(choices):
        missing = len(usable - {z.measurement for z in choice.zones})
        choices[i] = (log_p + missing * math.log(0.5), index, choice)
    for log_p, _, choice in choices:
        choice.score = math.exp(log_p)
    ranked = sorted(choices, key=lambda c: (-c[0], c[1]))
    if ranked[0][2].score < 1e-9:
        # Far outside every size: the closest one by total distance outside the ranges.
        ranked = sorted(choices, key=lambda c: (sum(abs(z.outside_cm) for z in c[2].zones), c[1]))
    best = ranked[0][2]
    second = None
    if len(ranked) > 1:
        runner = ranked[1][2]
        adjacent = abs(ranked[1][1] - ranked[0][1]) == 1
        if adjacent and (
            runner.score >= SECOND_CHOICE_RATIO * best.score or any(z.fit != "good" for z in best.zones)
        ):
            second = runner
    return Recommendation(best, second, sorted(zones_in_chart - usable))


# --- made-to-measure ---------------------------------------------------------------------


# Manufacturing tolerance per measurement kind (cm), in the spirit of ISO 20685-1 / common
# spec sheets: large girths +-1.0, small girths +-0.5, lengths +-1.0, breadths +-0.5.
def _tolerance_cm(name: str) -> float:
    if name in {"chest_girth", "waist_girth", "hip_girth", "shoulder_girth", "thigh_girth", "crotch_length"}:
        return 1.0
    if name.endswith("_girth"):
        return 0.5
    if name.endswith("_width") or name.endswith("_depth"):
        return 0.5
    return 1.0


def size_grid(body: list[BodyMeasurement]) -> tuple[bytes, bytes]:
    """The measurements as a pattern maker's grid: (JSON bytes, CSV bytes)."""
    rows = [
        {
            "measurement": m.name,
            "description": MEASUREMENTS[m.name][2] if m.name in MEASUREMENTS else "",
            "value_cm": round(m.value_cm, 1),
            "tolerance_cm": _tolerance_cm(m.name),
            "uncertainty_cm": round(m.stddev_cm, 1),
            "method": m.method,
        }
        for m in body
    ]
    doc = {"units": "cm", "tolerance": "manufacturing tolerance, +-", "measurements": rows}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["measurement"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return json.dumps(doc, indent=2).encode(), out.getvalue().encode()


@dataclass(frozen=True)
class BlockPiece:
    name: str
    points_mm: list[tuple[float, float]]


SKIRT_EASE_HIP_CM = 4.0
SKIRT_EASE_WAIST_CM = 1.0
HIP_DEPTH_CM = 20.0


def skirt_block(waist_girth_cm: float, hip_girth_cm: float, length_cm: float = 60.0) -> list[BlockPiece]:
    """A straight skirt block (after Aldrich's close-fitting skirt block): front and back half panels.

    Each panel is a quarter of the body (cut on the fold at centre front/back). x: from the
    centre line to the side seam, y: down from the waist, both in mm. The waist excess over the
    hip is taken up by one dart per panel (front) or a deeper one (back) and the side-seam curve.
    """
    quarter_hip = (hip_girth_cm + SKIRT_EASE_HIP_CM) / 4.0
    quarter_waist = (waist_girth_cm + SKIRT_EASE_WAIST_CM) / 4.0
    excess = max(quarter_hip - quarter_waist, 0.0)
    pieces = []
    for name, dart_share, dart_depth_cm, dart_x_frac in (
        ("skirt_front", 0.35, 9.0, 0.33),
        ("skirt_back", 0.55, 14.0, 0.40),
    ):
        dart = excess * dart_share
        side_in = excess - dart  # taken in at the side seam
        dart_x = quarter_hip * dart_x_frac
        side_rise = 1.25 if excess > 0 else 0.0  # the side waist rises so the seam curve is smooth
        pts_cm = [
            (0.0, 0.0),
            (dart_x - dart / 2, 0.0),
            (dart_x, dart_depth_cm),
            (dart_x + dart / 2, 0.0),
            (quarter_hip - side_in, -side_rise),
        ]
        # Side-seam hip curve: a quarter-sine from the waist point down to the hip line.
        for k in range(1, 6):
            t = k / 6.0
            pts_cm.append(
                (
                    quarter_hip - side_in * (1 - math.sin(t * math.pi / 2)),
                    -side_rise + t * (HIP_DEPTH_CM + side_rise),
                )
            )
        pts_cm += [(quarter_hip, HIP_DEPTH_CM), (quarter_hip, length_cm), (0.0, length_cm)]
        pieces.append(BlockPiece(name, [(round(x * 10, 2), round(y * 10, 2)) for x, y in pts_cm]))
    return pieces
