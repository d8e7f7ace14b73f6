"""What the A1111-compatible HTTP API adds on top of gRPC Generate for the same request.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/generation_http.py [--repeats 15] [--steps 10]

One in-process generation server with both ports (ATELIER_GENERATION_A1111_PORT), the tiny random-weight
SD 1.x pipeline preloaded. For each size, txt2img over HTTP (JSON in, base64 PNGs and the info JSON out,
as the web UI's clients call it) and Generate over gRPC with the same settings run interleaved, order
alternating; medians of the times and of the paired differences. The tiny pipeline makes the denoising
cheap, so the difference in milliseconds is the figure that carries over to real models (where the
denoising takes seconds and the same milliseconds are a far smaller share).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atelier.generation import testing
from atelier.generation.v1 import generation_pb2 as pb
from bench.generation import PROMPT, interleaved, quartiles, serving
from bench.report import write_section

COMMAND = "flock /tmp/atelier-bench.lock .venv/bin/python bench/generation_http.py"


def measure(repeats: int, steps: int, sizes: list[int]) -> str:
    work = Path(tempfile.mkdtemp(prefix="atelier-bench-http-"))
    models = work / "models"
    testing.write_tiny_model(models / "bench", seed=0)
    rows = []
    load_before = os.getloadavg()
    with serving(work, models, DEVICE="cpu", PRELOAD="bench", A1111_PORT="0") as (server, stub):
        base = f"http://127.0.0.1:{server.spec.ports['a1111_port']}/sdapi/v1"
        session = requests.Session()
        for size_px in sizes:

            def grpc_t2i(seed: int, size_px: int = size_px) -> None:
                settings = pb.GenerationSettings(
                    prompt=PROMPT,
                    seed=seed,
                    steps=steps,
                    guidance_scale=7.5,
                    width_px=size_px,
                    height_px=size_px,
                )
                images = [
                    e
                    for e in stub.Generate(pb.GenerateRequest(model="bench", settings=settings))
                    if e.HasField("image")
                ]
                assert len(images) == 1

            def http_t2i(seed: int, size_px: int = size_px) -> None:
                body = {
                    "prompt": PROMPT,
                    "seed": seed,
                    "steps": steps,
                    "cfg_scale": 7.5,
                    "width": size_px,
                    "height": size_px,
                    "override_settings": {"sd_model_checkpoint": "bench"},
                }
                reply = session.post(f"{base}/txt2img", json=body, timeout=600)
                assert reply.status_code == 200 and len(reply.json()["images"]) == 1, reply.text

            grpc_s, http_s = interleaved(grpc_t2i, http_t2i, repeats)
            diffs = [(h - g) * 1000 for g, h in zip(grpc_s, http_s, strict=True)]
            ratios = [(h / g - 1) * 100 for g, h in zip(grpc_s, http_s, strict=True)]
            q1, q3 = quartiles(ratios)
            rows.append(
                f"| {size_px} x {size_px} | {statistics.median(grpc_s):.4f} | {statistics.median(http_s):.4f} | "
                f"{statistics.median(diffs):+.1f} | {statistics.median(ratios):+.1f} | {q1:+.1f} .. {q3:+.1f} |"
            )
    load_after = os.getloadavg()
    return "\n".join(
        [
            f"CPU, tiny random-weight SD 1.x pipeline, txt2img, {steps} steps, batch 1, {repeats} interleaved pairs "
            f"(order alternating) after 2 warm-ups, one server with both ports, the same loaded weights. "
            f"Load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f} (the machine is shared).",
            "",
            "| size (px) | gRPC Generate, median (s) | HTTP /sdapi/v1/txt2img, median (s) | HTTP - gRPC, median of pairs (ms) "
            "| HTTP over gRPC, median of pairs (%) | IQR of pairs (%) |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The HTTP side adds: JSON parsing and the web UI's field checks, the base64 PNG and the info JSON "
            "(with each PNG's settings chunk read back), a worker-thread hop, and the client's JSON decoding "
            "(requests). Both sides include validation, the device queue, the PNG with settings and the session commit.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--sizes",
        default="64,256",
        help="comma-separated square sizes in px (512 on the tiny pipeline took over 30 min for 11 pairs at load ~15)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    body = measure(args.repeats, args.steps, [int(s) for s in args.sizes.split(",")])
    print(body)
    if not args.no_write:
        write_section("generation-http", body, COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
