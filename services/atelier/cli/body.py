"""`atelier body`: measure from photos, predict from height/weight, size charts, size grids.

atelier body measure front.jpg [side.jpg] --height 172 [--weight 68 --sex female] -o out/
atelier body predict --height 172 --weight 68 [--sex female] [--known waist_girth=80]
atelier body chart-create chart.json | chart-list | chart-get ID | chart-delete ID
atelier body recommend --chart ID (--measurements out/measurements.json | --height 172 --weight 68)
atelier body grid out/measurements.json [--block skirt] -o out/
atelier body render --height 176 ... (a synthetic silhouette pair, to try the pipeline)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.cli import client
from atelier.common.v1 import image_pb2
from atelier.runtime.config import DEFAULT_PORTS

app = typer.Typer(
    help="Body measurements from photos and height, size charts and recommendations, size grids.",
    no_args_is_help=True,
)
console = Console()
DEFAULT_ADDRESS = f"{os.environ.get('ATELIER_HOST', '127.0.0.1')}:" + os.environ.get(
    "ATELIER_BODY_PORT", str(DEFAULT_PORTS["body"][0])
)
AddressOption = typer.Option(DEFAULT_ADDRESS, "--address", help="the body service, host:port")
SEXES = {"": body_pb2.SEX_UNSPECIFIED, "female": body_pb2.SEX_FEMALE, "male": body_pb2.SEX_MALE}
FIT = {body_pb2.FIT_TIGHT: "tight", body_pb2.FIT_GOOD: "good", body_pb2.FIT_LOOSE: "loose"}


def _stub(address: str) -> body_pb2_grpc.BodyServiceStub:
    channel = client.channel(
        address,
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    return body_pb2_grpc.BodyServiceStub(channel)


def _fail(exc: grpc.RpcError) -> typer.Exit:
    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    try:
        from atelier.runtime.status import field_violations

        for field, why in field_violations(exc):
            console.print(f"  {field}: {why}")
    except Exception:  # the details are a courtesy; the status line above is the message
        pass
    return typer.Exit(1)


def _sex(sex: str) -> body_pb2.Sex.ValueType:
    if sex.lower() not in SEXES:
        raise typer.BadParameter("--sex must be female or male")
    return SEXES[sex.lower()]


def _table(measurements: list[body_pb2.Measurement], title: str) -> None:
    table = Table(title=title)
    for column in ("measurement", "cm", "± sd", "confidence", "method"):
        table.add_column(column)
    for m in measurements:
        table.add_row(m.name, f"{m.value_cm:.1f}", f"{m.stddev_cm:.1f}", f"{m.confidence:.2f}", m.method)
    console.print(table)


def _save_measurements(measurements: list[body_pb2.Measurement], path: Path) -> None:
    path.write_text(
        json.dumps(
            [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in measurements], indent=2
        )
    )


@app.command()
def measure(
    front: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="front photo, whole body, arms slightly away"
    ),
    side: Path | None = typer.Argument(None, exists=True, dir_okay=False, help="side photo (optional)"),
    height: float = typer.Option(..., "--height", help="stated height in cm"),
    weight: float = typer.Option(0.0, "--weight", help="weight in kg (optional)"),
    sex: str = typer.Option("", "--sex", help="female or male (optional)"),
    focal_35mm: float = typer.Option(
        0.0,
        "--focal-35mm",
        help="the lens's focal length as a 35 mm equivalent (26: a phone's main camera, 13: 0.5x); "
        "0: read from the front photo's EXIF",
    ),
    phone_pitch: float | None = typer.Option(
        None,
        "--phone-pitch",
        help="the phone's pitch from its motion sensor, degrees (positive: pointing down); "
        "default: found from the body",
    ),
    out: Path = typer.Option(
        Path("body-out"), "-o", "--out", help="folder for overlay PNGs and measurements.json"
    ),
    address: str = AddressOption,
) -> None:
    """Measure a person from photos: writes overlay.png (landmarks and measurement lines) and measurements.json."""
    request = body_pb2.MeasureBodyRequest(
        front=image_pb2.Image(data=front.read_bytes()),
        height_cm=height,
        weight_kg=weight,
        sex=_sex(sex),
        include_overlay=True,
        focal_length_35mm_equiv_mm=focal_35mm,
    )
    if phone_pitch is not None:
        request.phone_pitch_deg = phone_pitch
    if side is not None:
        request.side.CopyFrom(image_pb2.Image(data=side.read_bytes()))
    with console.status("measuring..."):
        try:
            reply = _stub(address).MeasureBody(request, timeout=120)
        except grpc.RpcError as exc:
            raise _fail(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    _table(list(reply.measurements), f"measurements ({reply.segmentation_method})")
    console.print(
        f"lens: {reply.focal_length_35mm_equiv_mm:g} mm (35 mm equivalent)"
        if reply.focal_length_35mm_equiv_mm
        else "lens: not in the photo's EXIF, a phone's main camera assumed (--focal-35mm gives it)"
    )
    for warning in reply.warnings:
        console.print(f"[yellow]warning[/yellow]: {warning}")
    _save_measurements(list(reply.measurements), out / "measurements.json")
    written = [out / "measurements.json"]
    if reply.overlay.data:
        (out / "overlay.png").write_bytes(reply.overlay.data)
        written.append(out / "overlay.png")
    if reply.side_overlay.data:
        (out / "overlay_side.png").write_bytes(reply.side_overlay.data)
        written.append(out / "overlay_side.png")
    console.print("wrote " + ", ".join(str(p) for p in written))


@app.command()
def predict(
    height: float = typer.Option(..., "--height", help="height in cm"),
    weight: float = typer.Option(0.0, "--weight", help="weight in kg"),
    sex: str = typer.Option("", "--sex", help="female or male"),
    known: list[str] = typer.Option([], "--known", help="NAME=CM, a measurement you know (repeatable)"),
    out: Path | None = typer.Option(None, "-o", "--out", help="write measurements.json here"),
    address: str = AddressOption,
) -> None:
    """Every measurement from height and weight (and any you know), with its uncertainty."""
    items = []
    for item in known:
        name, _, value = item.partition("=")
        try:
            items.append(body_pb2.Measurement(name=name, value_cm=float(value)))
        except ValueError:
            raise typer.BadParameter(f"--known {item!r}: use NAME=CM") from None
    try:
        reply = _stub(address).PredictMeasurements(
            body_pb2.PredictMeasurementsRequest(
                height_cm=height, weight_kg=weight, sex=_sex(sex), known=items
            ),
            timeout=30,
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    _table(list(reply.measurements), f"predicted (P(male) = {reply.male_probability:.2f})")
    if out is not None:
        _save_measurements(list(reply.measurements), out)
        console.print(f"wrote {out}")


def _chart_name(chart: str) -> str:
    return chart if chart.startswith("size-charts/") else f"size-charts/{chart}"


@app.command("chart-create")
def chart_create(
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="JSON: {display_name, system, sizes: [{label, ranges: [...]}]}"
    ),
    address: str = AddressOption,
) -> None:
    """Store a size chart for this tenant."""
    chart = json_format.Parse(path.read_text(), body_pb2.SizeChart())
    try:
        created = _stub(address).CreateSizeChart(body_pb2.CreateSizeChartRequest(chart=chart), timeout=30)
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    console.print(f"created {created.name} ({len(created.sizes)} sizes)")


@app.command("chart-list")
def chart_list(address: str = AddressOption) -> None:
    """The tenant's size charts."""
    table = Table(title="size charts")
    for column in ("name", "display name", "system", "sizes", "version"):
        table.add_column(column)
    token = ""
    while True:
        try:
            page = _stub(address).ListSizeCharts(
                body_pb2.ListSizeChartsRequest(page_size=100, page_token=token)
            )
        except grpc.RpcError as exc:
            raise _fail(exc) from None
        for c in page.charts:
            table.add_row(
                c.name, c.display_name, c.system, " ".join(s.label for s in c.sizes), str(c.version)
            )
        token = page.next_page_token
        if not token:
            break
    console.print(table)


