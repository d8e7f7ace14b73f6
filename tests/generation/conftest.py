"""Tiny model directories built once per test session (random weights, no downloads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atelier.generation import testing


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with a diffusers checkpoint 'tiny' and a ControlNet 'tiny-scribble'."""
    root = tmp_path_factory.mktemp("models")
    testing.write_tiny_model(root / "tiny", seed=0)
    testing.write_tiny_controlnet(root / "tiny-scribble", seed=1)
    return root


@pytest.fixture
def models_dir(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A per-test copy, so a test may add broken models without affecting others."""
    target = tmp_path / "models"
    shutil.copytree(tiny_models_dir, target)
    return target
