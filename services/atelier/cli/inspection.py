"""`atelier inspect`: train fabric profiles and inspect rolls on the running inspection service.

atelier inspect train --article denim-12 good/*.png
atelier inspect run --article denim-12 roll/*.png --mm-per-px 0.2 -o report.html
atelier inspect profiles
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import typer
from PIL import Image
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from atelier.cli import client
from atelier.common.v1 import image_pb2
from atelier.inspection.v1 import inspection_pb2 as pb
from atelier.inspection.v1 import inspection_pb2_grpc
from atelier.runtime.config import DEFAULT_PORTS

app = typer.Typer(help="Fabric inspection: profiles of good fabric, defect detection, 4-point roll grading.")
console = Console()

DEFAULT_ADDRESS = f"{os.environ.get('ATELIER_HOST', '127.0.0.1')}:" + os.environ.get(
    "ATELIER_INSPECTION_PORT", str(DEFAULT_PORTS["inspection"][0])
)
ADDRESS_HELP = "inspection service host:port"


def _fail(exc: grpc.RpcError) -> typer.Exit:
    from atelier.runtime.status import field_violations

    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    for field, why in field_violations(exc):
        console.print(f"  {field}: {why}")
    return typer.Exit(1)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _height_width_px(data: bytes) -> tuple[int, int]:
    """The image's size from its header (0, 0 when unreadable: the service then reports the frame)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[1], img.size[0]
    except Exception:  # the service names the cause; here it only shifts the next frame's position
        return 0, 0


@app.command()
def train(
    images: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="defect-free images"),
    article: str = typer.Option(..., "--article", help="fabric article, e.g. denim-12"),
    address: str = typer.Option(DEFAULT_ADDRESS, "--address", help=ADDRESS_HELP),
) -> None:
    """Learn (or re-learn) an article's profile from defect-free images; the new version goes live at once."""
    with _progress() as progress:
        task = progress.add_task("reading", total=len(images), status="")
        goods = []
        for path in images:
            goods.append(image_pb2.Image(data=path.read_bytes()))
            progress.update(task, advance=1, status=path.name)
        progress.update(task, description="training", status=f"{article} on {len(goods)} images")
        with client.channel(address) as channel:
            stub = inspection_pb2_grpc.InspectionServiceStub(channel)
            try:
                profile = stub.CreateProfile(
                    pb.CreateProfileRequest(article=article, good_images=goods), timeout=30 + 10 * len(goods)
                )
            except grpc.RpcError as exc:
                progress.stop()
                raise _fail(exc) from None
        progress.update(task, status="done")
    console.print(
        f"profile [bold]{profile.article}[/bold] version {profile.version}: {profile.image_count} images, "
        f"threshold {profile.threshold:.3f} ({profile.method})"
    )


