"""Roll grading with the 4-point system (ASTM D5430, as used across the trade).

Each defect scores by its length: up to 3 in = 1 point, over 3 up to 6 in = 2, over 6 up to
9 in = 3, over 9 in = 4; holes and openings: 1 in or less = 2, over 1 in = 4. No linear yard
of the roll scores more than 4 points. The roll's rate is points per 100 square yards:
total points x 3600 / (width in inches x length in yards), and the same per 100 m².

Only what was inspected counts: stretches of the roll that were not (a frame that could not be
read or scored) are listed, excluded from the length the rate is computed on, and make the verdict
INCOMPLETE: a roll is never passed on length nobody looked at.
"""

from __future__ import annotations

import base64
import enum
import html
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

MM_PER_INCH = 25.4
MM_PER_YARD = 914.4
MAX_POINTS_PER_LINEAR_YARD = 4


@dataclass(frozen=True)
class GradeDefect:
    position_mm: float  # along the roll, from its start
    across_mm: float  # across the roll, from one edge
    length_mm: float  # longest extent
    width_mm: float = 0.0  # extent along the roll (for the map)
    height_mm: float = 0.0  # extent across the roll (for the map)
    is_hole: bool = False
    kind: str = "other"
    score: float = 0.0
    crop_png: bytes = b""  # the frame around the defect, for the report
    heat_png: bytes = b""  # the anomaly heat map over the same area


@dataclass(frozen=True)
class Uninspected:
    """A stretch of the roll that was not inspected (its frame failed)."""

    frame_index: int
    name: str
    position_mm: float
    length_mm: float  # 0: unknown (the frame could not even be read)
    reason: str


