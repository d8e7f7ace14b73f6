"""`atelier recs` against a real server: simulate -> load -> train -> for / similar / look."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from atelier.cli.recommendations import app
from atelier.recommendations.server import build


def test_cli_load_train_recommend(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server("recommendations", build)
    address = f"127.0.0.1:{server.port}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert "wrote 80 items" in run("simulate", str(tmp_path), "--users", "150", "--items", "80")
    out = run("load", str(tmp_path / "catalog.csv"), str(tmp_path / "events.csv"), "--address", address)
    assert "80 items upserted" in out and "0 duplicates ignored" in out
    again = run("load", str(tmp_path / "catalog.csv"), str(tmp_path / "events.csv"), "--address", address)
    assert "0 events accepted" in again  # idempotent
    assert "model version 1 (ALGORITHM_ALS)" in run(
        "train", "--factors", "8", "--iterations", "5", "--address", address
    )
    run("for", "u3", "--n", "5", "--out", str(tmp_path / "u3.json"), "--address", address)
    answer = json.loads((tmp_path / "u3.json").read_text())
    assert answer["model_version"] == 1 and not answer["cold_start"] and len(answer["items"]) == 5
    assert "i" in run("similar", "i1", "--address", address)
    run("look", "i1", "--n", "3", "--out", str(tmp_path / "look.json"), "--address", address)
    assert len(json.loads((tmp_path / "look.json").read_text())["items"]) == 3
    failed = runner.invoke(app, ["for", "u3", "--n", "500", "--address", address])
    assert failed.exit_code == 1 and "INVALID_ARGUMENT" in failed.output
