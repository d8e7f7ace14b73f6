"""`atelier keys`: API keys bound to tenants and a role, in the keys file (or the key database).

atelier keys create --tenant acme --role write [--name "acme web shop"]   # prints the key once
atelier keys create --tenant acme --tenant zenith --role read             # a platform operator's key
atelier keys list
atelier keys revoke 3f9a0c2b7d41

The store is --file (default $ATELIER_API_KEYS_FILE) or --database (default
$ATELIER_API_KEYS_DATABASE_URL). Only the SHA-256 of each key is stored. In Kubernetes, put the
file in the Secret named by the chart's apiKeys.existingSecret:
kubectl create secret generic atelier-api-keys --from-file=keys=keys.json
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from atelier.runtime.keys import (
    KeyRecord,
    KeyStoreError,
    Role,
    new_key,
    parse_keys_file,
    write_keys_file,
)
from atelier.runtime.keys import (
    revoke as revoke_record,
)

app = typer.Typer(
    help="API keys: create, list and revoke (each bound to tenants and a role).", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)

FileOption = typer.Option(
    None, "--file", help="the keys file (default $ATELIER_API_KEYS_FILE)", show_default=False
)
DatabaseOption = typer.Option(
    None, "--database", help="a key database URL instead (default $ATELIER_API_KEYS_DATABASE_URL)"
)


class _Target:
    """The keys file or the key database, whichever was named."""

    def __init__(self, file: Path | None, database: str | None) -> None:
        self.database = database or (None if file else os.environ.get("ATELIER_API_KEYS_DATABASE_URL"))
        env_file = os.environ.get("ATELIER_API_KEYS_FILE")
        self.file = file or (Path(env_file) if env_file and not self.database else None)
        if not self.file and not self.database:
            err.print(
                "[red]name the key store:[/red] --file keys.json (or ATELIER_API_KEYS_FILE) or --database URL"
            )
            raise typer.Exit(2)

    def load(self) -> list[KeyRecord]:
        try:
            if self.database:
                return self._db().records()
            assert self.file is not None
            if not self.file.exists():
                return []
            return parse_keys_file(self.file.read_text(), str(self.file))
        except KeyStoreError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None

    def save(self, records: list[KeyRecord]) -> None:
        if self.database:
            self._db().replace_all(records)
        else:
            assert self.file is not None
            write_keys_file(self.file, records)

    def _db(self):  # type: ignore[no-untyped-def]
        from atelier.runtime.keys_db import DatabaseKeyStore

        assert self.database is not None
        return DatabaseKeyStore(self.database, require_active=False)

    @property
    def where(self) -> str:
        return f"database {self.database}" if self.database else str(self.file)


@app.command()
def create(
    tenant: list[str] = typer.Option(
        ..., "--tenant", help="a tenant the key may act for (repeat for several)"
    ),
    role: str = typer.Option(..., "--role", help="read, write or admin"),
    name: str = typer.Option("", "--name", help="who or what holds the key"),
    file: Path | None = FileOption,
    database: str | None = DatabaseOption,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    target = _Target(file, database)
    try:
        key, record = new_key(tenant, Role.parse(role), name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    records = target.load()
    if target.database:
        target._db().add(record)
    else:
        target.save([*records, record])
    err.print(
        f"created key {record.id} ({record.role.label}) for {', '.join(record.tenants)} in {target.where}; "
        "store it now, it cannot be shown again:"
    )
    print(key)


@app.command("list")
def list_keys(file: Path | None = FileOption, database: str | None = DatabaseOption) -> None:
    """The keys in the store (ids, tenants, roles; never the keys themselves)."""
    table = Table(title="API keys")
    for column in ("id", "role", "tenants", "name", "created", "revoked"):
        table.add_column(column)
    for r in _Target(file, database).load():
        table.add_row(r.id, r.role.label, ", ".join(r.tenants), r.name, r.created, r.revoked or "-")
    console.print(table)


@app.command()
def revoke(
    key_id: str = typer.Argument(..., help="the key's id (from `atelier keys list`)"),
    file: Path | None = FileOption,
    database: str | None = DatabaseOption,
) -> None:
    """Revoke a key: services refuse it once they re-read the store (seconds)."""
    target = _Target(file, database)
    try:
        records = revoke_record(target.load(), key_id)
    except KeyError:
        err.print(f"[red]no key {key_id!r} in {target.where}[/red]")
        raise typer.Exit(1) from None
    target.save(records)
    err.print(f"revoked key {key_id} in {target.where}")
