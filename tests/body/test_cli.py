"""`atelier body` against a real server: render -> measure (overlay) -> chart -> recommend -> grid."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from atelier.body.server import build
from atelier.cli.body import app


def test_cli_measure_writes_overlay_then_recommend_and_grid(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server("body", build)  # the default pose model, as `make run` serves
    address = f"127.0.0.1:{server.port}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("render", "-o", str(tmp_path), "--height", "172", "--weight", "70")
    front, side, out = tmp_path / "front.png", tmp_path / "side.png", tmp_path / "out"
    said = run(
        "measure",
        str(front),
        str(side),
        "--height",
        "172",
        "--weight",
        "70",
        "-o",
        str(out),
        "--address",
        address,
    )
    assert "measurements (" in said and "waist_girth" in said
    assert "lens: not in the photo's EXIF" in said  # the rendered PNG carries none
    refused = runner.invoke(
        app, ["measure", str(front), "--height", "172", "--focal-35mm", "2", "--address", address]
    )
    assert refused.exit_code != 0 and "focal_length_35mm_equiv_mm" in refused.output, refused.output
    refused = runner.invoke(
        app, ["measure", str(front), "--height", "172", "--phone-pitch", "70", "--address", address]
    )
    assert refused.exit_code != 0 and "phone_pitch_deg" in refused.output, refused.output
    # The overlay is the photo as measured: levelled where the phone was pitched (as wide, taller).
    overlay = cv2.imread(str(out / "overlay.png"))
    photo = cv2.imread(str(front))
    assert overlay.shape[1:] == photo.shape[1:] and photo.shape[0] <= overlay.shape[0] <= 1.2 * photo.shape[0]
    assert (np.all(overlay == (255, 0, 255), axis=2)).sum() > 100  # measurement lines
    assert (np.all(overlay == (0, 200, 255), axis=2)).sum() > 500  # the body outline
    assert (out / "overlay_side.png").exists()
    measured = {m["name"]: m for m in json.loads((out / "measurements.json").read_text())}
    assert measured["inseam"]["method"] in ("photo+model", "model(height,weight,photo)")
    assert 70 < measured["inseam"]["value_cm"] < 90

    chart = {
        "display_name": "tops",
        "system": "EN 13402",
        "sizes": [
            {
                "label": label,
                "ranges": [
                    {"measurement": "chest_girth", "min_cm": 80 + 8 * i, "max_cm": 88 + 8 * i},
                    {"measurement": "waist_girth", "min_cm": 68 + 8 * i, "max_cm": 76 + 8 * i},
                ],
            }
            for i, label in enumerate(("S", "M", "L", "XL", "XXL"))
        ],
    }
    (tmp_path / "chart.json").write_text(json.dumps(chart))
    created = run("chart-create", str(tmp_path / "chart.json"), "--address", address)
    chart_id = created.split()[1]
    assert "best:" in run(
        "recommend",
        "--chart",
        chart_id,
        "--measurements",
        str(out / "measurements.json"),
        "--address",
        address,
    )
    run("grid", str(out / "measurements.json"), "--block", "skirt", "-o", str(out), "--address", address)
    assert (out / "size_grid.csv").read_text().startswith("measurement,") and (out / "block.dxf").exists()

    # A bad photo: the error names the field and the reason, exit code 1.
    cut = tmp_path / "cut.png"
    cv2.imwrite(str(cut), cv2.imread(str(front))[:600])
    failed = runner.invoke(
        app, ["measure", str(cut), "--height", "172", "-o", str(out), "--address", address]
    )
    assert failed.exit_code == 1 and "INVALID_ARGUMENT" in failed.output and "front.data" in failed.output
    failed = runner.invoke(
        app, ["measure", str(front), "--height", "20", "-o", str(out), "--address", address]
    )
    assert failed.exit_code == 1 and "height_cm" in failed.output
