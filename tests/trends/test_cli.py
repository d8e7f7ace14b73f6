"""`atelier trends` against a real server: ingest a CSV (twice), list, forecast with a PNG plot and
JSON, classify, demand, backtest, and bad input reported with the CSV line it came from."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from atelier.cli import trends as cli
from atelier.cli.trends import app
from atelier.runtime.server import Server
from atelier.trends.server import build
from atelier.trends.v1 import trends_pb2, trends_pb2_grpc

START = datetime(2015, 1, 5, tzinfo=UTC)  # a Monday
WEEKS = 200


def truth(k: int, t: np.ndarray) -> np.ndarray:
    return 10 + 2 * k + 3 * np.sin(2 * np.pi * t / 52)


def write_long_csv(path: Path) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(WEEKS)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "time", "value", "external", "category", "colour"])
        for k, (category, colour) in enumerate([("shoes", "black"), ("shoes", "red"), ("coats", "camel")]):
            values = truth(k, t) + rng.normal(0, 0.5, WEEKS)
            signal = values * 1.1 + rng.normal(0, 0.3, WEEKS)
            for week in range(WEEKS):
                day = (START + timedelta(weeks=week)).date().isoformat()
                external = f"{signal[week]:.6f}" if k == 0 else ""  # one series has the signal
                w.writerow([f"{colour}_{category}", day, f"{values[week]:.6f}", external, category, colour])


def test_cli_ingest_forecast_plot_classify(
    start_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 200)  # tables unwrapped, as in a wide terminal
    server = start_server("trends", build)
    address = f"127.0.0.1:{server.port}"
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, [*args, "--address", address], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    data = tmp_path / "data.csv"
    write_long_csv(data)
    out = run("ingest", str(data), "--batch", "250")
    assert "3 series, 600 observations: 600 inserted, 0 unchanged, 0 updated" in out
    assert "600 inserted" not in run("ingest", str(data))  # idempotent: a second upload adds nothing
    assert "0 inserted, 600 unchanged" in run("ingest", str(data))
    listed = run("series", "--label", "category=shoes")
    assert "black_shoes" in listed and "red_shoes" in listed and "camel_coats" not in listed

    png, js = tmp_path / "forecast.png", tmp_path / "forecast.json"
    out = run("forecast", "--horizon", "52", "-o", str(png), "--json", str(js))
    assert "wrote" in out and "ensemble" in out
    # A real image: PNG signature, decodable, of the size asked for, with the forecast drawn.
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 1000 and image.size[1] >= 600
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    forecast_blue = np.abs(pixels - np.array([0x1F, 0x77, 0xB4])).sum(axis=1) < 30
    history_grey = np.abs(pixels - np.array([0x33, 0x33, 0x33])).sum(axis=1) < 30
    assert forecast_blue.sum() > 500 and history_grey.sum() > 500
    # The JSON numbers: what the Forecast RPC answers for the same request, and near the truth.
    answer = json.loads(js.read_text())
    assert answer["horizon"] == 52 and set(answer["forecasts"]) == {"black_shoes", "red_shoes", "camel_coats"}
    with grpc.insecure_channel(address) as channel:
        direct = trends_pb2_grpc.TrendsServiceStub(channel).Forecast(
            trends_pb2.ForecastRequest(horizon=52, levels=[80, 95])
        )
    for f in direct.forecasts:
        mine = answer["forecasts"][f.series]
        assert np.allclose(mine["mean"], list(f.mean), rtol=1e-9)
        assert np.allclose(mine["intervals"]["95"]["upper"], list(f.intervals[1].upper), rtol=1e-9)
        assert mine["model"] == f.model
    black = answer["forecasts"]["black_shoes"]
    assert black["times"][0] == (START + timedelta(weeks=WEEKS)).date().isoformat()
    future = truth(0, np.arange(WEEKS, WEEKS + 52))
    assert np.mean(np.abs(np.array(black["mean"]) - future)) < 0.6  # noise sd 0.5
    lower, upper = np.array(black["intervals"]["80"]["lower"]), np.array(black["intervals"]["80"]["upper"])
    assert np.all(lower < black["mean"]) and np.all(np.array(black["mean"]) < upper)

    classes = tmp_path / "classes.json"
    out = run("classify", "--json", str(classes))
    assert "shoes:" in out
    found = json.loads(classes.read_text())["trends"]
    assert {v["trend"] for v in found.values()} == {"flat"}  # no growth was simulated
    assert all(abs(v["yoy_change"]) < 0.05 for v in found.values())

    demand = tmp_path / "demand.json"
    run("demand", "--horizon", "4", "--series", "camel_coats", "--json", str(demand))
    camel = json.loads(demand.read_text())["forecasts"]["camel_coats"]
    assert camel["model"].startswith("smooth:") and len(camel["mean"]) == 4

    out = run("backtest", "--horizon", "26", "--model", "snaive", "--model", "naive")
    assert "snaive (best)" in out

    # Wide files (a column per series) with the external signal in a second file of that shape.
    (tmp_path / "wide.csv").write_text("week,w1,w2\n2020-01-06,1.5,2\n2020-01-13,1.7,\n2020-01-20,1.9,2.2\n")
    (tmp_path / "wide_ext.csv").write_text("week,w1,w2\n2020-01-06,3,4\n2020-01-13,,5\n2020-01-20,3.5,\n")
    out = run(
        "ingest", str(tmp_path / "wide.csv"), "--wide", "--external-csv", str(tmp_path / "wide_ext.csv")
    )
    assert "2 series, 5 observations: 5 inserted" in out
    with grpc.insecure_channel(address) as channel:
        w1 = trends_pb2_grpc.TrendsServiceStub(channel).GetSeries(trends_pb2.GetSeriesRequest(series="w1"))
    assert [o.value for o in w1.observations] == [1.5, 1.7, 1.9]
    assert [o.external if o.HasField("external") else None for o in w1.observations] == [3.0, None, 3.5]

    # Bad input: the service's violation, named by the CSV line it came from.
    bad = tmp_path / "bad.csv"
    bad.write_text("series,time,value\nx,2015-01-05,1.0\nx,2015-01-12,nan\n")
    failed = runner.invoke(app, ["ingest", str(bad), "--address", address])
    assert failed.exit_code == 1 and "INVALID_ARGUMENT" in failed.output
    assert "bad.csv line 3" in failed.output
    failed = runner.invoke(app, ["forecast", "--horizon", "200", "--address", address])
    assert failed.exit_code == 1 and "horizon" in failed.output
    failed = runner.invoke(app, ["ingest", str(bad), "--address", address, "--kind", "volume"])
    assert failed.exit_code == 2


def test_cli_ingest_sales_aggregates_raw_lines(
    start_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 200)
    server = start_server("trends", build)
    address = f"127.0.0.1:{server.port}"
    sales = tmp_path / "sales.csv"
    # Two SKUs in one store over four Monday weeks: a return, a week without sales, and a
    # stocked-out week for sku B.
    sales.write_text(
        "date,sku,store,qty,category,paid,promo\n"
        "2024-01-01T10:00:00,A,1,2,tops,20,0\n"
        "2024-01-02T10:00:00,A,1,-1,tops,-10,0\n"
        "2024-01-17T10:00:00,A,1,3,tops,24,1\n"
        "2024-01-25T10:00:00,A,1,1,tops,10,0\n"
        "2024-01-03T10:00:00,B,1,5,dresses,50,0\n"
        "2024-01-24T10:00:00,B,1,4,dresses,40,0\n"
    )
    stockouts = tmp_path / "out.csv"
    stockouts.write_text("date,sku,store\n" + "".join(f"2024-01-{d:02d},B,1\n" for d in range(8, 15)))
    result = CliRunner().invoke(
        app,
        [
            "ingest-sales",
            str(sales),
            "--keys",
            "sku,store",
            "--labels",
            "category",
            "--stockouts",
            str(stockouts),
            "--value-column",
            "paid",
            "--promo-column",
            "promo",
            "--address",
            address,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "1 returns" in result.output and "1 out of stock" in result.output
    with grpc.insecure_channel(address) as channel:
        stub = trends_pb2_grpc.TrendsServiceStub(channel)
        a = stub.GetSeries(trends_pb2.GetSeriesRequest(series="sku=A|store=1"))
        b = stub.GetSeries(trends_pb2.GetSeriesRequest(series="sku=B|store=1"))
    assert [o.value for o in a.observations] == [2.0, 0.0, 3.0, 1.0]  # gross demand, zero week kept
    # The mean price paid and the promotion share go along where the week had sales.
    assert [o.price if o.HasField("price") else None for o in a.observations] == [10.0, None, 8.0, 10.0]
    assert [o.promotion if o.HasField("promotion") else None for o in a.observations] == [0.0, None, 1.0, 0.0]
    assert a.info.labels["category"] == "tops" and a.info.kind == trends_pb2.VALUE_KIND_COUNT
    # The stocked-out second week is not sent (missing, not zero); the third had no sale: a zero.
    assert [o.value for o in b.observations] == [5.0, 0.0, 4.0]
    assert b.observations[1].time.seconds - b.observations[0].time.seconds == 14 * 86_400


def test_cli_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text("series,step,promotion,price\na,1,0,9\na,2,1,7.5\na,3,0,9\nb,1,,\n")
    (entry,) = [e for e in cli.read_plan(plan, 3) if e.series == "a"]
    assert list(entry.promotion) == [0, 1, 0] and list(entry.price) == [9, 7.5, 9] and not entry.discount
    plan.write_text("series,step,promotion\na,1,1\na,3,1\n")
    with pytest.raises(typer.BadParameter, match="2 of 3 steps"):
        cli.read_plan(plan, 3)
    plan.write_text("series,step,promotion\na,4,1\n")
    with pytest.raises(typer.BadParameter, match=r"outside 1\.\.3"):
        cli.read_plan(plan, 3)
