"""The ``atelier`` command for people.

atelier serve                 # every service on localhost (what `make run` runs)
atelier status                # health of every service
atelier <group> ...           # one group per service: gen, body, nest, inspect, trends, recs
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from atelier.cli import client
from atelier.runtime.config import DEFAULT_PORTS, ServiceConfig
from atelier.runtime.registry import GRPC_SERVICES, SERVICES

app = typer.Typer(help="Atelier: AI for fashion retail and production.", no_args_is_help=True)
console = Console()

# Subcommand groups, added as each service lands: name on the command line -> module with `app`.
GROUPS = {
    "gen": "atelier.cli.generation",
    "body": "atelier.cli.body",
    "nest": "atelier.cli.nesting",
    "inspect": "atelier.cli.inspection",
    "trends": "atelier.cli.trends",
    "recs": "atelier.cli.recommendations",
    "deploy": "atelier.cli.deploy",
    "keys": "atelier.cli.keys",
}
for _group, _module in GROUPS.items():
    if importlib.util.find_spec(_module) is not None:
        app.add_typer(importlib.import_module(_module).app, name=_group)


@app.command()
def serve(
    services: list[str] = typer.Argument(None, help="services to run (default: all)"),
) -> None:
    """Run services on localhost, each in its own process, until Ctrl-C."""
    from atelier.runtime import supervisor

    chosen = services or list(SERVICES)
    unknown = [s for s in chosen if s not in SERVICES]
    if unknown:
        raise typer.BadParameter(
            f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}"
        )
    try:
        configs = {name: ServiceConfig.from_env(name) for name in chosen}
    except ValueError as exc:
        console.print(f"[red]not starting:[/red] {exc}")
        raise typer.Exit(2) from None
    if not any(c.api_keys_file or c.api_keys_database_url for c in configs.values()):
        # The first thing `make run` says: who may call these servers.
        console.print(
            "[yellow]No API keys[/yellow] (ATELIER_API_KEYS_FILE unset): any local caller may act for any "
            'tenant. Fine on localhost; see README.md "Security" before exposing a port.'
        )
    table = Table(title="Atelier on localhost")
    for column in ("service", "gRPC", "metrics"):
        table.add_column(column)
    for name, config in configs.items():
        table.add_row(
            name, f"{config.host}:{config.port}", f"http://{config.host}:{config.metrics_port}/metrics"
        )
    console.print(table)
    console.print("Ctrl-C stops them all. `atelier status` (in another terminal) shows their health.")
    raise typer.Exit(supervisor.run(chosen))


@app.command()
def status(
    host: str = typer.Option(os.environ.get("ATELIER_HOST", "127.0.0.1"), help="where the services run"),
    timeout: float = typer.Option(2.0, help="seconds to wait for each service"),
) -> None:
    """Health of every service (grpc.health.v1)."""
    table = Table(title="Atelier services")
    for column in ("service", "address", "health"):
        table.add_column(column)
    all_ok = True
    for name in SERVICES:
        port = int(os.environ.get(f"ATELIER_{name.upper()}_PORT", DEFAULT_PORTS[name][0]))
        address = f"{host}:{port}"
        with client.channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=GRPC_SERVICES[name]), timeout=timeout
                )
                state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                state = "UNREACHABLE" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code().name
        all_ok &= state == "SERVING"
        colour = "green" if state == "SERVING" else "red"
        table.add_row(name, address, f"[{colour}]{state}[/{colour}]")
    console.print(table)
    raise typer.Exit(0 if all_ok else 1)


@app.command()
def config(service: str = typer.Argument(..., help="a service name")) -> None:
    """Print the configuration a service would run with (from the environment)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"choose from {', '.join(SERVICES)}")
    import sqlalchemy as sa

    for key, value in vars(ServiceConfig.from_env(service)).items():
        shown = value
        if key in ("database_url", "api_keys_database_url") and value:
            shown = sa.engine.make_url(value).render_as_string(hide_password=True)
        console.print(f"{key} = {shown}")
    if service == "generation":
        from atelier.generation.paths import models_dir

        console.print(f"models_dir = {models_dir()}")
        a1111 = ServiceConfig.from_env(service).setting("A1111_PORT", "").strip()
        console.print(f"a1111_port = {a1111 or 'off'} (the A1111-compatible HTTP API)")


if __name__ == "__main__":
    app()
