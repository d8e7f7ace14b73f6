"""The pose model that `make` installs: in place, with the pinned models, and re-setup is a no-op."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from atelier.body import setup_models
from atelier.body.pose import BUNDLE_NAME, default_bundle_path


def test_installed_bundle_has_the_pinned_models() -> None:
    bundle = default_bundle_path()
    assert setup_models.installed(bundle), f"{bundle} missing or not the pinned models: run `make venv`"
    assert "Apache License" in (bundle.parent / "LICENSE.mediapipe").read_text()[:200]


def test_setup_is_idempotent_and_detects_a_changed_bundle(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(default_bundle_path(), tmp_path / BUNDLE_NAME)
    assert setup_models.main(["--dest", str(tmp_path)]) == 0  # no download: already in place
    assert "already installed" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / BUNDLE_NAME, "a") as zf:
        zf.writestr("extra.tflite", b"not a model")
    assert not setup_models.installed(tmp_path / BUNDLE_NAME)
    assert not setup_models.installed(tmp_path / "absent.task")
