"""Runs one spyrrow solve in its own process, so that a cancelled marker job can stop the solver.

spyrrow's solve() cannot be interrupted from Python (it holds its threads until the time budget
ends), so the service runs it here and kills this process on cancel. Protocol: one JSON object
on stdin (the instance and the config); JSON lines on stdout, one per feasible improving
solution ({"kind": "progress"|"final", "width", "density", "placements": [[id, rot, x, y], ...]}).

Kept free of atelier imports: started as a script, it loads only spyrrow.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import spyrrow

EMIT_INTERVAL_S = 0.25
FEASIBLE = (spyrrow.ReportType.ExplFeas, spyrrow.ReportType.CmprFeas)


def _emit(kind: str, solution: Any, started: float) -> None:
    placements = [[p.id, p.rotation, p.translation[0], p.translation[1]] for p in solution.placed_items]
    line = {
        "kind": kind,
        "width": solution.width,
        "density": solution.density,
        "elapsed_s": time.monotonic() - started,
        "placements": placements,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main() -> int:
    job = json.load(sys.stdin)
    items = [
        spyrrow.Item(it["id"], [tuple(p) for p in it["shape"]], it["demand"], it["orientations"])
        for it in job["items"]
    ]
    instance = spyrrow.StripPackingInstance(job.get("name", ""), job["strip_height"], items)
    config = spyrrow.StripPackingConfig(
        early_termination=False,
        total_computation_time=int(job["time_s"]),
        num_workers=job.get("workers"),
        seed=job.get("seed"),
        min_items_separation=job.get("separation") or None,
    )
    queue = spyrrow.ProgressQueue()
    result: dict[str, Any] = {}
    started = time.monotonic()
    thread = threading.Thread(
        target=lambda: result.setdefault("solution", instance.solve(config, progress=queue))
    )
    thread.start()
    best = float("inf")
    pending: Any = None
    last_emit = 0.0
    parent = os.getppid()
    while thread.is_alive():
        thread.join(0.1)
        if os.getppid() != parent:  # the service died without killing us: stop burning its CPU
            os._exit(1)
        for report, solution in queue.drain():
            # Only feasible layouts shorter than the best so far (the parent verifies each it uses).
            if report in FEASIBLE and solution.width < best - 1e-9:
                best = solution.width
                pending = solution
        # At most 4 a second: serialising every improvement would take CPU from the solver.
        if pending is not None and time.monotonic() - last_emit >= EMIT_INTERVAL_S:
            _emit("progress", pending, started)
            pending, last_emit = None, time.monotonic()
    _emit("final", result["solution"], started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
