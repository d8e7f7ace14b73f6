"""The body photo path on real photos of people: refusals, quality hints and overlays to look at.

    .venv/bin/python bench/body_photos.py [--photos DIR ...] [--out DIR] [--height-cm 170]

The shared photos (../shared/benchmarks/body/photos/) and the ones kept with the tests
(tests/body/photos/; see each folder's README for sources and licences) come without heights or
tape measurements: each is measured as a front photo of a person of the stated height (170 cm
unless given), so the numbers on the overlays are not accuracy figures. What is checked: is the
photo refused, and if so does the message name the fix; does the outline follow the person (look
at the overlay); where a reference mask is shared (``<name>_mask.png``), its IoU; and for each
measured photo, are crops that really cut the person off refused for that end, and are tight
frames measured with the same height scale.
Overlays (outline, landmarks, shoulder points, height scale, level lines) are written as small PNGs
to ``--out`` with a README.md table of the outcome.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atelier.body.photo import PhotoError, decode, exif_focal_35mm, measure, segment  # noqa: E402
from atelier.body.pose import default_bundle_path, load_pose_model  # noqa: E402
from atelier.body.statmodel import BodyModel  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "body" / "photos"
KEPT = REPO / "tests" / "body" / "photos"
OUT = REPO / "docs" / "body-real-photos"
MAX_SIDE_PX = 420  # overlays are reduced to this for the repository (about 200 KB each)


def _small(png: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    scale = min(1.0, MAX_SIDE_PX / max(img.shape[:2]))
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else img


def refused_overlay(image_rgb: np.ndarray, pose_model, reason: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The photo with every person the pose model found tinted, and the refusal written on it."""
    out = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    colours = [(0, 200, 255), (255, 120, 0), (0, 255, 120), (255, 0, 200), (120, 120, 255)]
    for i, pose in enumerate(pose_model.detect(image_rgb) if pose_model is not None else []):
        m = pose.mask
        out[m] = 0.5 * out[m] + 0.5 * np.array(colours[i % len(colours)])
    out = out.astype(np.uint8)
    scale = min(1.0, MAX_SIDE_PX / max(out.shape[:2]))
    out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else out
    words, line, y = reason.split(), "", 18
    for word in words:
        if len(line) + len(word) > 60:
            cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
            line, y = "", y + 16
        line += word + " "
    cv2.putText(out, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1, cv2.LINE_AA)
    return out


# Crops of a measured photo that really cut the person off (shares of the outline's height from its
# top, through the hair, forehead and eyes; from its bottom, above the toes, through the ankles and
# the shins), and tight frames (px left around head and feet) that must still be measured.
HEAD_CUTS = (0.02, 0.04, 0.06)
FEET_CUTS = (0.985, 0.95, 0.85)
TIGHT_MARGINS_PX = (3, 12)


