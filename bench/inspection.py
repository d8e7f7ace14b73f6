"""Inspection benchmark: fabric defect detection on real AITEX strips (shared/benchmarks/inspection).

    flock /tmp/atelier-bench.lock .venv/bin/python bench/inspection.py [--no-write]

Protocol (the data README's): per fabric, the profile is learned from its first 10 defect-free
strips (sorted by name); the test set is the rest of its defect-free strips and all its defect
strips. Image AUROC scores a strip by the maximum of its anomaly map; pixel AUROC compares the
anomaly map with the defect masks (> 127) over all test strips, padding excluded, on every
second pixel in each direction (a quarter of the pixels: the masks' smallest defects are wider
than 2 px). Detection counts use the profile's own threshold (no test labels used to set it).
Time per strip is decode + anomaly map + regions (what InspectImage does besides the wire) on
2 CPU threads (torch, OpenCV and BLAS all limited to 2), and once over real gRPC.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "2"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atelier.common.v1 import image_pb2  # noqa: E402
from atelier.inspection import imaging, texture  # noqa: E402
from atelier.inspection.regions import find_regions  # noqa: E402
from atelier.inspection.server import build  # noqa: E402
from atelier.inspection.v1 import inspection_pb2 as pb  # noqa: E402
from atelier.inspection.v1 import inspection_pb2_grpc  # noqa: E402
from atelier.runtime.server import Server  # noqa: E402
from bench.report import bench_config, write_section  # noqa: E402

DATA = ROOT.parent / "shared" / "benchmarks" / "inspection" / "aitex"
FABRICS = {"01": "2608691-202020u", "03": "2311694-1930c7u"}
TRAIN_COUNT = 10
PIXEL_STEP = 2
# Reference implementations on a 2-core machine (data README / issue): image AUROC, pixel AUROC, s per strip.
ANCHORS = {
    "01": [
        ("PatchCore-style kNN, MobileNetV2 (stride 8/16)", 1.000, 0.965, 3.4),
        ("Gabor bank + Mahalanobis", 0.992, 0.938, 0.37),
    ],
    "03": [
        ("PatchCore-style kNN, MobileNetV2 (stride 8/16)", 0.835, 0.897, 3.3),
        ("PatchCore-style kNN, MobileNetV2 (stride 4/8)", 0.903, 0.914, 18.0),
        ("Gabor bank + Mahalanobis", 0.781, 0.858, 0.37),
    ],
}
TARGET_IMAGE_AUROC, TARGET_PIXEL_AUROC, TARGET_S_PER_STRIP = 0.95, 0.95, 0.5


def mask_for(strip: Path) -> np.ndarray:
    parts = sorted((DATA / "Mask_images").glob(f"{strip.stem}_mask*.png"))
    if not parts:
        raise FileNotFoundError(f"no mask for {strip.name}")
    mask = np.zeros(cv2.imread(str(parts[0]), cv2.IMREAD_GRAYSCALE).shape, bool)
    for p in parts:
        mask |= cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127
    return mask


def evaluate(fabric: str) -> dict[str, object]:
    goods = sorted((DATA / "NoDefect_images" / FABRICS[fabric]).glob("*.png"))
    defects = sorted((DATA / "Defect_images").glob(f"*_{fabric}.png"))
    train_images = [imaging.decode(p.read_bytes()).grey for p in goods[:TRAIN_COUNT]]
    started = time.perf_counter()
    model = texture.train(train_images)
    train_s = time.perf_counter() - started

    labels, scores, pixel_labels, pixel_scores, times = [], [], [], [], []
    flagged_good = flagged_bad = hit = 0
    tests = [(p, False) for p in goods[TRAIN_COUNT:]] + [(p, True) for p in defects]
    for path, is_defect in tests:
        data = path.read_bytes()
        t0 = time.perf_counter()
        decoded = imaging.decode(data)
        amap = model.anomaly_map(decoded.grey)
        pad = texture.padding_mask(decoded.grey)
        regions = find_regions(amap, model.threshold, decoded.grey, pad)
        times.append(time.perf_counter() - t0)
        mask = mask_for(path) if is_defect else np.zeros(amap.shape, bool)
        labels.append(int(is_defect))
        scores.append(float(amap.max()))
        keep = ~pad[::PIXEL_STEP, ::PIXEL_STEP]
        pixel_labels.append(mask[::PIXEL_STEP, ::PIXEL_STEP][keep])
        pixel_scores.append(amap[::PIXEL_STEP, ::PIXEL_STEP][keep])
        defective = scores[-1] > model.threshold
        if is_defect:
            flagged_bad += defective
            hit += any(
                mask[r.y_px : r.y_px + r.height_px, r.x_px : r.x_px + r.width_px].any() for r in regions
            )
        else:
            flagged_good += defective
    return {
        "fabric": fabric,
        "train": len(train_images),
        "good_test": len(goods) - TRAIN_COUNT,
        "defect_test": len(defects),
        "image_auroc": roc_auc_score(labels, scores),
        "pixel_auroc": roc_auc_score(np.concatenate(pixel_labels), np.concatenate(pixel_scores)),
        "s_per_strip": statistics.median(times),
        "train_s": train_s,
        "flagged_good": flagged_good,
        "flagged_bad": flagged_bad,
        "hit": hit,
        "model": model,
        "strip": tests[-1][0],
    }


def grpc_seconds(model: texture.TextureModel, strip: Path, goods: list[Path], repeats: int = 5) -> float:
    """Median InspectImage round trip on one strip, through a real server on a socket."""
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config("inspection", Path(tmp))
        server = Server(config, build)
        server.start(metrics_port=0)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=30)
                stub = inspection_pb2_grpc.InspectionServiceStub(channel)
                good = [image_pb2.Image(data=p.read_bytes()) for p in goods[:TRAIN_COUNT]]
                stub.CreateProfile(pb.CreateProfileRequest(article="bench", good_images=good), timeout=600)
                request = pb.InspectImageRequest(
                    article="bench", image=image_pb2.Image(data=strip.read_bytes()), mm_per_px=0.2
                )
                stub.InspectImage(request, timeout=60)  # warm-up: loads the profile
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    stub.InspectImage(request, timeout=60)
                    times.append(time.perf_counter() - t0)
        finally:
            server.stop(grace_s=1)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    parser.add_argument("--no-grpc", action="store_true", help="skip the gRPC round-trip timing")
    args = parser.parse_args()
    if not all((DATA / "NoDefect_images" / d).is_dir() for d in FABRICS.values()):
        print(f"AITEX strips not found in {DATA}: nothing to benchmark")
        return 1
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = []
    for fabric in FABRICS:
        r = evaluate(fabric)
        print(
            f"fabric {fabric}: image AUROC {r['image_auroc']:.3f}, pixel AUROC {r['pixel_auroc']:.3f}, "
            f"{r['s_per_strip'] * 1000:.0f} ms/strip, train {r['train_s']:.1f} s, flagged good "
            f"{r['flagged_good']}/{r['good_test']}, flagged defect {r['flagged_bad']}/{r['defect_test']}, "
            f"region on mask {r['hit']}/{r['defect_test']}",
            flush=True,
        )
        results.append(r)
    grpc_s = None
    if not args.no_grpc:
        goods = sorted((DATA / "NoDefect_images" / FABRICS["03"]).glob("*.png"))
        grpc_s = grpc_seconds(results[-1]["model"], results[-1]["strip"], goods)  # type: ignore[arg-type]
        print(f"gRPC InspectImage round trip: {grpc_s * 1000:.0f} ms", flush=True)
    load_after = os.getloadavg()

    def ok(value: float, target: float, higher: bool = True) -> str:
        return "yes" if (value >= target if higher else value <= target) else "**no**"

    rows = [
        "| fabric | method | image AUROC | pixel AUROC | per strip | train (10 strips) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['fabric']} | **ours: {texture.METHOD}** | **{r['image_auroc']:.3f}** | "
            f"**{r['pixel_auroc']:.3f}** | **{r['s_per_strip']:.2f} s** | {r['train_s']:.0f} s |"
        )
        for name, image_auc, pixel_auc, seconds in ANCHORS[str(r["fabric"])]:
            rows.append(
                f"| {r['fabric']} | {name} (reference) | {image_auc:.3f} | {pixel_auc:.3f} | {seconds} s | |"
            )
    detection = [
        "| fabric | test strips (good + defect) | good strips flagged | defect strips flagged | "
        "a region on the defect's mask |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        detection.append(
            f"| {r['fabric']} | {r['good_test']} + {r['defect_test']} | {r['flagged_good']}/{r['good_test']} | "
            f"{r['flagged_bad']}/{r['defect_test']} | {r['hit']}/{r['defect_test']} |"
        )
    worst_image = min(float(r["image_auroc"]) for r in results)  # type: ignore[arg-type]
    worst_pixel = min(float(r["pixel_auroc"]) for r in results)  # type: ignore[arg-type]
    slowest = max(float(r["s_per_strip"]) for r in results)  # type: ignore[arg-type]
    targets = (
        f"Targets: image AUROC >= {TARGET_IMAGE_AUROC} on both fabrics: {ok(worst_image, TARGET_IMAGE_AUROC)} "
        f"(worst {worst_image:.3f}); pixel AUROC >= {TARGET_PIXEL_AUROC}: {ok(worst_pixel, TARGET_PIXEL_AUROC)} "
        f"(worst {worst_pixel:.3f}); <= {TARGET_S_PER_STRIP} s per strip: "
        f"{ok(slowest, TARGET_S_PER_STRIP, higher=False)} (slowest median {slowest:.2f} s)."
    )
    body = "\n\n".join(
        [
            "AITEX fabrics 01 and 03 (shared/benchmarks/inspection), 256 x 4096 strips. Profile from the first "
            f"{TRAIN_COUNT} defect-free strips of each fabric; test on the remaining defect-free strips and all "
            "defect strips. Image AUROC: strip score = max of the anomaly map. Pixel AUROC: anomaly map vs the "
            f"masks over all test strips, padding excluded, every {PIXEL_STEP}nd pixel each way. Per strip: "
            "median of decode + anomaly map + regions, 2 CPU threads (torch, OpenCV, BLAS). The same settings "
            "for every fabric (nothing tuned per fabric); the references were measured by the issue's author "
            "on the same kind of machine.",
            "\n".join(rows),
            "Detection at the profile's own threshold (calibrated on its 10 good strips only):",
            "\n".join(detection),
            targets,
            "Read with care: (1) 10 of fabric 01's 12 defect strips show the machine bed beside the fabric edge "
            "(its defect-free strips have that area whitened), so those strips' maxima lie on the bed, not "
            "the defect: image AUROC 1.000 there says little, the 'region on the mask' column is the honest "
            "figure. (2) On fabric 03 several maxima sit at the selvage next to the padding; small defects "
            "(neps, fuzzyballs, warp balls of 4-8 px) score near the good strips' maxima and are the misses.",
            (
                f"InspectImage over real gRPC (a defect strip, server on a socket): {grpc_s * 1000:.0f} ms. "
                if grpc_s
                else ""
            )
            + f"Load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f} (2 shared cores); "
            f"total {time.perf_counter() - started:.0f} s. Test sets are small (10 + 12, 10 + 31 strips): "
            "AUROC differences of a few points are within noise.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(
            "inspection", body, "flock /tmp/atelier-bench.lock .venv/bin/python bench/inspection.py"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
