"""Artefacts: the bytes a service trains or produces (inspection profiles, recommendation model
versions, files a job returns), kept where every replica and every restarted pod finds them.

A pod's data directory is scratch (an ``emptyDir`` in the chart); nothing a user needs lives there.
An artefact is written whole under a key and never changed: a new version is a new key, and the
service's own table row (written after the put) is what makes it visible. So a reader sees a
version only once its bytes are there, and a replica that lacks a version loads it by key.

Two stores, chosen by ``ATELIER_ARTEFACTS_URL``:

- empty (the default): the service's database, table ``atelier_artefacts`` (SQLite locally,
  PostgreSQL in the chart, shared by every replica). Simple, transactional, nothing else to run.
- ``s3://bucket/prefix``: S3-compatible object storage (AWS S3, MinIO, Ceph...) through boto3,
  for large artefacts. ``ATELIER_S3_ENDPOINT_URL`` points at a non-AWS server (path-style
  addressing); credentials come from boto3's usual chain (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, a web identity on EKS...). The bucket must exist.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa

from atelier.runtime.storage import Migration, Store, create_tables, utcnow

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
MAX_KEY_CHARS = 512

_metadata = sa.MetaData()
artefacts_table = sa.Table(
    "atelier_artefacts",
    _metadata,
    sa.Column("key", sa.String(MAX_KEY_CHARS), primary_key=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
MIGRATIONS = [Migration(1, "create atelier_artefacts", create_tables(artefacts_table))]


class ArtefactNotFound(LookupError):
    pass


def check_key(key: str) -> str:
    """Keys are relative paths of safe names ("inspection/profiles/<tenant>/<article>/<id>.npz")."""
    if len(key) > MAX_KEY_CHARS or not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"not a valid artefact key: {key!r}")
    return key


def safe_part(name: str) -> str:
    """A key component for any name (tenant, article): readable, and unique through a hash suffix."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40].lstrip("._-") or "x"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class ArtefactStore(Protocol):
    """Where artefact bytes live. Keys are written once; put of an existing key replaces it."""

    @property
    def location(self) -> str: ...  # for logs and `atelier config`: "database" or "s3://bucket/prefix"

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...  # raises ArtefactNotFound

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


class DatabaseArtefacts:
    """Artefacts as rows of the service's own database (the default)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("runtime.artefacts", MIGRATIONS)

    @property
    def location(self) -> str:
        return f"database ({self.store.dialect})"

    def put(self, key: str, data: bytes) -> None:
        t = artefacts_table
        values = {
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "create_time": utcnow(),
            "data": data,
        }
        with self.store.engine.begin() as conn:
            # Delete + insert in one transaction: the same on SQLite and PostgreSQL, and a reader
            # sees the old bytes or the new ones, never neither.
            conn.execute(t.delete().where(t.c.key == check_key(key)))
            conn.execute(t.insert().values(key=key, **values))

    def get(self, key: str) -> bytes:
        t = artefacts_table
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.data, t.c.sha256).where(t.c.key == check_key(key))).first()
        if row is None:
            raise ArtefactNotFound(f"artefact {key!r} is not in the database")
        data = bytes(row.data)
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise OSError(f"artefact {key!r} is corrupt: its checksum does not match")
        return data

    def exists(self, key: str) -> bool:
        t = artefacts_table
        with self.store.engine.connect() as conn:
            return conn.scalar(sa.select(t.c.size_bytes).where(t.c.key == check_key(key))) is not None

    def delete(self, key: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(artefacts_table.delete().where(artefacts_table.c.key == check_key(key)))


class S3Artefacts:
    """Artefacts as objects in an S3-compatible bucket (boto3; multipart for large ones)."""

    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any | None = None,
    ) -> None:
        if not url.startswith("s3://"):
            raise ValueError(f"an S3 artefact URL looks like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": 5, "mode": "standard"},
                # MinIO and most S3-compatible servers serve buckets as paths, not subdomains.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            )
            client = boto3.client(
                "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
            )
        self.client = client

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """Fails early (at start, not at the first save) when the bucket is missing or forbidden."""
        self.client.head_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes) -> None:
        # upload_fileobj switches to a multipart upload above 8 MiB; the object appears whole.
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._object(key))

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        buf = io.BytesIO()
        try:
            self.client.download_fileobj(self.bucket, self._object(key), buf)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtefactNotFound(f"artefact {key!r} is not in {self.location}") from None
            raise
        return buf.getvalue()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))


def open_artefacts(
    store: Store, url: str = "", endpoint_url: str = "", region: str = ""
) -> DatabaseArtefacts | S3Artefacts:
    """The artefact store for a URL: "" = the database behind ``store``; ``s3://bucket/prefix``."""
    url = url.strip()
    if not url or url == "database":
        return DatabaseArtefacts(store)
    if url.startswith("s3://"):
        s3 = S3Artefacts(url, endpoint_url=endpoint_url or None, region=region or None)
        s3.check()
        return s3
    raise ValueError(f"ATELIER_ARTEFACTS_URL must be empty (the database) or s3://bucket/prefix, got {url!r}")


def artefacts_from_env(store: Store, service: str = "") -> DatabaseArtefacts | S3Artefacts:
    """The store that ATELIER_[<SERVICE>_]ARTEFACTS_URL, _S3_ENDPOINT_URL and _S3_REGION name: what a
    worker process (a Kubernetes Job, a subprocess) uses to write where its service reads."""

    def env(name: str) -> str:
        specific = f"ATELIER_{service.upper()}_{name}" if service else ""
        if specific and specific in os.environ:
            return os.environ[specific]
        return os.environ.get(f"ATELIER_{name}", "")

    return open_artefacts(store, env("ARTEFACTS_URL"), env("S3_ENDPOINT_URL"), env("S3_REGION"))


def get_or_legacy_file(artefacts: ArtefactStore, key: str, legacy: Path | None) -> bytes:
    """An artefact's bytes; for rows written before the artefact store existed (a file in the data
    directory), the file while it is still there."""
    try:
        return artefacts.get(key)
    except (ArtefactNotFound, ValueError):
        if legacy is not None and legacy.is_file():
            log.warning("reading %s from a local file (written before the artefact store)", legacy)
            return legacy.read_bytes()
        raise ArtefactNotFound(f"artefact {key!r} is not in {artefacts.location}") from None
