"""Keys bound to tenants and roles, the role of every RPC, settings that fail closed, `atelier keys`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atelier.runtime import keys as keystore
from atelier.runtime.auth import (
    METHOD_ROLES,
    Authoriser,
    InsecureConfigError,
    load_key_store,
    required_role,
    startup_checks,
)
from atelier.runtime.config import ServiceConfig
from atelier.runtime.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from atelier.runtime.keys import FileKeyStore, KeyStoreError, Role, new_key, write_keys_file
from atelier.runtime.registry import GRPC_SERVICES
from atelier.runtime.storage import Store


def bearer(key: str, tenant: str = "") -> dict[str, str]:
    md = {"authorization": f"Bearer {key}"}
    if tenant:
        md["x-atelier-tenant"] = tenant
    return md


@pytest.fixture
def file_keys(tmp_path: Path) -> tuple[FileKeyStore, dict[str, str]]:
    made = {
        "a": new_key(["tenant-a"], Role.WRITE),
        "a_read": new_key(["tenant-a"], Role.READ),
        "operator": new_key(["tenant-a", "tenant-b"], Role.ADMIN),
        "gone": new_key(["tenant-a"], Role.ADMIN),
    }
    records = [r for _, r in made.values()]
    records = keystore.revoke(records, made["gone"][1].id)
    write_keys_file(tmp_path / "keys.json", records)
    return FileKeyStore(tmp_path / "keys.json"), {name: key for name, (key, _) in made.items()}


def test_only_the_hash_is_stored_and_the_file_is_private(tmp_path: Path) -> None:
    key, record = new_key(["acme"], Role.READ, "shop")
    path = tmp_path / "keys.json"
    write_keys_file(path, [record])
    text = path.read_text()
    secret = key.split("_", 2)[2]  # the secret may itself hold "_" (token_urlsafe)
    assert key not in text and secret not in text and record.sha256 in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    (loaded,) = keystore.read_keys_file(path)
    assert loaded == record


def test_authenticate_checks_the_whole_key(file_keys: tuple[FileKeyStore, dict[str, str]]) -> None:
    keys, k = file_keys
    principal = keys.authenticate(k["a"])
    assert principal is not None and principal.tenants == ("tenant-a",) and principal.role == Role.WRITE
    assert (
        keys.authenticate(k["a"][:-1] + ("x" if k["a"][-1] != "x" else "y")) is None
    )  # same id, wrong secret
    assert keys.authenticate(k["gone"]) is None  # revoked
    assert keys.authenticate("not-a-key") is None


def test_tenant_header_only_selects_a_granted_tenant(file_keys: tuple[FileKeyStore, dict[str, str]]) -> None:
    keys, k = file_keys
    auth = Authoriser(keys, default_tenant="default")
    svc, method = "atelier.trends.v1.TrendsService", "ListSeries"
    assert auth.admit(svc, method, bearer(k["a"])).tenant == "tenant-a"
    assert auth.admit(svc, method, bearer(k["a"], "tenant-a")).tenant == "tenant-a"
    with pytest.raises(PermissionDeniedError, match="does not grant tenant 'tenant-b'"):
        auth.admit(svc, method, bearer(k["a"], "tenant-b"))
    assert auth.admit(svc, method, bearer(k["operator"], "tenant-b")).tenant == "tenant-b"
    with pytest.raises(InvalidArgumentError, match="grants several tenants"):
        auth.admit(svc, method, bearer(k["operator"]))  # which one? the caller must say
    with pytest.raises(UnauthenticatedError):
        auth.admit(svc, method, {})
    with pytest.raises(UnauthenticatedError):
        auth.admit(svc, method, bearer(k["gone"]))
    # Without a key the tenant header is not even looked at (no hint that a tenant exists).
    with pytest.raises(UnauthenticatedError):
        auth.admit(svc, method, {"x-atelier-tenant": "Bad Tenant!"})
    assert auth.admit(svc, method, {"x-api-key": k["a"]}).tenant == "tenant-a"
    assert auth.admit("grpc.health.v1.Health", "Check", {}).principal is None


def test_roles_are_ordered_read_write_admin(file_keys: tuple[FileKeyStore, dict[str, str]]) -> None:
    keys, k = file_keys
    auth = Authoriser(keys, default_tenant="default")
    body = "atelier.body.v1.BodyService"
    auth.admit(body, "GetSizeChart", bearer(k["a_read"]))
    with pytest.raises(PermissionDeniedError, match="needs a write key"):
        auth.admit(body, "CreateSizeChart", bearer(k["a_read"]))
    auth.admit(body, "CreateSizeChart", bearer(k["a"]))
    with pytest.raises(PermissionDeniedError, match="needs a admin key"):
        auth.admit(body, "DeleteSizeChart", bearer(k["a"]))
    auth.admit(body, "DeleteSizeChart", bearer(k["operator"], "tenant-a"))
    # An RPC nobody classified needs write: a new RPC is never open to read-only keys by accident.
    assert required_role("atelier.testing.v1.EchoService", "Echo") == Role.WRITE


def test_every_rpc_of_every_contract_has_a_role() -> None:
    import importlib

    listed = {name.split("/")[0] for name in METHOD_ROLES}
    for service, full_name in GRPC_SERVICES.items():
        module = importlib.import_module(f"atelier.{service}.v1.{service}_pb2")
        descriptor = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[-1]]
        for method in descriptor.methods:
            assert f"{full_name}/{method.name}" in METHOD_ROLES, f"{full_name}/{method.name} has no role"
        assert full_name in listed
    from google.longrunning import operations_pb2

    for method in operations_pb2.DESCRIPTOR.services_by_name["Operations"].methods:
        assert f"google.longrunning.Operations/{method.name}" in METHOD_ROLES


def test_a_revoked_key_stops_working_without_a_restart(tmp_path: Path) -> None:
    key, record = new_key(["acme"], Role.READ)
    other_key, other = new_key(["acme"], Role.READ)
    path = tmp_path / "keys.json"
    write_keys_file(path, [record, other])
    keys = FileKeyStore(path, reload_s=0.0)
    assert keys.authenticate(key) is not None
    write_keys_file(path, keystore.revoke([record, other], record.id))
    assert keys.authenticate(key) is None and keys.authenticate(other_key) is not None
    # A broken edit keeps the last good keys (neither open nor locked out), with an error logged.
    path.write_text("{broken")
    assert keys.authenticate(other_key) is not None and keys.authenticate(key) is None


# -- settings that fail closed -------------------------------------------------------------------------


def config(tmp_path: Path, **overrides: object) -> ServiceConfig:
    values: dict[str, object] = {"service": "echo", "data_dir": tmp_path}
    values.update(overrides)
    return ServiceConfig(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("key-one\nkey-two\n", "not a keys file"),
        ('{"format": "atelier-keys/v1", "keys": []}', "no active key"),
        ('{"format": "other", "keys": []}', "expected"),
        ('{"format": "atelier-keys/v1", "keys": [{"id": "zz"}]}', "keys[0].id"),
    ],
)
def test_bad_keys_files_refuse_to_start(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(InsecureConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_key_store(config(tmp_path, api_keys_file=str(path)))


def test_all_keys_revoked_or_unreadable_file_refuses_to_start(tmp_path: Path) -> None:
    _, record = new_key(["acme"], Role.READ)
    path = tmp_path / "keys.json"
    write_keys_file(path, keystore.revoke([record], record.id))
    with pytest.raises(InsecureConfigError, match="no active key"):
        load_key_store(config(tmp_path, api_keys_file=str(path)))
    with pytest.raises(InsecureConfigError, match="cannot be read"):
        load_key_store(config(tmp_path, api_keys_file=str(tmp_path / "missing.json")))
    if os.geteuid() != 0:  # root reads any file
        path.chmod(0)
        with pytest.raises(InsecureConfigError, match="cannot be read"):
            load_key_store(config(tmp_path, api_keys_file=str(path)))


def test_two_key_stores_at_once_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(InsecureConfigError, match="choose one key store"):
        load_key_store(config(tmp_path, api_keys_file="/k.json", api_keys_database_url="sqlite://"))


def test_non_loopback_without_keys_needs_insecure(tmp_path: Path) -> None:
    assert "WITHOUT API keys" in startup_checks(config(tmp_path, host="127.0.0.1"), None)
    assert "WITHOUT API keys" in startup_checks(config(tmp_path, host="::1"), None)
    for host in ("0.0.0.0", "10.1.2.3", "::", "atelier.example.com"):
        with pytest.raises(InsecureConfigError, match="ATELIER_INSECURE=1"):
            startup_checks(config(tmp_path, host=host), None)
    assert "ATELIER_INSECURE=1" in startup_checks(config(tmp_path, host="0.0.0.0", insecure=True), None)
    with pytest.raises(InsecureConfigError, match="ATELIER_REFLECTION"):
        startup_checks(config(tmp_path, reflection="sometimes"), None)


def test_plain_api_keys_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_API_KEYS", "a,b")
    with pytest.raises(ValueError, match="atelier keys create"):
        ServiceConfig.from_env("nesting")


def test_security_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ATELIER_API_KEYS_FILE": "/k.json",
        "ATELIER_INSECURE": "1",
        "ATELIER_TLS_CERT_FILE": "/c",
        "ATELIER_TLS_KEY_FILE": "/k",
        "ATELIER_TLS_CLIENT_CA_FILE": "/ca",
        "ATELIER_TLS_CLIENT_AUTH": "true",
        "ATELIER_NESTING_HEALTH_PORT": "8081",
        "ATELIER_REFLECTION": "KEY",
    }.items():
        monkeypatch.setenv(name, value)
    c = ServiceConfig.from_env("nesting")
    assert (c.api_keys_file, c.insecure, c.tls_cert_file, c.tls_key_file) == ("/k.json", True, "/c", "/k")
    assert (c.tls_client_ca_file, c.tls_client_auth, c.health_port, c.reflection) == (
        "/ca",
        True,
        8081,
        "key",
    )


# -- atelier keys ----------------------------------------------------------------------------------------


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    from atelier.cli.main import app

    path = tmp_path / "secret" / "keys.json"
    runner = CliRunner()
    made = runner.invoke(
        app,
        ["keys", "create", "--file", str(path), "--tenant", "acme", "--tenant", "zenith", "--role", "read"],
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    principal = FileKeyStore(path).authenticate(key)
    assert principal is not None and principal.tenants == ("acme", "zenith") and principal.role == Role.READ
    listed = runner.invoke(app, ["keys", "list", "--file", str(path)])
    assert principal.key_id in listed.stdout and key not in listed.stdout
    bad = runner.invoke(app, ["keys", "create", "--file", str(path), "--tenant", "Acme!", "--role", "read"])
    assert bad.exit_code != 0
    bad = runner.invoke(app, ["keys", "create", "--file", str(path), "--tenant", "acme", "--role", "root"])
    assert bad.exit_code != 0
    assert runner.invoke(app, ["keys", "revoke", "--file", str(path), "ffffffffffff"]).exit_code == 1
    assert runner.invoke(app, ["keys", "revoke", "--file", str(path), principal.key_id]).exit_code == 0
    (record,) = json.loads(path.read_text())["keys"]
    assert record["revoked"]
    with pytest.raises(KeyStoreError, match="no active key"):
        FileKeyStore(path)


def test_keys_in_a_shared_database(store: Store, tmp_path: Path) -> None:
    from atelier.runtime.keys_db import DatabaseKeyStore

    with pytest.raises(KeyStoreError, match="no active key"):
        DatabaseKeyStore(store)
    admin = DatabaseKeyStore(store, require_active=False)
    key, record = new_key(["acme"], Role.WRITE)
    admin.add(record)
    service = DatabaseKeyStore(store, cache_s=60)
    principal = service.authenticate(key)
    assert principal is not None and principal.tenants == ("acme",)
    admin.replace_all(keystore.revoke(admin.records(), record.id))
    assert service.authenticate(key) is not None  # cached for cache_s
    service._cache.clear()  # what cache_s seconds do on their own
    assert service.authenticate(key) is None
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    DatabaseKeyStore(url, require_active=False).add(new_key(["acme"], Role.READ)[1])
    assert load_key_store(config(tmp_path, api_keys_database_url=url)) is not None


def test_an_unreachable_key_database_is_unavailable_not_open(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from atelier.runtime.errors import UnavailableError
    from atelier.runtime.keys_db import DatabaseKeyStore

    url = f"sqlite:///{tmp_path / 'keys.db'}"
    key, record = new_key(["acme"], Role.READ)
    service = DatabaseKeyStore(url, require_active=False)
    service.add(record)
    service.store.engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'keys.db'}")  # cannot open
    with pytest.raises(UnavailableError):
        service.authenticate(key)
    with pytest.raises(InsecureConfigError, match="cannot be used"):
        load_key_store(config(tmp_path, api_keys_database_url="postgresql://nobody@127.0.0.1:1/keys"))


def test_make_run_says_first_that_it_runs_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.cli.main import app
    from atelier.runtime import supervisor

    started: list[list[str]] = []
    monkeypatch.setattr(supervisor, "run", lambda services: started.append(list(services)) or 0)
    for name in ("ATELIER_API_KEYS_FILE", "ATELIER_API_KEYS_DATABASE_URL", "ATELIER_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["serve", "nesting"])
    assert result.exit_code == 0 and started == [["nesting"]]
    assert result.stdout.splitlines()[0].startswith("No API keys")
    monkeypatch.setenv("ATELIER_API_KEYS", "k1")
    refused = CliRunner().invoke(app, ["serve", "nesting"])
    assert refused.exit_code == 2 and "atelier keys create" in refused.stdout
