"""`atelier nest` against a running service: DXF in, SVG/DXF/JSON out, with the progress bar."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import ezdxf
import pytest
from shapely.geometry import Polygon
from typer.testing import CliRunner

from atelier.cli.main import app
from atelier.nesting.server import build
from atelier.runtime.server import Server
from tests.nesting.aama_files import r12_graded_inches, sample_only_with_rules
from tests.nesting.garment import shirt_dxf


def test_nest_command_makes_marker_files(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("nesting", build)
    pieces = tmp_path / "shirt.dxf"
    pieces.write_bytes(shirt_dxf({"S": 0.9, "M": 1.0, "L": 1.1}))
    svg, dxf, js = tmp_path / "marker.svg", tmp_path / "marker.dxf", tmp_path / "marker.json"
    result = CliRunner().invoke(
        app,
        [
            "nest",
            str(pieces),
            "--width",
            "700",
            "--time",
            "1",
            "--ratio",
            "S=1,M=2,L=1",
            "--spacing",
            "3",
            "--margin",
            "5",
            "-o",
            str(svg),
            "-o",
            str(dxf),
            "-o",
            str(js),
            "--address",
            f"127.0.0.1:{server.port}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "efficiency" in result.output
    data = json.loads(js.read_text())
    assert len(data["placements"]) == 7 * 4  # 7 placed pieces per garment, 4 garments
    assert data["width_mm"] == 700.0 and data["spacing_mm"] == 3.0
    assert f"efficiency {data['efficiency'] * 100:.2f}%" in svg.read_text()
    doc = ezdxf.readfile(dxf)
    # The AAMA marker DXF: one block per placed piece, its cut line on layer 1.
    assert sum(1 for e in doc.modelspace() if e.dxftype() == "INSERT") == 28


def test_nest_command_reports_bad_input(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("nesting", build)
    pieces = tmp_path / "shirt.dxf"
    pieces.write_bytes(shirt_dxf({"M": 1.0}))
    result = CliRunner().invoke(
        app,
        [
            "nest",
            str(pieces),
            "--width",
            "100",
            "--time",
            "1",
            "-o",
            str(tmp_path / "m.svg"),
            "--address",
            f"127.0.0.1:{server.port}",
        ],
    )
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "pieces[0].outline" in result.output


def test_nest_command_shows_the_import_warnings_and_writes_cutting_room_files(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("nesting", build)
    pieces = tmp_path / "panels.dxf"
    pieces.write_bytes(r12_graded_inches())
    nc, html = tmp_path / "marker.nc", tmp_path / "marker.html"
    result = CliRunner().invoke(
        app,
        [
            "nest",
            str(pieces),
            "--width",
            "700",
            "--time",
            "1",
            "--ratio",
            "M=1",
            "--save-pattern",
            "-o",
            str(nc),
            "-o",
            str(html),
            "--address",
            f"127.0.0.1:{server.port}",
        ],
        terminal_width=400,
    )
    assert result.exit_code == 0, result.output
    # The inch units came from the 'Units: ENGLISH' text: the user is told, as every assumption.
    assert "warning" in result.output and "Units: ENGLISH" in result.output
    assert "2 pieces x 3 sizes (S, M, L), units ENGLISH" in result.output
    assert "stored as pattern" in result.output
    assert nc.read_text().startswith("%") and "G21" in nc.read_text()
    assert "Marker report" in html.read_text()


def test_nest_command_grades_with_the_rul_file_beside_the_dxf(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("nesting", build)
    dxf, rul = sample_only_with_rules()
    (tmp_path / "RULED.DXF").write_bytes(dxf)
    (tmp_path / "RULED.RUL").write_bytes(rul)
    out = tmp_path / "m.json"
    result = CliRunner().invoke(
        app,
        [
            *("nest", str(tmp_path / "RULED.DXF"), "--width", "300", "--time", "1", "--ratio", "XL=2"),
            *("--pieces", "PANEL", "-o", str(out), "--address", f"127.0.0.1:{server.port}"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "grade rules from RULED.RUL" in result.output and "1 pieces x 4 sizes" in result.output
    placements = json.loads(out.read_text())["placements"]
    # Two XL panels, 120 x 60 mm each (the sample M is 100 x 50, two DELTA steps up).
    assert [p["size"] for p in placements] == ["XL", "XL"]
    assert all(Polygon(p["outline_mm"]).area == pytest.approx(120.0 * 60.0) for p in placements)
    args = ["nest", str(tmp_path / "RULED.DXF"), "--width", "300", "--pieces", "SLEEVE"]
    wrong = CliRunner().invoke(app, [*args, "--address", f"127.0.0.1:{server.port}"])
    assert wrong.exit_code != 0 and "SLEEVE" in wrong.output


def test_nest_command_cuts_a_made_to_measure_garment(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("nesting", build)
    pieces = tmp_path / "panels.dxf"
    pieces.write_bytes(r12_graded_inches())
    out = tmp_path / "marker.json"
    args = ["nest", str(pieces), "--width", "700", "--time", "1", "-o", str(out)]
    address = ["--address", f"127.0.0.1:{server.port}"]
    result = CliRunner().invoke(app, [*args, "--made-to-measure", "M>L@0.5", *address])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert "stored as pattern" in text
    assert "note: made to measure: 2 of 2 pieces interpolated 0.50 of the way from size M to size L" in text
    wrong = CliRunner().invoke(app, [*args, "--made-to-measure", "M>", *address])
    assert wrong.exit_code != 0 and "SIZE>OTHER@FRACTION" in wrong.output
