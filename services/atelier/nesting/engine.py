"""Marker making on spyrrow: the request becomes a strip-packing instance, solver layouts become
verified markers in fabric coordinates.

How the garment rules map onto the solver:
- grain rule -> the item's allowed orientations; mirrored copies -> their own item type holding
  the reflected outline; size ratios -> demands;
- spacing -> spyrrow's ``min_items_separation``, which keeps the gap between pieces and also
  from the strip's edges, so the strip is ``width - 2 * edge_margin + 2 * spacing`` high and the
  layout is shifted by ``margin - spacing`` (pieces end up >= margin from each edge);
- flaw zones: spyrrow has no obstacles. A flaw blocks the roll across the width over its x
  extent: when pieces touch it, every piece reaching past the flaw's start is shifted, rigidly
  and together, to start past its end (+ spacing). A rigid shift of a feasible set stays feasible,
  so this is sound; it costs up to one piece length per flaw (the note on the marker says how much).
- every layout (partial or final) is verified (:mod:`atelier.nesting.verify`) before anyone sees it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import Polygon

from atelier.nesting.domain import (
    ItemType,
    Marker,
    MarkerRequest,
    PlacedPiece,
    expand_items,
    piece_area_mm2,
    place_piece,
)
from atelier.nesting.verify import VerificationError, verify_marker
from atelier.runtime.context import Cancellation
from atelier.runtime.errors import CancelledError, FailedPreconditionError

log = logging.getLogger(__name__)

WORKER = Path(__file__).resolve().parent / "spyrrow_worker.py"


class SolverError(RuntimeError):
    """The solver gave no usable answer (the job fails as INTERNAL, with this message)."""


@dataclass(frozen=True)
class SolverLayout:
    """One solver answer: item placements in solver coordinates."""

    width: float
    placements: list[tuple[str, float, float, float]]  # (item key, rotation_deg, x, y)
    final: bool
    elapsed_s: float


def _origin(item: ItemType) -> tuple[float, float]:
    """The solver gets outlines moved to start at (0, 0): CAD coordinates can lie far from the
    origin, and the solver computes in float32, whose precision falls with the magnitude."""
    return min(x for x, _ in item.outline_mm), min(y for _, y in item.outline_mm)


def solver_job(request: MarkerRequest, items: list[ItemType], workers: int | None) -> dict[str, Any]:
    """The JSON the worker reads: the strip-packing instance and the solver config."""
    fabric = request.fabric
    strip = fabric.width_mm - 2 * fabric.edge_margin_mm + 2 * request.spacing_mm
    return {
        "name": request.name or "marker",
        "strip_height": strip,
        "items": [
            {
                "id": it.key,
                "shape": [[x - _origin(it)[0], y - _origin(it)[1]] for x, y in it.outline_mm],
                "demand": it.demand,
                "orientations": it.rotations_deg,
            }
            for it in items
        ],
        "time_s": request.time_budget_s,
        "workers": workers,
        "seed": request.seed,
        "separation": request.spacing_mm,
    }


def to_marker(request: MarkerRequest, items: list[ItemType], layout: SolverLayout) -> Marker:
    """Solver layout -> marker in fabric coordinates (margins, flaw shifts), not yet verified."""
    fabric = request.fabric
    by_key = {it.key: it for it in items}
    dx = fabric.end_margin_mm - request.spacing_mm
    dy = fabric.edge_margin_mm - request.spacing_mm
    copies: dict[str, int] = {}
    placed: list[PlacedPiece] = []
    for key, rotation, x, y in layout.placements:
        item = by_key[key]
        piece = request.pieces[item.piece_index]
        copy = item.first_copy + copies.get(key, 0)
        copies[key] = copies.get(key, 0) + 1
        # The solver works in float32; snap the rotation to the allowed angle it stands for.
        if item.rotations_deg is not None:
            rotation = _nearest_angle(rotation, item.rotations_deg)
        # The solver placed the outline moved to its origin (see _origin): fold that back in.
        ox, oy = _origin(item)
        c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        tx, ty = x + dx - (c * ox - s * oy), y + dy - (s * ox + c * oy)
        placed.append(place_piece(piece, copy, item.mirrored, rotation % 360.0, tx, ty))
    notes: list[str] = list(request.notes)
    placed = clear_flaws(request, placed, notes)
    max_x = max((max(p[0] for p in pl.outline_mm) for pl in placed), default=0.0)
    length = max_x + fabric.end_margin_mm
    return Marker(
        name=request.name,
        placements=placed,
        length_mm=length,
        width_mm=fabric.width_mm,
        piece_area_mm2=piece_area_mm2(request),
        final=layout.final,
        elapsed_s=layout.elapsed_s,
        seed=request.seed,
        spacing_mm=request.spacing_mm,
        fabric=fabric,
        notes=notes,
        ratios=dict(request.ratios),
        pattern_id=request.pattern_id,
    )


def _nearest_angle(rotation_deg: float, allowed_deg: list[float]) -> float:
    return min(allowed_deg, key=lambda a: abs(((rotation_deg - a + 180.0) % 360.0) - 180.0))


def clear_flaws(request: MarkerRequest, placed: list[PlacedPiece], notes: list[str]) -> list[PlacedPiece]:
    """Shift pieces past each flaw zone they touch (the flaw blocks the width over its x extent)."""
    spacing = request.spacing_mm
    flaws = sorted((Polygon(f.outline_mm) for f in request.fabric.flaws), key=lambda f: f.bounds[0])
    for flaw in flaws:
        fx0, _, fx1, _ = flaw.bounds
        polys = [Polygon(p.outline_mm) for p in placed]
        if not any(poly.distance(flaw) < spacing or poly.intersects(flaw) for poly in polys):
            continue
        moving = [i for i, poly in enumerate(polys) if poly.bounds[2] > fx0 - spacing]
        shift = fx1 + spacing - min(polys[i].bounds[0] for i in moving)
        if shift <= 0:
            continue
        for i in moving:
            placed[i] = placed[i].shifted(shift)
        notes.append(
            f"flaw zone at x {fx0:.1f}-{fx1:.1f} mm: {len(moving)} pieces shifted {shift:.1f} mm past it"
        )
    return placed


def check_length(request: MarkerRequest, marker: Marker) -> None:
    limit = request.fabric.max_length_mm
    if limit > 0 and marker.length_mm > limit + 1e-6:
        raise FailedPreconditionError(
            f"the best marker found needs {marker.length_mm:.1f} mm, more than fabric.max_length_mm "
            f"{limit:.1f} mm; allow a longer marker, fewer pieces or a longer time budget"
        )


OnMarker = Callable[[Marker], None]


def make_marker(
    request: MarkerRequest,
    cancellation: Cancellation | None = None,
    on_progress: OnMarker | None = None,
    workers: int | None = None,
    progress_interval_s: float = 1.0,
) -> Marker:
    """Runs the solver for the request's budget; returns the best verified marker.

    on_progress gets each improving verified marker (at most every progress_interval_s).
    Cancellation kills the solver process within ~0.1 s and raises CancelledError.
    """
    items = expand_items(request)
    job = solver_job(request, items, workers)
    proc = subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    lock = threading.Lock()
    arrived = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                lines.append(line)
            arrived.set()

    reader = threading.Thread(target=read, name="spyrrow-reader", daemon=True)
    reader.start()
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    best: Marker | None = None
    final_layout: SolverLayout | None = None
    pending: SolverLayout | None = None
    last_sent = 0.0
    try:
        while True:
            if cancellation is not None and cancellation.cancelled:
                raise CancelledError(cancellation.reason or "cancelled")
            arrived.wait(0.1)
            arrived.clear()
            # Read before draining: once the reader has ended, this batch holds its last lines.
            reader_done = not reader.is_alive()
            with lock:
                batch, lines[:] = list(lines), []
            for line in batch:
                data = json.loads(line)
                layout = SolverLayout(
                    float(data["width"]),
                    [tuple(p) for p in data["placements"]],
                    data["kind"] == "final",
                    float(data["elapsed_s"]),
                )
                if layout.final:
                    final_layout = layout
                else:
                    pending = layout
            if final_layout is not None:
                break
            if (
                pending is not None
                and on_progress is not None
                and time.monotonic() - last_sent >= progress_interval_s
            ):
                marker = _verified(request, items, pending)
                pending = None
                if marker is not None and (best is None or marker.length_mm < best.length_mm):
                    best = marker
                    last_sent = time.monotonic()
                    on_progress(marker)
            if reader_done:
                proc.wait()
                err = proc.stderr.read() if proc.stderr else ""
                raise solver_failure(proc.returncode, err)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        # The reader sees end-of-file once the process is gone; close its pipe only after it stopped.
        reader.join(5.0)
        if proc.stdout and not reader.is_alive():
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    marker = _verified(request, items, final_layout)
    if marker is None or (best is not None and best.length_mm < marker.length_mm):
        if best is None:
            raise SolverError("no layout of the solver passed verification; the marker is not returned")
        if marker is None:
            best.notes.append("the solver's final layout failed verification; this is the best verified one")
        marker = best
    marker.final = True
    marker.elapsed_s = final_layout.elapsed_s
    check_length(request, marker)
    return marker


def solver_failure(returncode: int, stderr: str) -> Exception:
    """The worker died: say why in one line (its last), never with the traceback. A piece the
    solver finds too wide (validation leaves a float32 margin, so this should not happen) is the
    caller's to fix, not an internal error."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no message"
    if "does not seem to fit" in last:
        return FailedPreconditionError(
            f"a piece does not fit across the fabric width in the solver ({last.split(': ', 1)[-1]}); "
            "use a wider fabric, smaller margins or let the piece turn"
        )
    return SolverError(f"the solver stopped without an answer (exit {returncode}): {last[:300]}")


def _verified(request: MarkerRequest, items: list[ItemType], layout: SolverLayout) -> Marker | None:
    marker = to_marker(request, items, layout)
    try:
        verify_marker(request, marker)
    except VerificationError as exc:
        log.warning("a solver layout failed verification: %s", exc)
        return None
    return marker
