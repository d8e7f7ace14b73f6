"""Generation benchmark: what the gRPC service adds on top of calling the same diffusers pipeline directly.

    flock /tmp/atelier-bench.lock .venv/bin/python bench/generation.py [--repeats 15] [--steps 20]

CPU, tiny random-weight SD 1.x pipeline (atelier.generation.testing), 64 x 64 px. For each mode the
raw diffusers call and the full gRPC Generate (validation, device queue, PNG with settings, session
commit to SQLite, streaming over a localhost socket) run interleaved on the same loaded weights;
the table shows medians. The GPU rows of issue #8 need a GPU machine: none was available here.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atelier.common.v1 import image_pb2
from atelier.generation import testing
from atelier.generation.models import DeviceSettings, ModelEntry, load_checkpoint
from atelier.generation.server import build
from atelier.generation.v1 import generation_pb2 as pb
from atelier.generation.v1 import generation_pb2_grpc
from atelier.runtime.config import ServiceConfig
from atelier.runtime.server import Server
from bench.report import write_section
from tests.conftest import wait_serving

SIZE_PX = 64
PROMPT = "a paisley print on silk, studio light"


def init_photo() -> bytes:
    y, x = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-gen-"))
    models = work / "models"
    testing.write_tiny_model(models / "tiny", seed=0)
    os.environ["ATELIER_GENERATION_MODELS_DIR"] = str(models)
    os.environ["ATELIER_GENERATION_DEVICE"] = "cpu"
    os.environ["ATELIER_GENERATION_PRELOAD"] = "tiny"
    config = ServiceConfig(
        service="generation",
        data_dir=work / "data",
        database_url=f"sqlite:///{work / 'g.db'}",
        log_format="text",
        log_level="WARNING",
    )
    server = Server(config, build)
    server.start(metrics_port=0)
    address = f"127.0.0.1:{server.port}"
    wait_serving(address)
    stub = generation_pb2_grpc.GenerationServiceStub(grpc.insecure_channel(address))

    # The direct path: the same folder loaded by the same loader, called as diffusers documents it.
    pipe = load_checkpoint(ModelEntry(name="tiny", kind="diffusers", path=models / "tiny"), DeviceSettings())
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    init_bytes = init_photo()
    init_image = Image.open(io.BytesIO(init_bytes)).convert("RGB")

    def direct_t2i(seed: int) -> None:
        with torch.inference_mode():
            pipe(
                PROMPT,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                width=SIZE_PX,
                height=SIZE_PX,
                generator=torch.Generator().manual_seed(seed),
                output_type="np",
            )

    def direct_i2i(seed: int) -> None:
        with torch.inference_mode():
            img2img(
                PROMPT,
                image=init_image,
                strength=0.75,
                num_inference_steps=args.steps,
                guidance_scale=7.5,
                generator=torch.Generator().manual_seed(seed),
                output_type="np",
            )

    settings = dict(prompt=PROMPT, steps=args.steps, guidance_scale=7.5, width_px=SIZE_PX, height_px=SIZE_PX)

    def grpc_t2i(seed: int) -> None:
        request = pb.GenerateRequest(
            model="tiny", mode=pb.MODE_TEXT_TO_IMAGE, settings=pb.GenerationSettings(seed=seed, **settings)
        )  # type: ignore[arg-type]
        assert sum(1 for e in stub.Generate(request) if e.HasField("image")) == 1

    def grpc_i2i(seed: int) -> None:
        request = pb.GenerateRequest(
            model="tiny",
            mode=pb.MODE_IMAGE_TO_IMAGE,
            init_image=image_pb2.Image(data=init_bytes),
            settings=pb.GenerationSettings(seed=seed, strength=0.75, **settings),
        )  # type: ignore[arg-type]
        assert sum(1 for e in stub.Generate(request) if e.HasField("image")) == 1

    rows = []
    load_before = os.getloadavg()
    for mode, direct, remote in (
        ("text-to-image", direct_t2i, grpc_t2i),
        ("img2img, strength 0.75", direct_i2i, grpc_i2i),
    ):
        for warm in range(2):
            direct(warm)
            remote(warm)
        direct_s, remote_s = [], []
        for i in range(args.repeats):
            # Interleaved, alternating which goes first, so drifting machine load hits both alike.
            pair = [(direct, direct_s), (remote, remote_s)]
            for fn, out in pair if i % 2 == 0 else reversed(pair):
                began = time.perf_counter()
                fn(100 + i)
                out.append(time.perf_counter() - began)
        d, r = statistics.median(direct_s), statistics.median(remote_s)
        rows.append((mode, d, r, (r - d) * 1000, (r - d) / d * 100, min(direct_s), min(remote_s)))
        print(
            f"{mode}: direct {d:.4f} s, gRPC {r:.4f} s, overhead {(r - d) * 1000:.1f} ms ({(r - d) / d * 100:+.1f} %)",
            flush=True,
        )
    load_after = os.getloadavg()
    server.stop(grace_s=1)

    lines = [
        f"CPU, tiny random-weight SD 1.x pipeline ({SIZE_PX} x {SIZE_PX} px, {args.steps} steps, guidance 7.5, "
        f"batch 1), median of {args.repeats} interleaved runs after 2 warm-ups; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Load average before/after: "
        f"{load_before[0]:.2f}/{load_after[0]:.2f} (the machine is shared).",
        "",
        "| mode | direct diffusers call (s) | gRPC Generate end to end (s) | overhead (ms) | overhead (%) "
        "| best direct (s) | best gRPC (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, d, r, ms, pct, best_d, best_r in rows:
        lines.append(f"| {mode} | {d:.4f} | {r:.4f} | {ms:.1f} | {pct:+.1f} | {best_d:.4f} | {best_r:.4f} |")
    lines += [
        "",
        "Target: overhead < 5 % per request. The gRPC side includes request validation, the device queue's "
        "thread hop, the PNG with its settings chunks, the session commit (SQLite, synchronous=FULL) and "
        "streaming the progress events and the image.",
        "",
        "| GPU (SD 1.5-size random weights, 512 x 512, 30 steps, img2img 0.75, batch 1 and 4) | figure |",
        "|---|---|",
        "| seconds per image, images per minute, overhead vs raw diffusers, peak GPU memory "
        "| not measured: no GPU was available in this session |",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section(
            "generation", markdown, "flock /tmp/atelier-bench.lock .venv/bin/python bench/generation.py"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