@app.command()
def run(
    images: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="frames in roll order"),
    article: str = typer.Option(..., "--article", help="fabric article with a trained profile"),
    mm_per_px: float = typer.Option(..., "--mm-per-px", min=0.0001, max=100.0, help="camera resolution"),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="roll report: .html or .json"),
    roll_id: str = typer.Option("", "--roll-id", help="roll name on the report (default: the article)"),
    roll_width_mm: float = typer.Option(0.0, "--roll-width-mm", help="default: image width x mm per px"),
    max_points: float = typer.Option(
        40.0, "--max-points", help="pass limit, points per 100 square yards (customer's threshold)"
    ),
    address: str = typer.Option(DEFAULT_ADDRESS, "--address", help=ADDRESS_HELP),
) -> None:
    """Inspect a roll's frames (image rows run along the roll), grade it with the 4-point system, write the report.

    Exit status 1 when any frame could not be inspected: the roll is then INCOMPLETE (or FAIL when the
    points already found fail it), never PASS, and the report lists those frames with their reasons.
    """
    if output.suffix.lower() not in {".html", ".json"}:
        raise typer.BadParameter(f"{output}: use .html or .json", param_hint="--output")
    frames: list[tuple[Path, bytes, float]] = []
    lengths_mm: list[float] = []
    position_mm, widest_px = 0.0, 0
    for path in images:
        data = path.read_bytes()
        height, width = _height_width_px(data)
        frames.append((path, data, position_mm))
        lengths_mm.append(height * mm_per_px)
        position_mm += height * mm_per_px
        widest_px = max(widest_px, width)
    roll_length_mm = position_mm
    width_mm = roll_width_mm or widest_px * mm_per_px

    def requests() -> Iterator[pb.InspectStreamRequest]:
        for i, (_path, data, at_mm) in enumerate(frames):
            yield pb.InspectStreamRequest(
                article=article if i == 0 else "",
                image=image_pb2.Image(data=data),
                mm_per_px=mm_per_px,
                position_mm=at_mm,
                frame_index=i,
                include_defect_crops=output.suffix.lower() == ".html",
            )

    defects: list[pb.Defect] = []
    failed: dict[int, str] = {}
    answered: set[int] = set()
    defective = 0
    with client.channel(address) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        try:
            with _progress() as progress:
                task = progress.add_task("inspecting", total=len(frames), status="")
                for reply in stub.InspectStream(requests(), timeout=60 + 30 * len(frames)):
                    answered.add(reply.frame_index)
                    path = frames[reply.frame_index][0]
                    if reply.HasField("error"):
                        failed[reply.frame_index] = f"{reply.error.code}: {reply.error.message}"
                        progress.console.print(
                            f"[red]{path.name}[/red]: {reply.error.code}: {reply.error.message}"
                        )
                    else:
                        defective += reply.result.defective
                        defects.extend(reply.result.defects)
                    progress.update(
                        task, advance=1, status=f"{path.name}: {defective} defective, {len(defects)} defects"
                    )
            for i in range(len(frames)):
                if i not in answered:  # the stream ended early: nobody looked at these
                    failed[i] = "no answer from the service for this frame"
            # A failed frame is listed and its length left out of the inspected length (0 when even its
            # size could not be read): the roll is INCOMPLETE, never PASS.
            uninspected = [
                pb.UninspectedStretch(
                    frame_index=i,
                    name=frames[i][0].name,
                    position_mm=frames[i][2],
                    length_mm=lengths_mm[i],
                    reason=reason,
                )
                for i, reason in sorted(failed.items())
            ]
            if width_mm <= 0:
                console.print(
                    "[red]no frame's width could be read: give --roll-width-mm to grade the roll[/red]"
                )
                raise typer.Exit(1)
            grade = stub.GradeRoll(
                pb.GradeRollRequest(
                    roll_id=roll_id or article,
                    roll_width_mm=width_mm,
                    roll_length_mm=roll_length_mm,
                    defects=defects,
                    max_points_per_100_sq_yd=max_points,
                    include_report=output.suffix.lower() == ".html",
                    uninspected=uninspected,
                ),
                timeout=120,
            )
        except grpc.RpcError as exc:
            raise _fail(exc) from None
    output.write_bytes(grade.report_html if output.suffix.lower() == ".html" else grade.report_json)
    verdict_name = pb.RollVerdict.Name(grade.verdict).removeprefix("ROLL_VERDICT_")
    colour = {"PASS": "green", "FAIL": "red"}.get(verdict_name, "yellow")
    console.print(
        f"{len(frames)} frames ({len(frames) - len(failed)} inspected), {defective} defective, {len(defects)} "
        f"defects; inspected {grade.inspected_length_mm / 1000:.2f} of {roll_length_mm / 1000:.2f} m; "
        f"{grade.total_points} points, {grade.points_per_100_sq_yd:.2f} per 100 sq yd of the inspected area "
        f"(limit {max_points:g}): [{colour}]{verdict_name}[/{colour}]; wrote {output}"
    )
    if failed:
        console.print(
            f"[red]{len(failed)} frame(s) could not be inspected[/red] "
            f"({grade.uninspected_length_mm / 1000:.2f} m known): the roll is {verdict_name}, not passed"
        )
        for i, reason in sorted(failed.items()):
            console.print(f"  frame {i} {frames[i][0].name}: {reason}")
        raise typer.Exit(1)


@app.command()
def profiles(address: str = typer.Option(DEFAULT_ADDRESS, "--address", help=ADDRESS_HELP)) -> None:
    """The active profile of every article."""
    table = Table(title="Fabric profiles")
    for column in ("article", "version", "images", "threshold", "method"):
        table.add_column(column)
    token = ""
    with client.channel(address) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        try:
            while True:
                page = stub.ListProfiles(pb.ListProfilesRequest(page_size=200, page_token=token), timeout=30)
                for p in page.profiles:
                    table.add_row(
                        p.article, str(p.version), str(p.image_count), f"{p.threshold:.3f}", p.method
                    )
                token = page.next_page_token
                if not token:
                    break
        except grpc.RpcError as exc:
            raise _fail(exc) from None
    console.print(table)
