"""`atelier inspect` against a real server: train a profile, inspect a roll, grade it, write the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
from typer.testing import CliRunner

from atelier.cli.main import app
from atelier.inspection.server import build
from atelier.runtime.server import Server
from tests.inspection.test_service import png, weave


def write_frames(folder: Path) -> tuple[list[Path], list[Path]]:
    folder.mkdir()
    goods = []
    for s in range(4):
        goods.append(folder / f"good-{s}.png")
        goods[-1].write_bytes(png(weave(128, 512, s)))
    roll = []
    for i in range(3):
        frame = weave(128, 512, 100 + i)
        if i == 2:
            cv2.circle(frame, (300, 60), 8, 20, -1)  # a dark spot in the third frame
        roll.append(folder / f"roll-{i}.png")
        roll[-1].write_bytes(png(frame))
    return goods, roll


def run_args(article: str, frames: list[Path], output: Path) -> list[str]:
    return [
        "inspect",
        "run",
        "--article",
        article,
        *map(str, frames),
        "--mm-per-px",
        "0.5",
        "-o",
        str(output),
    ]


def test_train_run_and_report(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server("inspection", build)
    address = ["--address", f"127.0.0.1:{server.port}"]
    goods, roll = write_frames(tmp_path / "frames")
    runner = CliRunner()

    trained = runner.invoke(app, ["inspect", "train", "--article", "denim-12", *map(str, goods), *address])
    assert trained.exit_code == 0, trained.output
    assert "denim-12" in trained.output and "version 1" in trained.output and "4 images" in trained.output

    report = tmp_path / "report.json"
    ran = runner.invoke(
        app,
        [*run_args("denim-12", roll, report), "--roll-id", "R-1", *address],
    )
    assert ran.exit_code == 0, ran.output
    assert "3 frames (3 inspected), 1 defective" in " ".join(ran.output.split())
    doc = json.loads(report.read_text())
    assert doc["verdict"] in {"PASS", "FAIL"} and doc["uninspected"] == []
    assert doc["inspected_length_mm"] == doc["roll_length_mm"]
    assert doc["roll_id"] == "R-1" and doc["defects"]
    # The spot lies in the third frame: 2 frames x 128 px x 0.5 mm/px = 128 mm along the roll, or more.
    assert all(128.0 <= d["position_mm"] <= 192.0 for d in doc["defects"])
    assert doc["roll_length_mm"] == 3 * 128 * 0.5 and doc["roll_width_mm"] == 512 * 0.5
    assert doc["total_points"] >= 1

    html = tmp_path / "report.html"
    again = runner.invoke(
        app,
        [*run_args("denim-12", roll, html), *address],
    )
    assert again.exit_code == 0, again.output
    page = html.read_text()
    assert "<svg" in page and "denim-12" in page and ("PASS" in page or "FAIL" in page)
    # Each defect row shows its crop and heat map (PNG data URIs) and its place in metres.
    assert page.count("data:image/png;base64,") >= 2 and "Along roll (m)" in page

    listed = runner.invoke(app, ["inspect", "profiles", *address])
    assert listed.exit_code == 0 and "denim-12" in listed.output


def test_run_survives_a_bad_frame_and_reports_errors(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server("inspection", build)
    address = ["--address", f"127.0.0.1:{server.port}"]
    goods, roll = write_frames(tmp_path / "frames")
    runner = CliRunner()
    assert (
        runner.invoke(app, ["inspect", "train", "--article", "a1", *map(str, goods), *address]).exit_code == 0
    )
    broken = tmp_path / "frames" / "roll-1.png"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated
    report = tmp_path / "r.json"
    ran = runner.invoke(
        app,
        [
            "inspect",
            "run",
            "--article",
            "a1",
            *map(str, roll),
            "--mm-per-px",
            "0.5",
            "-o",
            str(report),
            "--max-points",
            "1000000",  # the points found cannot fail the roll on their own: only the gap decides
            *address,
        ],
    )
    assert ran.exit_code == 1, ran.output
    said = " ".join(ran.output.split())  # rich wraps lines at the terminal's width
    assert "roll-1.png" in said and "INVALID_ARGUMENT" in said
    assert "3 frames (2 inspected), 1 defective" in said and "INCOMPLETE" in said, said
    doc = json.loads(report.read_text())
    # The failed frame is listed with its reason and left out of the inspected length.
    assert doc["verdict"] == "INCOMPLETE" and doc["pass"] is False
    assert [(u["frame_index"], u["name"]) for u in doc["uninspected"]] == [(1, "roll-1.png")]
    assert "INVALID_ARGUMENT" in doc["uninspected"][0]["reason"]
    assert doc["roll_length_mm"] == 3 * 64.0 and doc["inspected_length_mm"] == 2 * 64.0

    few = runner.invoke(app, ["inspect", "train", "--article", "a2", *map(str, goods[:2]), *address])
    assert few.exit_code == 1 and "good_images" in few.output and "at least 4" in few.output
    unknown = runner.invoke(
        app,
        [
            "inspect",
            "run",
            "--article",
            "nope",
            str(roll[0]),
            "--mm-per-px",
            "0.5",
            "-o",
            str(report),
            *address,
        ],
    )
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output
    # Nothing was inspected: the report says so and never PASS (it used to say "0 points ... PASS").
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "INCOMPLETE" and doc["pass"] is False and doc["inspected_length_mm"] == 0
    assert "PASS" not in unknown.output and "INCOMPLETE" in unknown.output
