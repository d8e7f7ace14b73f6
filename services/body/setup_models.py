"""Installs the pose model for the body service (run once at setup; never at service run time).

    python -m atelier.body.setup_models [--dest DIR] [--wheel mediapipe-0.10.21-....whl]

Current MediaPipe releases ship no models. ``mediapipe==0.10.21`` is the last release whose
wheel carries ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` (Apache-2.0). This
script downloads that wheel with pip (``--no-deps``: it is never installed, only unzipped),
adds to each model the TFLite metadata the Tasks API needs (image input normalisation:
[-1, 1] for the detector, [0, 1] for the landmark model), and packs them as the
``pose_landmarker.task`` bundle PoseLandmarker loads, beside the wheel's LICENSE.

Default destination: ``$ATELIER_DATA_DIR/models/body`` (the service's ATELIER_BODY_POSE_MODEL default).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

from atelier.runtime.config import default_data_dir

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
MEMBERS = {
    "pose_detector.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite", 127.5, 127.5),
    "pose_landmarks_detector.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", 0.0, 255.0),
}
# Output tensor counts of the two models (the metadata must describe each one).
OUTPUTS = {"pose_detector.tflite": 2, "pose_landmarks_detector.tflite": 5}
BUNDLE_NAME = "pose_landmarker.task"


def default_dest() -> Path:
    return default_data_dir() / "models" / "body"


def _metadata_writer() -> types.ModuleType:
    """mediapipe 1.2.x's pure-Python metadata writer, minus its missing native version helper.

    The helper only computes the minimum metadata parser version; for image normalisation and
    plain feature outputs that version is 1.0.0, so a stand-in returning it is exact.
    """
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name not in sys.modules:
        for parent in ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"):
            module = sys.modules.setdefault(parent, types.ModuleType(parent))
            module.__path__ = []  # type: ignore[attr-defined]
        stand_in = types.ModuleType(name)
        stand_in.GetMinimumMetadataParserVersion = lambda _buf: "1.0.0"  # type: ignore[attr-defined]
        sys.modules[name] = stand_in
        sys.modules["mediapipe.tasks.cc.metadata.python"]._pywrap_metadata_version = stand_in  # type: ignore[attr-defined]
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer


def with_metadata(model: bytes, mean: float, std: float, outputs: int) -> bytes:
    writer = _metadata_writer().MetadataWriter.create(bytearray(model))
    writer.add_general_info("MediaPipe pose", "from mediapipe 0.10.21 (Apache-2.0)")
    writer.add_image_input(norm_mean=[mean], norm_std=[std])
    for i in range(outputs):
        writer.add_feature_output(name=f"output_{i}")
    populated, _ = writer.populate()
    return bytes(populated)


def download_wheel(cache: Path) -> Path:
    found = sorted(cache.glob("mediapipe-0.10.21-*.whl"))
    if found:
        return found[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
         "--platform", "manylinux_2_28_x86_64", "-d", str(cache), WHEEL_REQUIREMENT], check=True)
    return sorted(cache.glob("mediapipe-0.10.21-*.whl"))[0]


def build_bundle(wheel: Path, dest: Path) -> Path:
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    _metadata_writer()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        files = {name: with_metadata(zf.read(member), mean, std, OUTPUTS[name])
                 for name, (member, mean, std) in MEMBERS.items()}
        licence = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE")]
        if licence:
            (dest / "LICENSE.mediapipe").write_bytes(zf.read(licence[0]))
    bundle = dest / BUNDLE_NAME
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / BUNDLE_NAME
        model_asset_bundle_utils.create_model_asset_bundle(files, str(staged))
        bundle.write_bytes(staged.read_bytes())
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the body service's pose model.")
    parser.add_argument("--dest", type=Path, default=default_dest())
    parser.add_argument("--wheel", type=Path, help="a local mediapipe-0.10.21 wheel (skips the download)")
    args = parser.parse_args(argv)
    cache = args.dest / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    wheel = args.wheel or download_wheel(cache)
    bundle = build_bundle(wheel, args.dest)
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()[:16]
    print(f"wrote {bundle} ({bundle.stat().st_size / 1e6:.1f} MB, sha256 {digest}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
