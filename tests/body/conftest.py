from __future__ import annotations

import pytest

from atelier.body.statmodel import ANSUR_FILES, read_ansur
from tests.conftest import SHARED_BENCHMARKS

ANSUR_DIR = SHARED_BENCHMARKS / "body"


@pytest.fixture(scope="session")
def ansur() -> dict:
    if not all((ANSUR_DIR / f).exists() for f in ANSUR_FILES.values()):
        pytest.skip(f"ANSUR II CSVs not found in {ANSUR_DIR} (shared benchmark data absent)")
    return {sex: read_ansur(ANSUR_DIR / f) for sex, f in ANSUR_FILES.items()}