@app.command("chart-get")
def chart_get(chart: str, address: str = AddressOption) -> None:
    """Print a chart as JSON."""
    try:
        got = _stub(address).GetSizeChart(body_pb2.GetSizeChartRequest(name=_chart_name(chart)))
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    console.print_json(json_format.MessageToJson(got, preserving_proto_field_name=True))


@app.command("chart-delete")
def chart_delete(chart: str, address: str = AddressOption) -> None:
    """Delete a chart."""
    try:
        _stub(address).DeleteSizeChart(body_pb2.DeleteSizeChartRequest(name=_chart_name(chart)))
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    console.print(f"deleted {_chart_name(chart)}")


def _load_measurements(path: Path) -> list[body_pb2.Measurement]:
    return [json_format.ParseDict(d, body_pb2.Measurement()) for d in json.loads(path.read_text())]


@app.command()
def recommend(
    chart: str = typer.Option(..., "--chart", help="a stored chart id or size-charts/ID"),
    measurements: Path | None = typer.Option(None, "--measurements", exists=True, help="measurements.json"),
    height: float = typer.Option(0.0, "--height", help="or: height in cm (predicts the rest)"),
    weight: float = typer.Option(0.0, "--weight"),
    sex: str = typer.Option("", "--sex"),
    address: str = AddressOption,
) -> None:
    """Recommend a size from a chart: best size, fit per zone, second choice when between sizes."""
    stub = _stub(address)
    try:
        if measurements is not None:
            body = _load_measurements(measurements)
        else:
            body = list(
                stub.PredictMeasurements(
                    body_pb2.PredictMeasurementsRequest(height_cm=height, weight_kg=weight, sex=_sex(sex))
                ).measurements
            )
        reply = stub.RecommendSize(
            body_pb2.RecommendSizeRequest(chart_name=_chart_name(chart), measurements=body)
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    for label, choice in (("best", reply.best), ("second", reply.second)):
        if not choice.size:
            continue
        zones = ", ".join(
            f"{z.measurement} {FIT[z.fit]} ({z.outside_cm:+.1f} cm)"
            if z.outside_cm
            else f"{z.measurement} {FIT[z.fit]}"
            for z in choice.zones
        )
        console.print(f"{label}: [bold]{choice.size}[/bold] (score {choice.score:.2f}): {zones}")


@app.command()
def grid(
    measurements: Path = typer.Argument(..., exists=True, help="measurements.json (from measure or predict)"),
    block: str = typer.Option("", "--block", help="'skirt' for a straight skirt block"),
    skirt_length: float = typer.Option(60.0, "--skirt-length", help="cm"),
    out: Path = typer.Option(Path("body-out"), "-o", "--out"),
    address: str = AddressOption,
) -> None:
    """Made-to-measure size grid (JSON + CSV) and an optional block as DXF and SVG."""
    try:
        reply = _stub(address).CreateSizeGrid(
            body_pb2.CreateSizeGridRequest(
                measurements=_load_measurements(measurements), block=block, skirt_length_cm=skirt_length
            )
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "size_grid.json").write_bytes(reply.grid_json)
    (out / "size_grid.csv").write_bytes(reply.grid_csv)
    written = ["size_grid.json", "size_grid.csv"]
    if reply.block.pieces:
        import ezdxf

        doc = ezdxf.new()
        svg = ['<svg xmlns="http://www.w3.org/2000/svg" viewBox="-20 -40 {w} {h}">']
        x_off = 0.0
        for piece in reply.block.pieces:
            pts = [(p.x_mm + x_off, p.y_mm) for p in piece.points]
            doc.modelspace().add_lwpolyline([(x, -y) for x, y in pts], close=True)
            svg.append(
                '<polygon fill="none" stroke="black" stroke-width="1" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                + '"/>'
            )
            x_off += max(p.x_mm for p in piece.points) + 50
        height_mm = max(p.y_mm for piece in reply.block.pieces for p in piece.points)
        svg[0] = svg[0].format(w=x_off + 40, h=height_mm + 80)
        svg.append("</svg>")
        doc.saveas(out / "block.dxf")
        (out / "block.svg").write_text("\n".join(svg))
        written += ["block.dxf", "block.svg"]
    console.print(f"wrote {', '.join(str(out / w) for w in written)}")


@app.command()
def render(
    out: Path = typer.Option(Path("body-out"), "-o", "--out"),
    height: float = typer.Option(176.0),
    weight: float = typer.Option(82.0),
) -> None:
    """Render a front/side photo pair of a typical body in a drawn room (to try `measure` without photos).

    A 3D render (atelier.body.scene: the body's cross-sections, clothes, light, a phone held at
    chest to eye height) that the pose model finds a person in, as in a real photo; one phone, one
    spot for both."""
    import cv2
    import numpy as np

    from atelier.body.scene import random_camera, render_scene
    from atelier.body.statmodel import BodyModel, Observation

    est = (
        BodyModel.load()
        .predict({"height": Observation(height, 0.1), "weight_kg": Observation(weight, 0.1)}, "male")
        .estimates
    )
    body = {k: e.value_cm for k, e in est.items()}
    camera = random_camera(np.random.default_rng(0), height)
    out.mkdir(parents=True, exist_ok=True)
    for seed, view in enumerate(("front", "side")):
        photo = render_scene(body, view, camera, "drawn", arm_angle_deg=30.0, seed=seed).image_rgb
        cv2.imwrite(str(out / f"{view}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    console.print(f"wrote {out / 'front.png'}, {out / 'side.png'} (body of {height:g} cm, {weight:g} kg)")
