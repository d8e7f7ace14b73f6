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


def test_csv_errors_name_the_line_and_column_and_keep_good_rows(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from atelier.cli.recommendations import CsvError, read_events

    server = start_server("recommendations", build)
    address = f"127.0.0.1:{server.port}"
    runner = CliRunner()
    (tmp_path / "catalog.csv").write_text("item_id,category,price\na,tops,10\nb,tops,cheap\nc,bottoms,\n")
    (tmp_path / "events.csv").write_text(
        "event_id,user_id,item_id,type,time,quantity,value\n"
        "e1,u1,a,purchase,2025-01-01T10:00:00Z,2,20\n"
        "e2,u1,c,purchse,2025-01-01T10:00:00Z,,\n"
        "e3,u2,a,purchase,yesterday,,\n"
        "e4,u2,a,purchase,2025-01-02T10:00:00Z,-5,-50\n"
        "e5,u3,c,view,2030-01-01T00:00:00Z,,\n"
    )
    events, lines, problems = read_events(tmp_path / "events.csv")
    assert [str(p) for p in problems] == [
        "line 3, column 'type': 'purchse' is not one of view, cart, purchase, return",
        "line 4, column 'time': 'yesterday' is not an ISO 8601 time (2024-03-01T12:00:00Z)",
    ]
    assert lines == [2, 5, 6]
    assert events[1].type == 4 and events[1].quantity == 5 and events[1].value.units == 50  # a return
    strict = runner.invoke(app, ["load", str(tmp_path / "catalog.csv"), "--strict", "--address", address])
    assert strict.exit_code == 1 and "line 3, column 'price': 'cheap' is not a number" in strict.output
    result = runner.invoke(
        app, ["load", str(tmp_path / "catalog.csv"), str(tmp_path / "events.csv"), "--address", address]
    )
    assert result.exit_code == 0, result.output
    assert "2 items upserted" in result.output and "line 3, column 'type'" in result.output
    # e5 is in the future: the service refuses it, the CLI names its line and loads the rest.
    assert "line 6, column 'time': refused by the service" in result.output
    assert "2 events accepted" in result.output
    (tmp_path / "nohead.csv").write_text("event,user\n1,2\n")
    try:
        read_events(tmp_path / "nohead.csv")
        raise AssertionError("a file without the required columns must not load")
    except CsvError as exc:
        assert "lacks the column(s) event_id, user_id, item_id, type, time" in str(exc)
