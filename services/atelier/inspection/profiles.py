"""Fabric profiles: trained texture models, versioned per tenant and article.

A profile's model is an artefact (atelier.runtime.artefacts: the database or S3, shared by every
replica and kept across restarts), written whole under a new key; its row in the store makes it
visible. The row insert is the switch: until it commits, inspections use the previous version;
after it, the new one, on every replica (each loads a version it lacks by its key). An inspection
takes one model object for its whole run, so it never mixes versions.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from atelier.inspection.texture import METHOD, TextureModel
from atelier.runtime.artefacts import ArtefactStore, DatabaseArtefacts, get_or_legacy_file, safe_part
from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

metadata = sa.MetaData()
profiles_table = sa.Table(
    "inspection_profiles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    tenant_column(),
    sa.Column("article", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("image_count", sa.Integer, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    # The model's artefact key (before the artefact store: a file path under <data dir>/profiles).
    sa.Column("model_file", sa.String(512), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("tenant_id", "article", "version", name="uq_inspection_profile_version"),
)
MIGRATIONS = [Migration(1, "inspection profiles", create_tables(profiles_table))]

ARTICLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ProfileInfo:
    article: str
    version: int
    image_count: int
    threshold: float
    method: str
    create_time: datetime


class ProfileNotFound(LookupError):
    pass


def _info(row: sa.Row) -> ProfileInfo:  # type: ignore[type-arg]
    return ProfileInfo(row.article, row.version, row.image_count, row.threshold, row.method, row.create_time)


class ProfileStore:
    def __init__(self, store: Store, data_dir: Path, artefacts: ArtefactStore | None = None) -> None:
        self.store = store
        self.artefacts = artefacts if artefacts is not None else DatabaseArtefacts(store)
        self.root = data_dir / "profiles"  # only where profiles trained before the artefact store are
        self._cache: dict[tuple[str, str, int], TextureModel] = {}
        self._lock = threading.Lock()

    def migrate(self) -> None:
        self.store.migrate("inspection", MIGRATIONS)

    def save(
        self,
        tenant: str,
        article: str,
        model: TextureModel,
        before_commit: Callable[[], None] | None = None,
    ) -> ProfileInfo:
        """Stores a new version. before_commit runs inside the transaction, last: what it raises (the
        caller gave up) rolls the version back, so an abandoned call leaves no profile behind."""
        key = f"inspection/profiles/{safe_part(tenant)}/{safe_part(article)}/{uuid.uuid4().hex}.npz"
        self.artefacts.put(key, model.to_bytes())
        try:
            return self._insert(tenant, article, model, key, before_commit)
        except BaseException:
            self.artefacts.delete(key)
            raise

    def _insert(
        self,
        tenant: str,
        article: str,
        model: TextureModel,
        key: str,
        before_commit: Callable[[], None] | None,
    ) -> ProfileInfo:
        t = profiles_table
        for _attempt in range(5):
            try:
                with self.store.engine.begin() as conn:
                    current = conn.scalar(
                        sa.select(sa.func.max(t.c.version)).where(
                            t.c.tenant_id == tenant, t.c.article == article
                        )
                    )
                    version = int(current or 0) + 1
                    now = utcnow()
                    conn.execute(
                        t.insert().values(
                            tenant_id=tenant,
                            article=article,
                            version=version,
                            image_count=model.image_count,
                            threshold=model.threshold,
                            method=METHOD,
                            model_file=key,
                            create_time=now,
                        )
                    )
                    if before_commit is not None:
                        before_commit()
            except sa.exc.IntegrityError:  # another trainer took this version number; take the next
                continue
            with self._lock:
                self._cache[(tenant, article, version)] = model
            return ProfileInfo(article, version, model.image_count, model.threshold, METHOD, now)
        raise RuntimeError(f"could not allocate a version for article {article!r}")

    def info(self, tenant: str, article: str, version: int = 0) -> ProfileInfo:
        t = profiles_table
        query = sa.select(t).where(t.c.tenant_id == tenant, t.c.article == article)
        query = (
            query.where(t.c.version == version) if version else query.order_by(t.c.version.desc()).limit(1)
        )
        with self.store.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            what = f"version {version} of article {article!r}" if version else f"article {article!r}"
            raise ProfileNotFound(f"no profile for {what}: train one with CreateProfile first")
        return _info(row)

    def active(self, tenant: str, article: str) -> tuple[ProfileInfo, TextureModel]:
        """The newest version and its model (loaded once, then cached)."""
        info = self.info(tenant, article)
        key = (tenant, article, info.version)
        with self._lock:
            model = self._cache.get(key)
        if model is None:
            t = profiles_table
            with self.store.engine.connect() as conn:
                rel = conn.scalar(
                    sa.select(t.c.model_file).where(
                        t.c.tenant_id == tenant, t.c.article == article, t.c.version == info.version
                    )
                )
            model = TextureModel.from_bytes(
                get_or_legacy_file(self.artefacts, str(rel), self.root / str(rel))
            )
            with self._lock:
                # Keep only the newest version of each article in memory.
                for old in [k for k in self._cache if k[:2] == key[:2] and k[2] < key[2]]:
                    del self._cache[old]
                self._cache[key] = model
        return info, model

    def list(self, tenant: str, offset: int, limit: int) -> list[ProfileInfo]:
        """Active versions, one per article, ordered by article."""
        t = profiles_table
        newest = (
            sa.select(t.c.article, sa.func.max(t.c.version).label("version"))
            .where(t.c.tenant_id == tenant)
            .group_by(t.c.article)
            .subquery()
        )
        query = (
            sa.select(t)
            .join(newest, sa.and_(t.c.article == newest.c.article, t.c.version == newest.c.version))
            .where(t.c.tenant_id == tenant)
            .order_by(t.c.article)
            .offset(offset)
            .limit(limit)
        )
        with self.store.engine.connect() as conn:
            return [_info(r) for r in conn.execute(query)]
