from __future__ import annotations

from collections.abc import Iterator

import pytest

from atelier.body.pose import PoseModel, default_bundle_path, load_pose_model
from atelier.body.statmodel import ANSUR_FILES, read_ansur
from tests.conftest import SHARED_BENCHMARKS

ANSUR_DIR = SHARED_BENCHMARKS / "body"


@pytest.fixture(scope="session")
def ansur() -> dict:
    if not all((ANSUR_DIR / f).exists() for f in ANSUR_FILES.values()):
        pytest.skip(f"ANSUR II CSVs not found in {ANSUR_DIR} (shared benchmark data absent)")
    return {sex: read_ansur(ANSUR_DIR / f) for sex, f in ANSUR_FILES.items()}


@pytest.fixture(scope="module")
def pose() -> Iterator[PoseModel]:
    """The installed MediaPipe pose model (`make venv` installs it), closed after each module."""
    model = load_pose_model(default_bundle_path())
    if model is None:
        pytest.fail("pose model not installed (make venv runs python -m atelier.body.setup_models)")
    if model.matte is None:
        pytest.fail("matte model not installed (make venv runs python -m atelier.body.setup_models)")
    yield model
    model.close()
