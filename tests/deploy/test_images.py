"""The Dockerfiles cannot be built here (no Docker engine): these checks keep them consistent with
pyproject.toml, constraints.txt and the chart (pins, Python version, non-root user, stages)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": REPO / "deploy" / "Dockerfile", "cuda": REPO / "deploy" / "Dockerfile.cuda"}


def args_of(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def pinned(name: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in constraints.txt")


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_pins_match_the_project(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    args = args_of(text)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "torch==" + args["TORCH_VERSION"] in pyproject["project"]["dependencies"]
    assert args["TORCH_VERSION"] == pinned("torch")
    # The base is a fully pinned Python of the version the project requires.
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", args["PYTHON_IMAGE"])
    assert match, args["PYTHON_IMAGE"]
    assert (
        pyproject["project"]["requires-python"] == f">={match[1]}.{match[2]},<{match[1]}.{int(match[2]) + 1}"
    )
    assert "pip install -c constraints.txt ." in text
    index = "whl/cpu" if variant == "cpu" else "whl/${TORCH_CUDA}"
    assert f"https://download.pytorch.org/{index}" in text
    if variant == "cuda":
        assert re.fullmatch(r"cu\d{3}", args["TORCH_CUDA"])


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage_and_non_root(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, flags=re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "COPY --from=build /opt/atelier /opt/atelier" in runtime
    assert "build-essential" not in runtime  # compilers stay in the build stage
    users = re.findall(r"^USER (\d+):(\d+)$", runtime, flags=re.M)
    values = yaml.safe_load((REPO / "charts" / "atelier" / "values.yaml").read_text())
    assert users == [
        (str(values["podSecurityContext"]["runAsUser"]), str(values["podSecurityContext"]["runAsGroup"]))
    ]
    assert "ATELIER_HOST=0.0.0.0" in runtime
    # Only files that exist are copied into the image.
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), path


def test_chart_uses_the_cuda_image_for_generation_only() -> None:
    values = yaml.safe_load((REPO / "charts" / "atelier" / "values.yaml").read_text())
    assert values["services"]["generation"]["image"]["repository"].endswith("atelier-cuda")
    assert values["image"]["repository"].endswith("/atelier")
    for name, svc in values["services"].items():
        if name != "generation":
            assert not svc["image"], name


def test_cpu_image_installs_the_pose_model_where_the_body_service_looks() -> None:
    text = DOCKERFILES["cpu"].read_text()
    build = text.split("AS runtime", 1)[0]
    assert "RUN python -m atelier.body.setup_models" in build  # in the build stage, inside /opt/atelier
    # The default lies under the interpreter's prefix, i.e. /opt/atelier in the image (copied whole).
    import sys

    from atelier.body import setup_models

    assert setup_models.default_dest().is_relative_to(sys.prefix)


def test_both_images_install_the_clip_vocabulary_for_drop_in_checkpoints() -> None:
    for name in ("cpu", "cuda"):
        build = DOCKERFILES[name].read_text().split("AS runtime", 1)[0]
        assert "RUN python -m atelier.generation.setup_assets" in build, name  # inside /opt/atelier


def test_cpu_image_ends_with_contribs_cv2_as_the_venv_does() -> None:
    """The body outline is guided-filtered only with contrib's ximgproc (BENCHMARKS 18n): the image,
    like `make venv`, reinstalls opencv-contrib-python after the project, whose headless cv2 may
    have been written last."""
    build = DOCKERFILES["cpu"].read_text().split("AS runtime", 1)[0]
    project = build.index("pip install -c constraints.txt .")
    contrib = build.index("--force-reinstall -c constraints.txt opencv-contrib-python")
    assert project < contrib < build.index("RUN python -m atelier.body.setup_models")
