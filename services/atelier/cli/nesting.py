"""`atelier nest`: make a marker from a pieces file on the running nesting service.

atelier nest pieces.dxf --width 1500 --time 60 --ratio S=2,M=3 -o marker.svg
atelier nest style.dxf --width 1500 --made-to-measure '50>52@0.4' -o marker.dxf
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import grpc
import typer
from google.longrunning import operations_pb2, operations_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from atelier.cli import client
from atelier.common.v1 import geometry_pb2
from atelier.nesting.v1 import nesting_pb2 as pb
from atelier.nesting.v1 import nesting_pb2_grpc
from atelier.runtime.config import DEFAULT_PORTS

app = typer.Typer(help="Marker making: pieces on a fabric roll for the shortest marker.")
console = Console()

DEFAULT_ADDRESS = f"{os.environ.get('ATELIER_HOST', '127.0.0.1')}:" + os.environ.get(
    "ATELIER_NESTING_PORT", str(DEFAULT_PORTS["nesting"][0])
)
FORMATS = {
    ".svg": pb.FILE_FORMAT_SVG,
    ".dxf": pb.FILE_FORMAT_DXF,
    ".plt": pb.FILE_FORMAT_HPGL,
    ".hpgl": pb.FILE_FORMAT_HPGL,
    ".json": pb.FILE_FORMAT_JSON,
    ".nc": pb.FILE_FORMAT_GCODE,
    ".gcode": pb.FILE_FORMAT_GCODE,
    ".html": pb.FILE_FORMAT_HTML,
}
GRAINS = {
    "fixed": pb.GRAIN_RULE_FIXED,
    "woven": pb.GRAIN_RULE_WOVEN,
    "four_way": pb.GRAIN_RULE_FOUR_WAY,
    "free": pb.GRAIN_RULE_FREE,
}


def parse_ratios(text: str) -> list[pb.SizeRatio]:
    ratios = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        size, sep, count = part.partition("=")
        if not sep or not (count.strip().isascii() and count.strip().isdigit()):
            raise typer.BadParameter(f"{part!r}: write SIZE=COUNT, e.g. S=2,M=3", param_hint="--ratio")
        ratios.append(pb.SizeRatio(size=size.strip(), count=int(count)))
    return ratios


def parse_made_to_measure(text: str) -> pb.SizeBlend:
    """'50' (the size as graded) or '50>52@0.4' (0.4 of the way from 50 to 52)."""
    m = re.fullmatch(r"\s*([^>@]+?)\s*(?:>\s*([^>@]+?)\s*@\s*([0-9]*\.?[0-9]+)\s*)?", text)
    if not m:
        raise typer.BadParameter(f"{text!r}: write SIZE or SIZE>OTHER@FRACTION, e.g. 50>52@0.4")
    size, toward, fraction = m.group(1), m.group(2) or "", float(m.group(3) or 0.0)
    return pb.SizeBlend(size=size, toward_size=toward, fraction=fraction)


def parse_flaw(text: str) -> pb.FlawZone:
    try:
        x, y, w, h = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write X,Y,WIDTH,HEIGHT in mm", param_hint="--flaw") from None
    return pb.FlawZone(rect=geometry_pb2.RectMm(x_mm=x, y_mm=y, width_mm=w, height_mm=h), reason="cli")


def _fail(exc: grpc.RpcError) -> typer.Exit:
    from atelier.runtime.status import field_violations

    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    for field, why in field_violations(exc):
        console.print(f"  {field}: {why}")
    return typer.Exit(1)


# The group itself is the command (`atelier nest FILE ...`); options may follow the file argument.
@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def nest(
    pieces: Path = typer.Argument(..., exists=True, dir_okay=False, help="pieces: DXF (AAMA-style) or JSON"),
    width: float = typer.Option(
        0.0, "--width", help="fabric width in mm (default: the file's, if it states one)"
    ),
    time_s: float = typer.Option(30.0, "--time", help="search budget in seconds"),
    ratio: str = typer.Option("", "--ratio", help="garments per size, e.g. S=2,M=3"),
    output: list[Path] = typer.Option(
        [Path("marker.svg")],
        "--output",
        "-o",
        help="result files: .svg .dxf (AAMA marker) .plt/.hpgl .nc/.gcode (ISO 6983) .html (report) .json",
    ),
    spacing: float = typer.Option(0.0, "--spacing", help="gap between pieces, mm"),
    margin: float = typer.Option(0.0, "--margin", help="clear space along each selvage, mm"),
    end_margin: float = typer.Option(0.0, "--end-margin", help="clear space at both marker ends, mm"),
    max_length: float = typer.Option(0.0, "--max-length", help="longest marker allowed, mm (0: unlimited)"),
    flaw: list[str] = typer.Option(
        [], "--flaw", help="a zone to keep clear: X,Y,WIDTH,HEIGHT in mm (repeatable)"
    ),
    grain: str = typer.Option(
        "", "--grain", help="override every piece's grain: fixed, woven, four_way, free"
    ),
    unit_mm: float = typer.Option(0.0, "--unit-mm", help="file unit in mm (0: the file's own units)"),
    rul: Path | None = typer.Option(
        None,
        "--rul",
        exists=True,
        dir_okay=False,
        help="AAMA/ASTM RUL grade rules (default: a .rul file of the same name beside the DXF)",
    ),
    only: str = typer.Option(
        "", "--pieces", help="lay only these pieces (names, comma separated), e.g. the shell-fabric ones"
    ),
    same_hand: bool = typer.Option(
        False, "--same-hand", help="quantity 2 means two pieces as drawn, not a left/right pair"
    ),
    save_pattern: bool = typer.Option(
        False, "--save-pattern", help="also store the pieces in the pattern library (prints its id)"
    ),
    made_to_measure: str = typer.Option(
        "",
        "--made-to-measure",
        help="one garment between two graded sizes, SIZE>OTHER@FRACTION (e.g. 50>52@0.4, from the "
        "body service's RecommendSize); stores the pattern and lays it by id",
    ),
    seed: int = typer.Option(0, "--seed", help="solver seed"),
    name: str = typer.Option("", "--name", help="marker name written on the exports"),
    address: str = typer.Option(DEFAULT_ADDRESS, "--address", help="nesting service host:port"),
) -> None:
    """Make a marker: import the pieces, solve for --time seconds with a live efficiency bar, export."""
    for path in output:
        if path.suffix.lower() not in FORMATS:
            raise typer.BadParameter(
                f"{path}: use .svg, .dxf, .plt, .hpgl, .nc, .gcode, .html or .json", param_hint="--output"
            )
    if grain and grain not in GRAINS:
        raise typer.BadParameter(f"choose from {', '.join(GRAINS)}", param_hint="--grain")
    blend = parse_made_to_measure(made_to_measure) if made_to_measure else None
    if blend is not None and (ratio or grain):
        raise typer.BadParameter("not with --ratio or --grain", param_hint="--made-to-measure")
    file_format = pb.FILE_FORMAT_JSON if pieces.suffix.lower() == ".json" else pb.FILE_FORMAT_DXF
    if rul is None and file_format == pb.FILE_FORMAT_DXF:
        # CAD systems export the grade rules as STYLE.RUL beside STYLE.DXF.
        rul = next((p for p in pieces.parent.glob(pieces.stem + ".*") if p.suffix.lower() == ".rul"), None)
        if rul is not None:
            console.print(f"grade rules from {rul.name}")
    # Pattern files of a whole graded style run to megabytes: lift gRPC's 4 MB default.
    limits = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    with client.channel(address, limits) as channel:
        stub = nesting_pb2_grpc.NestingServiceStub(channel)
        try:
            imported = stub.ImportPieces(
                pb.ImportPiecesRequest(
                    format=file_format,
                    content=pieces.read_bytes(),
                    unit_mm=unit_mm,
                    pairs=pb.PAIR_MODE_SAME_HAND if same_hand else pb.PAIR_MODE_MIRRORED,
                    save_pattern=save_pattern or blend is not None,
                    grade_rules=rul.read_bytes() if rul is not None else b"",
                ),
                timeout=60,
            )
            # Every assumption the importer made (units, pairs, unfolded fold lines, turned grain).
            for warning in imported.warnings:
                console.print(f"[yellow]warning[/yellow]: {warning}")
            sizes = ", ".join(imported.sizes) if any(imported.sizes) else "one size"
            console.print(
                f"{pieces.name}: {len({p.name or p.id for p in imported.pieces})} pieces x "
                f"{len(imported.sizes)} sizes ({sizes}), units {imported.units or 'mm'}"
            )
            if imported.pattern_id:
                console.print(f"stored as pattern {imported.pattern_id}")
            ratios = parse_ratios(ratio)
            # A graded file holds every size: lay the sizes the ratios name.
            wanted = {r.size for r in ratios}
            names = {n.strip() for n in only.split(",") if n.strip()}
            unknown = names - {p.name or p.id for p in imported.pieces}
            if unknown:
                raise typer.BadParameter(
                    f"no pieces named {sorted(unknown)} in the file", param_hint="--pieces"
                )
            chosen = [
                p
                for p in imported.pieces
                if (not wanted or p.size in wanted) and (not names or (p.name or p.id) in names)
            ]
            if len(chosen) < len(imported.pieces):
                console.print(
                    f"laying sizes {', '.join(sorted(wanted))}: {len(chosen)} of {len(imported.pieces)} pieces"
                )
            if grain:
                for p in chosen:
                    p.grain = GRAINS[grain]
            request = pb.CreateMarkerRequest(
                pieces=chosen if blend is None else [],
                spacing_mm=spacing,
                ratios=ratios,
                time_budget_s=time_s,
                seed=seed,
                marker_name=name or pieces.stem,
                fabric=pb.Fabric(
                    width_mm=width or imported.fabric_width_mm,
                    max_length_mm=max_length,
                    edge_margin_mm=margin,
                    end_margin_mm=end_margin,
                    flaws=[parse_flaw(f) for f in flaw],
                ),
            )
            if blend is not None:
                # The customer's garment is graded on the service from the stored pattern's sizes.
                request.pattern_id = imported.pattern_id
                request.piece_names.extend(sorted(names))
                request.made_to_measure.blend.CopyFrom(blend)
                request.made_to_measure.garments = 1
            op = stub.CreateMarker(request, timeout=60)
            console.print(f"{len(chosen)} pieces from {pieces.name}; job {op.name}")
            marker = _watch(stub, op.name, time_s)
            done = operations_pb2_grpc.OperationsStub(channel).GetOperation(
                operations_pb2.GetOperationRequest(name=op.name), timeout=60
            )
            if done.HasField("error"):
                console.print(f"[red]the marker job failed[/red]: {done.error.message}")
                raise typer.Exit(1)
            for path in output:
                exported = stub.ExportMarker(
                    pb.ExportMarkerRequest(operation=op.name, format=FORMATS[path.suffix.lower()]), timeout=60
                )
                path.write_bytes(exported.content)
        except grpc.RpcError as exc:
            raise _fail(exc) from None
    console.print(
        f"marker {marker.length_mm:.1f} mm x {marker.width_mm:.1f} mm, efficiency "
        f"[bold]{marker.efficiency * 100:.2f}%[/bold], {len(marker.placements)} pieces; "
        f"wrote {', '.join(str(p) for p in output)}"
    )
    for note in marker.notes:
        console.print(f"note: {note}")


def _watch(stub: nesting_pb2_grpc.NestingServiceStub, operation: str, time_s: float) -> pb.Marker:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("nesting", total=1.0, status="starting")
        for reply in stub.WatchMarker(pb.WatchMarkerRequest(operation=operation), timeout=time_s + 120):
            status = "searching"
            if reply.marker.placements:
                status = (
                    f"efficiency {reply.marker.efficiency * 100:.2f}%, length {reply.marker.length_mm:.0f} mm"
                )
            progress.update(task, completed=max(0.0, reply.progress.fraction), status=status)
        progress.update(task, completed=1.0)
    return stub.GetMarker(pb.GetMarkerRequest(operation=operation), timeout=60)
