"""`atelier gen` against a live generation service on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from atelier.cli.main import app
from tests.generation.conftest import photo, png_bytes

runner = CliRunner()


def test_img2img_two_rounds_writes_files_and_keeps_the_session(gen_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = gen_server()
    source = tmp_path / "photo.png"
    source.write_bytes(png_bytes(photo(64, 64)))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "gen",
            "img2img",
            str(source),
            "--model",
            "tiny",
            "--prompt",
            "a linen shirt, studio light",
            "--negative",
            "blurry",
            "--strength",
            "0.75",
            "--guidance",
            "7.5",
            "--rounds",
            "2",
            "--steps",
            "4",
            "--seed",
            "11",
            "-o",
            str(out),
            "--address",
            server.address,
        ],
    )
    assert result.exit_code == 0, result.output
    round1 = sorted(out.glob("round1-*.png"))
    round2 = sorted(out.glob("round2-*.png"))
    assert len(round1) == 1 and len(round2) == 1 and "seed11" in round2[0].name
    text = Image.open(round2[0]).text
    assert json.loads(text["atelier"])["settings"]["negative_prompt"] == "blurry"
    session = json.loads((out / "session.json").read_text())
    assert session["rounds"] == 2
    assert "round 2/2" in result.output  # the progress bar's label

    # Round 2 refined round 1's output: it is img2img on the round-1 file with the same settings.
    direct = tmp_path / "direct"
    again = runner.invoke(
        app,
        [
            "gen",
            "img2img",
            str(round1[0]),
            "--model",
            "tiny",
            "--prompt",
            "a linen shirt, studio light",
            "--negative",
            "blurry",
            "--strength",
            "0.75",
            "--guidance",
            "7.5",
            "--steps",
            "4",
            "--seed",
            "11",
            "-o",
            str(direct),
            "--address",
            server.address,
        ],
    )
    assert again.exit_code == 0, again.output
    refined = np.asarray(Image.open(round2[0]))
    assert np.array_equal(np.asarray(Image.open(next(direct.glob("round1-*.png")))), refined)
    assert not np.array_equal(np.asarray(Image.open(round1[0])), refined)

    shown = runner.invoke(
        app, ["gen", "session", session["session_id"], "-o", str(tmp_path / "s"), "--address", server.address]
    )
    assert shown.exit_code == 0 and "2 rounds" in shown.output
    saved = next((tmp_path / "s").glob("*.png")).read_bytes()
    assert saved == round2[0].read_bytes()


def test_tile_command_writes_a_seamless_tile_and_a_preview(gen_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = gen_server()
    texture = tmp_path / "texture.png"
    texture.write_bytes(png_bytes(photo(96, 80)))
    out = tmp_path / "tile.png"
    result = runner.invoke(app, ["gen", "tile", str(texture), "-o", str(out), "--address", server.address])
    assert result.exit_code == 0, result.output
    tile = np.asarray(Image.open(out))
    assert tile.shape == (80, 96, 3)

    def seam_ratio(pixels: np.ndarray) -> float:
        """Wrap-around edge difference over the mean neighbour difference inside (about 1 when seamless)."""
        img = pixels.astype(np.float64)
        seam = (np.abs(img[:, -1] - img[:, 0]).mean() + np.abs(img[-1] - img[0]).mean()) / 2
        inside = (np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean()) / 2
        return float(seam / inside)

    assert seam_ratio(tile) < 1.5 < seam_ratio(photo(96, 80))
    assert np.asarray(Image.open(tmp_path / "tile-2x2.png")).shape == (160, 192, 3)
    assert "seam error" in result.output


def test_bad_input_prints_the_field(gen_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = gen_server()
    result = runner.invoke(
        app,
        [
            "gen",
            "txt2img",
            "--model",
            "tiny",
            "--prompt",
            "x",
            "--width",
            "65",
            "--height",
            "64",
            "-o",
            str(tmp_path),
            "--address",
            server.address,
        ],
    )
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "settings.width_px" in result.output
    models = runner.invoke(app, ["gen", "models", "--address", server.address])
    assert models.exit_code == 0 and "tiny-single" in models.output


def test_models_and_config_show_the_models_directory(gen_server, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    server = gen_server()  # sets ATELIER_GENERATION_MODELS_DIR to the test's models directory
    listed = runner.invoke(app, ["gen", "models", "--address", server.address])
    assert listed.exit_code == 0, listed.output
    assert str(models_dir.resolve()) in listed.output.replace("\n", "")
    assert "tiny-single" in listed.output
    shown = runner.invoke(app, ["config", "generation"])
    assert shown.exit_code == 0, shown.output
    assert f"models_dir = {models_dir.resolve()}" in shown.output.replace("\n", "")


def test_demo_writer_uses_the_servers_data_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from atelier.generation import models, testing

    monkeypatch.delenv("ATELIER_GENERATION_MODELS_DIR", raising=False)
    monkeypatch.delenv("ATELIER_MODELS_DIR", raising=False)
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # not where the data directory is
    assert testing.main([]) == 0
    root = tmp_path / "data" / "models" / "generation"
    assert "tiny-demo" in {e.name for e in models.scan_models(root)}
    assert not (tmp_path / ".atelier").exists()


def test_lora_option_takes_a_weight_as_in_the_web_uis() -> None:
    import typer

    from atelier.cli.generation import _lora, _settings

    assert _lora("brand-style") == ("brand-style", 1.0)
    assert _lora("brand-style:0.4") == ("brand-style", 0.4)
    s = _settings("p", "", 0, 0, 0, "", 0, 0, 0, False, ["a:0.4", "b"])
    assert list(s.loras) == ["a", "b"] and list(s.lora_weights) == [0.4, 1.0]
    assert list(_settings("p", "", 0, 0, 0, "", 0, 0, 0, False, ["a"]).lora_weights) == []
    try:
        _lora("a:heavy")
    except typer.BadParameter:
        pass
    else:
        raise AssertionError("a non-numeric weight must be refused")