class Verdict(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCOMPLETE = "INCOMPLETE"


@dataclass(frozen=True)
class GradedDefect:
    defect: GradeDefect
    points: int  # the defect's own points, before the per-yard cap
    yard: int  # 0-based linear yard of the roll it lies in


@dataclass
class RollGrade:
    roll_id: str
    roll_width_mm: float
    roll_length_mm: float
    max_points_per_100_sq_yd: float
    defects: list[GradedDefect]
    total_points: int
    points_per_100_sq_yd: float
    points_per_100_m2: float
    passed: bool
    capped_yards: list[int] = field(default_factory=list)
    uninspected: list[Uninspected] = field(default_factory=list)
    inspected_length_mm: float = 0.0
    verdict: Verdict = Verdict.PASS

    @property
    def uninspected_length_mm(self) -> float:
        return self.roll_length_mm - self.inspected_length_mm


def defect_points(length_mm: float, is_hole: bool) -> int:
    inches = length_mm / MM_PER_INCH
    if is_hole:
        return 2 if inches <= 1.0 else 4
    if inches <= 3.0:
        return 1
    if inches <= 6.0:
        return 2
    if inches <= 9.0:
        return 3
    return 4


def grade_roll(
    roll_id: str,
    roll_width_mm: float,
    roll_length_mm: float,
    defects: list[GradeDefect],
    max_points_per_100_sq_yd: float,
    uninspected: list[Uninspected] | None = None,
) -> RollGrade:
    """Grades the inspected part of a roll; `roll_length_mm` is the whole roll, inspected or not."""
    uninspected = list(uninspected or [])
    graded = [
        GradedDefect(d, defect_points(d.length_mm, d.is_hole), int(max(d.position_mm, 0.0) // MM_PER_YARD))
        for d in defects
    ]
    per_yard: dict[int, int] = {}
    for g in graded:
        per_yard[g.yard] = per_yard.get(g.yard, 0) + g.points
    capped = sorted(y for y, p in per_yard.items() if p > MAX_POINTS_PER_LINEAR_YARD)
    total = sum(min(p, MAX_POINTS_PER_LINEAR_YARD) for p in per_yard.values())
    inspected_mm = max(0.0, roll_length_mm - sum(u.length_mm for u in uninspected))
    width_in = roll_width_mm / MM_PER_INCH
    length_yd = inspected_mm / MM_PER_YARD
    per_100_sq_yd = total * 3600.0 / (width_in * length_yd) if inspected_mm > 0 else 0.0
    per_100_m2 = (
        total * 100.0 / ((roll_width_mm / 1000.0) * (inspected_mm / 1000.0)) if inspected_mm > 0 else 0.0
    )
    if uninspected or inspected_mm <= 0:
        # The points found can already fail the roll even if the rest were flawless (the rate over the
        # whole roll's area, a lower bound); they can never pass it.
        whole_yd = roll_length_mm / MM_PER_YARD
        certain_fail = whole_yd > 0 and total * 3600.0 / (width_in * whole_yd) > max_points_per_100_sq_yd
        verdict = Verdict.FAIL if certain_fail else Verdict.INCOMPLETE
    else:
        verdict = Verdict.PASS if per_100_sq_yd <= max_points_per_100_sq_yd else Verdict.FAIL
    return RollGrade(
        roll_id,
        roll_width_mm,
        roll_length_mm,
        max_points_per_100_sq_yd,
        graded,
        total,
        per_100_sq_yd,
        per_100_m2,
        verdict is Verdict.PASS,
        capped,
        uninspected,
        inspected_mm,
        verdict,
    )


def report_json(grade: RollGrade) -> bytes:
    doc = {
        "roll_id": grade.roll_id,
        "standard": "ASTM D5430 4-point system",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "roll_width_mm": grade.roll_width_mm,
        "roll_length_mm": grade.roll_length_mm,
        "inspected_length_mm": grade.inspected_length_mm,
        "uninspected_length_mm": grade.uninspected_length_mm,
        "total_points": grade.total_points,
        "points_per_100_sq_yd": round(grade.points_per_100_sq_yd, 3),
        "points_per_100_m2": round(grade.points_per_100_m2, 3),
        "max_points_per_100_sq_yd": grade.max_points_per_100_sq_yd,
        "pass": grade.passed,
        "verdict": grade.verdict.value,
        "yards_capped_at_4_points": grade.capped_yards,
        "uninspected": [asdict(u) for u in grade.uninspected],
        "defects": [
            {
                **{k: v for k, v in asdict(g.defect).items() if not k.endswith("_png")},
                "position_m": round(g.defect.position_mm / 1000.0, 4),
                "across_m": round(g.defect.across_mm / 1000.0, 4),
                "points": g.points,
                "yard": g.yard + 1,
            }
            for g in grade.defects
        ],
    }
    return json.dumps(doc, indent=2).encode()


def _svg_map(grade: RollGrade, width_px: int = 960) -> str:
    """The roll seen from above, its length left to right; each defect a box coloured by points."""
    length, width = max(grade.roll_length_mm, 1e-6), max(grade.roll_width_mm, 1e-6)
    scale = width_px / length
    height_px = max(60, min(320, int(width * scale)))
    sy = height_px / width
    colours = {1: "#f2c744", 2: "#f08c2e", 3: "#e0482b", 4: "#9b1c1c"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width_px}" height="{height_px + 24}" '
        f'viewBox="0 0 {width_px} {height_px + 24}">',
        f'<rect x="0" y="0" width="{width_px}" height="{height_px}" fill="#eef0f3" stroke="#555"/>',
    ]
    yards = math.ceil(length / MM_PER_YARD)
    step = max(1, yards // 20)
    for y in range(0, yards + 1, step):
        x = y * MM_PER_YARD * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height_px}" stroke="#ccd" stroke-width="1"/>'
        )
        parts.append(f'<text x="{x + 2:.1f}" y="{height_px + 16}" font-size="11" fill="#555">{y} yd</text>')
    for i, g in enumerate(grade.defects, 1):
        d = g.defect
        w = max(d.width_mm * scale, 4.0)
        h = max(d.height_mm * sy, 4.0)
        parts.append(
            f'<rect x="{d.position_mm * scale:.1f}" y="{d.across_mm * sy:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{colours[g.points]}" stroke="#000" stroke-width="0.5"><title>#{i} {html.escape(d.kind)} '
            f"{d.length_mm:.0f} mm, {g.points} pt</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _img(png: bytes, title: str) -> str:
    if not png:
        return "<td></td>"
    data = base64.b64encode(png).decode()
    return f'<td><img src="data:image/png;base64,{data}" alt="{title}" title="{title}" height="96"></td>'


def report_html(grade: RollGrade) -> bytes:
    verdict = grade.verdict.value
    colour = {"PASS": "#1b7f3b", "FAIL": "#b3261e", "INCOMPLETE": "#a15c00"}[verdict]
    rows = "".join(
        f"<tr><td>{i}</td><td>{g.yard + 1}</td><td>{g.defect.position_mm / 1000:.3f}</td>"
        f"<td>{g.defect.across_mm / 1000:.3f}</td>"
        f"<td>{html.escape(g.defect.kind)}</td><td>{g.defect.length_mm:.1f}</td>"
        f"<td>{g.defect.length_mm / MM_PER_INCH:.2f}</td><td>{g.points}</td>"
        f"{_img(g.defect.crop_png, 'defect')}{_img(g.defect.heat_png, 'heat map')}</tr>"
        for i, g in enumerate(grade.defects, 1)
    )
    failed = "".join(
        f"<tr><td>{u.frame_index}</td><td style='text-align:left'>{html.escape(u.name)}</td>"
        f"<td>{u.position_mm / 1000:.3f}</td><td>{(f'{u.length_mm / 1000:.3f}' if u.length_mm else 'unknown')}</td>"
        f"<td style='text-align:left'>{html.escape(u.reason)}</td></tr>"
        for u in grade.uninspected
    )
    not_inspected = (
        f"""<h2>Not inspected ({len(grade.uninspected)} frame(s), {grade.uninspected_length_mm / 1000:.2f} m
known)</h2>
<p>These stretches are excluded from the inspected length; the roll cannot pass until they are inspected.</p>
<table><tr><th>Frame</th><th>Name</th><th>Along roll (m)</th><th>Length (m)</th><th>Reason</th></tr>{failed}</table>"""
        if grade.uninspected
        else ""
    )
    capped = ", ".join(str(y + 1) for y in grade.capped_yards) or "none"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Roll {html.escape(grade.roll_id)}: 4-point inspection</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: 4px 10px; text-align: right; }}
