"""Refinement sessions: each round's settings and the last round's images, kept by id per tenant."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

metadata = sa.MetaData()

sessions = sa.Table(
    "generation_sessions",
    metadata,
    tenant_column(),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("rounds", sa.Integer, nullable=False),
    # JSON list of the settings of each round, oldest first.
    sa.Column("history", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "session_id"),
)

# Only the last round's images are kept: they are what the next round starts from, and the PNGs
# carry their settings, so older rounds can be regenerated from the history.
session_images = sa.Table(
    "generation_session_images",
    metadata,
    tenant_column(),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("png", sa.LargeBinary, nullable=False),
    sa.PrimaryKeyConstraint("tenant_id", "session_id", "idx"),
)

MIGRATIONS = [
    Migration(1, "refinement sessions and their last images", create_tables(sessions, session_images))
]


@dataclass
class SessionRecord:
    session_id: str
    model: str
    rounds: int
    history: list[dict[str, object]]
    images: list[bytes]


class SessionStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("generation", MIGRATIONS)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def get(self, tenant: str, session_id: str, with_images: bool = True) -> SessionRecord | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(
                sa.select(sessions).where(sessions.c.tenant_id == tenant, sessions.c.session_id == session_id)
            ).first()
            if row is None:
                return None
            images: list[bytes] = []
            if with_images:
                images = [
                    bytes(r.png)
                    for r in conn.execute(
                        sa.select(session_images.c.png)
                        .where(
                            session_images.c.tenant_id == tenant, session_images.c.session_id == session_id
                        )
                        .order_by(session_images.c.idx)
                    )
                ]
        return SessionRecord(row.session_id, row.model, row.rounds, json.loads(row.history), images)

    def save_round(
        self, tenant: str, session_id: str, model: str, settings: dict[str, object], images: list[bytes]
    ) -> int:
        """Append a round (creating the session at round 1); returns the round number. Committed on return."""
        now = utcnow()
        with self.store.engine.begin() as conn:
            row = conn.execute(
                sa.select(sessions.c.rounds, sessions.c.history).where(
                    sessions.c.tenant_id == tenant, sessions.c.session_id == session_id
                )
            ).first()
            if row is None:
                rounds = 1
                conn.execute(
                    sessions.insert().values(
                        tenant_id=tenant,
                        session_id=session_id,
                        model=model,
                        rounds=1,
                        history=json.dumps([settings]),
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                rounds = row.rounds + 1
                conn.execute(
                    sessions.update()
                    .where(sessions.c.tenant_id == tenant, sessions.c.session_id == session_id)
                    .values(
                        rounds=rounds,
                        model=model,
                        history=json.dumps([*json.loads(row.history), settings]),
                        updated_at=now,
                    )
                )
                conn.execute(
                    session_images.delete().where(
                        session_images.c.tenant_id == tenant, session_images.c.session_id == session_id
                    )
                )
            if images:
                conn.execute(
                    session_images.insert(),
                    [
                        {"tenant_id": tenant, "session_id": session_id, "idx": i, "png": png}
                        for i, png in enumerate(images)
                    ],
                )
        return rounds
