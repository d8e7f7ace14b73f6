"""``atelier deploy``: render and check the Helm chart offline, before `helm upgrade --install`.

    atelier deploy render -f deploy/values-gpu-production.yaml --output build/manifests
    atelier deploy lint -f deploy/values-gpu-production.yaml

Uses the real Helm engine (helm-python-sdk) and validates every manifest against the Kubernetes
OpenAPI schemas (kubernetes-validate); both are in the `dev` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Render and check the Helm chart (charts/atelier) offline.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

DEFAULT_CHART = Path(__file__).resolve().parents[3] / "charts" / "atelier"
# Kinds from CRDs (cert-manager, Prometheus Operator) are not in the Kubernetes schemas.
CRD_KINDS = {"Certificate", "ServiceMonitor"}


def _helm() -> Any:
    try:
        import helm_python
    except ImportError:
        err.print("[red]helm-python-sdk is not installed:[/red] pip install -c constraints.txt -e '.[dev]'")
        raise typer.Exit(2) from None
    return helm_python


def _values(files: list[Path], sets: list[str]) -> dict[str, Any]:
    helm = _helm()
    values: dict[str, Any] = {}
    for path in files:
        loaded = yaml.safe_load(path.read_text()) or {}
        values = _merge(values, loaded)
    for item in sets:
        values = _merge(values, helm.parse_set_string(item))
    return values


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge as Helm does for -f and --set: later maps win key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


ValuesOption = typer.Option(
    [], "--values", "-f", exists=True, dir_okay=False, help="values file (repeatable)"
)
SetOption = typer.Option([], "--set", help="key=value override, as in helm --set (repeatable)")
ChartOption = typer.Option(DEFAULT_CHART, "--chart", exists=True, file_okay=False, help="chart directory")


@app.command()
def render(
    values_files: list[Path] = ValuesOption,
    sets: list[str] = SetOption,
    name: str = typer.Option("atelier", help="release name"),
    namespace: str = typer.Option("atelier", help="namespace"),
    output: Path | None = typer.Option(None, help="write one file per template here (default: print)"),
    validate: bool = typer.Option(True, help="validate against the Kubernetes schemas"),
    kube_version: str = typer.Option("1.33", help="Kubernetes version to validate against"),
    chart: Path = ChartOption,
) -> None:
    """Render the chart with the given values; fail on a values or schema error."""
    helm = _helm()
    values = _values(values_files, sets)
    try:
        manifests: dict[str, str] = helm.Chart.load(str(chart)).render(values, name=name, namespace=namespace)
    except helm.HelmError as exc:
        err.print(f"[red]render failed:[/red] {exc}")
        raise typer.Exit(1) from None
    counts: dict[str, int] = {}
    problems: list[str] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
            if validate and doc["kind"] not in CRD_KINDS:
                problems += _validate(doc, kube_version)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for path, text in sorted(manifests.items()):
            if text.strip():
                (output / Path(path).name).write_text(text)
    else:
        for path, text in sorted(manifests.items()):
            if text.strip() and path.endswith(".yaml"):
                console.print(f"# Source: {path}\n{text.strip()}", markup=False, highlight=False)
    table = Table(title=f"release {name} in {namespace}")
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in sorted(counts.items()):
        table.add_row(kind, str(count))
    err.print(table)
    if problems:
        for problem in problems:
            err.print(f"[red]invalid:[/red] {problem}")
        raise typer.Exit(1)
    if output is not None:
        err.print(f"wrote {sum(1 for t in manifests.values() if t.strip())} files to {output}")


def _validate(doc: dict[str, Any], kube_version: str) -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        return []
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}"]
    return []


@app.command()
def lint(
    values_files: list[Path] = ValuesOption,
    sets: list[str] = SetOption,
    chart: Path = ChartOption,
) -> None:
    """helm lint --strict with the given values."""
    helm = _helm()
    report = helm.lint(str(chart), _values(values_files, sets), strict=True)
    severities = {0: "unknown", 1: "info", 2: "warning", 3: "error"}
    for message in report["messages"]:
        colour = "red" if message["severity"] >= 2 else "dim"
        err.print(
            f"[{colour}]{severities.get(message['severity'], '?')}[/{colour}] {message['path']}: "
            f"{message['error']}"
        )
    failed = report["errors"] or any(m["severity"] >= 2 for m in report["messages"])
    err.print("[red]lint failed[/red]" if failed else "[green]lint passed[/green]")
    raise typer.Exit(1 if failed else 0)