th {{ background: #f0f0f0; }}
.verdict {{ font-size: 1.6em; font-weight: bold; color: {colour}; }}
.sign {{ margin-top: 3em; display: flex; gap: 4em; }}
.sign div {{ border-top: 1px solid #000; width: 16em; padding-top: 4px; }}
@media print {{ body {{ margin: 1cm; }} }}
</style></head><body>
<h1>Fabric inspection report: roll {html.escape(grade.roll_id)}</h1>
<p>Standard: ASTM D5430 four-point system. Generated {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.</p>
<table>
<tr><th>Roll width</th><td>{grade.roll_width_mm:.0f} mm ({grade.roll_width_mm / MM_PER_INCH:.1f} in)</td></tr>
<tr><th>Roll length</th><td>{grade.roll_length_mm / 1000:.2f} m ({grade.roll_length_mm / MM_PER_YARD:.2f} yd)</td></tr>
<tr><th>Inspected length</th><td>{grade.inspected_length_mm / 1000:.2f} m ({grade.inspected_length_mm / MM_PER_YARD:.2f} yd)</td></tr>
<tr><th>Not inspected</th><td>{len(grade.uninspected)} frame(s), {grade.uninspected_length_mm / 1000:.2f} m</td></tr>
<tr><th>Defects</th><td>{len(grade.defects)}</td></tr>
<tr><th>Total points (max 4 per linear yard)</th><td>{grade.total_points}</td></tr>
<tr><th>Points per 100 sq yd (inspected area)</th><td>{grade.points_per_100_sq_yd:.2f}</td></tr>
<tr><th>Points per 100 m²</th><td>{grade.points_per_100_m2:.2f}</td></tr>
<tr><th>Acceptance limit</th><td>{grade.max_points_per_100_sq_yd:g} points per 100 sq yd</td></tr>
<tr><th>Yards capped at 4 points</th><td>{capped}</td></tr>
</table>
<p class="verdict">{verdict}</p>
{not_inspected}
<h2>Defect map</h2>
{_svg_map(grade)}
<p>Length runs left to right; colour by points: 1 yellow, 2 orange, 3 red, 4 dark red.</p>
<h2>Defects</h2>
<table><tr><th>#</th><th>Yard</th><th>Along roll (m)</th><th>Across (m)</th><th>Type</th><th>Length (mm)</th>
<th>Length (in)</th><th>Points</th><th>Crop</th><th>Heat map</th></tr>{rows}</table>
<div class="sign"><div>Quality manager (name, signature)</div><div>Date</div></div>
</body></html>
"""
    return page.encode()
