"""The artefact store: the database (SQLite and PostgreSQL) and S3 (moto's server, over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from atelier.runtime.artefacts import (
    ArtefactNotFound,
    DatabaseArtefacts,
    S3Artefacts,
    artefacts_from_env,
    check_key,
    get_or_legacy_file,
    open_artefacts,
    safe_part,
)
from atelier.runtime.storage import Store


def _roundtrip(artefacts: DatabaseArtefacts | S3Artefacts) -> None:
    key = "inspection/profiles/acme-1a2b3c4d/denim-12-0a0b0c0d/0f.npz"
    assert not artefacts.exists(key)
    with pytest.raises(ArtefactNotFound):
        artefacts.get(key)
    payload = bytes(range(256)) * 64 + b"\0"
    artefacts.put(key, payload)
    assert artefacts.exists(key) and artefacts.get(key) == payload
    artefacts.put(key, b"second")  # a put replaces
    assert artefacts.get(key) == b"second"
    artefacts.delete(key)
    assert not artefacts.exists(key)


def test_database_artefacts(store: Store) -> None:
    artefacts = DatabaseArtefacts(store)
    _roundtrip(artefacts)
    # A second replica on the same database sees what the first put.
    DatabaseArtefacts(store).put("a/b.bin", b"shared")
    assert artefacts.get("a/b.bin") == b"shared"


def test_database_artefacts_detect_corruption(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from atelier.runtime.artefacts import artefacts_table

    artefacts = DatabaseArtefacts(Store(f"sqlite:///{tmp_path / 'a.db'}"))
    artefacts.put("x.bin", b"good bytes")
    with artefacts.store.engine.begin() as conn:
        conn.execute(sa.update(artefacts_table).values(data=b"bad bytes!"))
    with pytest.raises(OSError, match="corrupt"):
        artefacts.get("x.bin")


def test_s3_artefacts_on_moto_server(s3_bucket: dict[str, str]) -> None:
    artefacts = S3Artefacts(f"s3://{s3_bucket['bucket']}/atelier", endpoint_url=s3_bucket["endpoint"])
    artefacts.check()
    _roundtrip(artefacts)
    # Above 8 MiB boto3 uploads in parts; the object reads back whole.
    big = os.urandom(9 * 1024 * 1024)
    artefacts.put("recommendations/models/t/model-big.npz", big)
    assert artefacts.get("recommendations/models/t/model-big.npz") == big
    listed = artefacts.client.list_objects_v2(Bucket=s3_bucket["bucket"], Prefix="atelier/")
    assert [o["Key"] for o in listed["Contents"]] == ["atelier/recommendations/models/t/model-big.npz"]


def test_s3_missing_bucket_fails_at_start(s3_bucket: dict[str, str], tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        open_artefacts(
            Store(f"sqlite:///{tmp_path / 'a.db'}"), "s3://no-such-bucket/x", s3_bucket["endpoint"]
        )


def test_choice_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_bucket: dict[str, str]) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(artefacts_from_env(store, "inspection"), DatabaseArtefacts)
    monkeypatch.setenv("ATELIER_INSPECTION_ARTEFACTS_URL", f"s3://{s3_bucket['bucket']}/p")
    monkeypatch.setenv("ATELIER_S3_ENDPOINT_URL", s3_bucket["endpoint"])
    chosen = artefacts_from_env(store, "inspection")
    assert isinstance(chosen, S3Artefacts) and chosen.location == f"s3://{s3_bucket['bucket']}/p"
    assert isinstance(artefacts_from_env(store, "trends"), DatabaseArtefacts)
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_artefacts(store, "ftp://x")


def test_keys_are_safe_relative_paths(tmp_path: Path) -> None:
    for bad in ("", "/abs", "a/../b", "a//b", "a b", "x" * 600, "../up"):
        with pytest.raises(ValueError):
            check_key(bad)
    assert check_key("a/b-1.c_d/e.npz") == "a/b-1.c_d/e.npz"
    part = safe_part("ACME retail/../ü")
    assert check_key(part) == part and part != safe_part("ACME retail/../u")
    # Rows written before the artefact store name a file in the data dir: read while it is there.
    legacy = tmp_path / "old.npz"
    legacy.write_bytes(b"old")
    artefacts = DatabaseArtefacts(Store(f"sqlite:///{tmp_path / 'a.db'}"))
    assert get_or_legacy_file(artefacts, str(legacy), legacy) == b"old"
    legacy.unlink()
    with pytest.raises(ArtefactNotFound):
        get_or_legacy_file(artefacts, str(legacy), legacy)