def framing_row(image: np.ndarray, pose) -> str | None:  # type: ignore[no-untyped-def]
    """One table row: how many of the really cut-off crops are refused for the right end, and
    whether the tight frames are measured with the loose frame's height scale."""
    try:
        loose = segment(image, pose, "front")
    except PhotoError:
        return None
    ys = np.nonzero(loose.mask)[0]
    top, bottom = int(ys.min()), int(ys.max())
    tall = bottom - top

    def refused(crop: np.ndarray, end: str) -> bool:
        try:
            segment(np.ascontiguousarray(crop), pose, "front")
        except PhotoError as exc:
            return f"{end} outside" in exc.reason
        return False

    head = sum(refused(image[top + int(s * tall) :], "head") for s in HEAD_CUTS)
    feet = sum(refused(image[: top + int(s * tall)], "feet") for s in FEET_CUTS)
    scale = loose.bottom_px - loose.top_px
    tight = []
    for margin in TIGHT_MARGINS_PX:
        try:
            view = segment(
                np.ascontiguousarray(image[max(0, top - margin) : bottom + margin + 1]), pose, "front"
            )
            tight.append(f"{margin} px: {(view.bottom_px - view.top_px) / scale - 1:+.1%}")
        except PhotoError as exc:
            tight.append(f"{margin} px: refused ({exc.reason[:50]}...)")
    return f"{head} of {len(HEAD_CUTS)} | {feet} of {len(FEET_CUTS)} | {'; '.join(tight)} |"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--photos", type=Path, action="append", help=f"photo folder (repeatable; default {DATA} and {KEPT})"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--height-cm", type=float, default=170.0)
    args = parser.parse_args()
    pose = load_pose_model(
        Path(os.environ.get("ATELIER_BODY_POSE_MODEL", default_bundle_path())),
        os.environ.get("ATELIER_BODY_MATTE_MODEL"),
    )
    model = BodyModel.load()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        "| photo | outcome | quality | retake hints / refusal | segmentation | pitch | reference mask IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    framing = [
        "| photo | cut through hair / forehead / eyes: refused (head) | above the toes / ankles / shins: "
        "refused (feet) | tight frames: height scale vs the loose frame |",
        "|---|---|---|---|",
    ]
    folders = args.photos or [DATA, KEPT]
    for path in sorted(p for folder in folders for p in folder.glob("*")):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or path.stem.endswith("_mask"):
            continue
        data = path.read_bytes()
        image = decode(data, "front")
        iou = "–"
        reference = path.with_name(path.stem + "_mask.png")
        if reference.exists() and pose is not None:
            truth = cv2.imread(str(reference), cv2.IMREAD_GRAYSCALE) > 127
            try:
                got = segment(image, pose, "front").mask
                iou = f"{(got & truth).sum() / (got | truth).sum():.3f}"
            except PhotoError:
                pass
        name = path.stem + "_overlay.png"
        try:
            # The lens as the service takes it: the photo's EXIF where it gives one.
            result = measure(
                image,
                None,
                args.height_cm,
                0.0,
                None,
                model,
                pose,
                overlay=True,
                focal_35mm=exif_focal_35mm(data),
            )
        except PhotoError as exc:
            cv2.imwrite(str(args.out / name), refused_overlay(image, pose, exc.reason))
            rows.append(f"| [{path.name}]({name}) | refused | – | {exc.reason} | – | – | {iou} |")
            continue
        cv2.imwrite(str(args.out / name), _small(result.front_overlay_png))
        row = framing_row(image, pose) if pose is not None else None
        if row is not None:
            framing.append(f"| {path.name} | {row}")
        quality = result.front_quality
        hints = "; ".join(quality.issues) if quality and quality.issues else "none"
        rows.append(
            f"| [{path.name}]({name}) | measured ({result.photo_values_used} photo values) | "
            f"{quality.score if quality else 0:.2f} | {hints} | {result.segmentation_method} | "
            f"{result.camera_pitch_deg:+.1f} | {iou} |"
        )
    if pose is not None:
        pose.close()
    table = "\n".join(rows)
    framing_table = "\n".join(framing)
    print(table + "\n\n" + framing_table)
    (args.out / "README.md").write_text(
        "# The body photo path on real photos\n\n"
        "Written by `.venv/bin/python bench/body_photos.py` (see its docstring). Each photo is measured as "
        f"the front photo of a person {args.height_cm:.0f} cm tall (the photos have no heights): the numbers on "
        "the overlays are not accuracy figures. Overlays: outline (orange), landmarks and skeleton, shoulder "
        "points (blue crosses), height scale from head top to heels (red), level lines (magenta); a refused "
        "photo shows the people the pose model found, tinted, and the refusal.\n\n"
        + table
        + "\n\nReally cut off and tightly framed: each measured photo cropped through the person's hair, "
        "forehead and eyes (2, 4, 6% of the outline's height from its top) and above the toes, through the "
        "ankles and the shins (1.5, 5, 15% from its bottom), each of which must be refused for that end; and "
        "framed 3 and 12 px around the outline, which must be measured, with the height scale (head top to "
        "floor) of the photo as taken.\n\n"
        + framing_table
        + "\n\nSources and licences of the photos (the overlays are derived from them and carry the same terms): "
        "`pifu_ryota.png` from shunsukesaito/PIFu (MIT); `openpifpaf_coco_000000541055_skiers.jpg` COCO val2017, "
        "CC BY 2.0, photo by Jarrod Doll; `openpifpaf_wholebody_soccer.jpeg`, CC BY 4.0, photo by Lokomotive74 "
        "(Wikimedia Commons); `maxobjdet_pexels_dog-human.jpg`, Pexels photo 532310 (listed as CC0) "
        "(details: ../shared/benchmarks/body/photos/README.md); `yogait_*.jpg` from IBM/yogait, CC0; "
        "`coco_000000000785_skier.jpg` (Flickr 6795644157) and `coco_000000234748_leaning.jpg` (Flickr "
        "5056705611), COCO, CC BY 2.0; `nasa_as11-40-5903_astronaut.jpg`, NASA, public domain (details: "
        "../../tests/body/photos/README.md).\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
