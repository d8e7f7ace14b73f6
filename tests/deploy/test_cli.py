"""`atelier deploy render|lint`: the chart rendered, validated and written as files people open."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")

from atelier.cli.deploy import app

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = str(REPO / "deploy" / "values-gpu-production.yaml")


def test_render_writes_validated_manifests(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = CliRunner().invoke(
        app,
        [
            "render",
            "-f",
            PRODUCTION,
            "--set",
            "services.trends.replicas=5",
            "--name",
            "shop",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    deployments = [d for d in yaml.safe_load_all((out / "deployment.yaml").read_text()) if d]
    trends = next(d for d in deployments if d["metadata"]["name"] == "shop-atelier-trends")
    assert trends["spec"]["replicas"] == 5  # --set wins over the values file, typed as helm does
    assert (out / "role.yaml").exists() and (out / "NOTES.txt").exists()


def test_render_fails_on_bad_values_with_the_key_named() -> None:
    result = CliRunner().invoke(app, ["render", "--set", "jobs.runner=cluster"])
    assert result.exit_code == 1
    assert "/jobs/runner" in result.output


def test_lint_passes_for_production_values() -> None:
    result = CliRunner().invoke(app, ["lint", "-f", PRODUCTION])
    assert result.exit_code == 0, result.output
    assert "lint passed" in result.output
