"""API keys bound to tenants and a role, kept hashed in a keys file (or a shared database table).

A key looks like ``atk_<id>_<secret>``: the id is public (it names the key in ``atelier keys
list``, in logs and in revocations), the secret is 256 random bits. Only the SHA-256 of the whole
key is stored. A fast hash is the right one here: a slow password hash (bcrypt, argon2) protects
guessable passwords, while a 256-bit random secret cannot be guessed, and a slow hash would cost
every RPC tens of milliseconds.

The keys file is JSON, written by ``atelier keys create|revoke`` (atomically, mode 0600) and
mounted from a Kubernetes Secret in the chart::

    {"format": "atelier-keys/v1",
     "keys": [{"id": "3f9a0c2b7d41", "sha256": "…", "tenants": ["acme"], "role": "write",
               "name": "acme web shop", "created": "2026-12-01T20:00:00Z", "revoked": ""}]}

Roles are ordered: ``read`` (reads and pure computations) < ``write`` (stores or changes data,
starts jobs) < ``admin`` (deletes stored data). Nothing here imports gRPC.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

FORMAT = "atelier-keys/v1"
KEY_PREFIX = "atk"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class Role(enum.IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"role must be read, write or admin, got {value!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class KeyStoreError(ValueError):
    """The key store cannot be used as configured; the message says what to fix."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    sha256: str
    tenants: tuple[str, ...]
    role: Role
    name: str = ""
    created: str = ""
    revoked: str = ""

    @property
    def active(self) -> bool:
        return not self.revoked

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sha256": self.sha256,
            "tenants": list(self.tenants),
            "role": self.role.label,
            "name": self.name,
            "created": self.created,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, raw: Any, where: str) -> KeyRecord:
        if not isinstance(raw, dict):
            raise KeyStoreError(f"{where}: must be an object")
        key_id = str(raw.get("id", ""))
        digest = str(raw.get("sha256", ""))
        tenants = raw.get("tenants")
        if not _ID_RE.match(key_id):
            raise KeyStoreError(f"{where}.id: must be 12 hex digits, got {key_id!r}")
        if not _SHA_RE.match(digest):
            raise KeyStoreError(f"{where}.sha256: must be 64 hex digits (the key's SHA-256)")
        if not isinstance(tenants, list) or not tenants:
            raise KeyStoreError(f"{where}.tenants: must be a non-empty list of tenant ids")
        for tenant in tenants:
            if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
                raise KeyStoreError(
                    f"{where}.tenants: {tenant!r} is not a tenant id (a-z, 0-9, '.', '_', '-')"
                )
        try:
            role = Role.parse(str(raw.get("role", "")))
        except ValueError as exc:
            raise KeyStoreError(f"{where}.role: {exc}") from None
        return cls(
            id=key_id,
            sha256=digest,
            tenants=tuple(dict.fromkeys(tenants)),
            role=role,
            name=str(raw.get("name", "")),
            created=str(raw.get("created", "")),
            revoked=str(raw.get("revoked", "") or ""),
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, the tenants it grants and its role."""

    key_id: str
    tenants: tuple[str, ...]
    role: Role


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not _ID_RE.match(key_id) or len(secret) < 32:
        return None
    return key_id


def new_key(tenants: Sequence[str], role: Role, name: str = "") -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and the record that stores only its hash."""
    bad = [t for t in tenants if not TENANT_RE.match(t)]
    if not tenants or bad:
        raise ValueError(f"tenants must be 1 or more tenant ids (a-z, 0-9, '.', '_', '-'); bad: {bad}")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        sha256=hash_key(key),
        tenants=tuple(dict.fromkeys(tenants)),
        role=role,
        name=name,
        created=_now(),
    )
    return key, record


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_records(records: Iterable[KeyRecord], source: str) -> dict[str, KeyRecord]:
    by_id: dict[str, KeyRecord] = {}
    for record in records:
        if record.id in by_id:
            raise KeyStoreError(f"{source}: key id {record.id} appears twice")
        by_id[record.id] = record
    if not any(r.active for r in by_id.values()):
        raise KeyStoreError(
            f"{source} holds no active key: every call would be refused. "
            "Add one with `atelier keys create --tenant <tenant> --role <role>`, "
            "or unset the setting to run without keys on localhost"
        )
    return by_id


def parse_keys_file(text: str, source: str) -> list[KeyRecord]:
    if not text.strip():
        raise KeyStoreError(f"{source} is empty; create keys with `atelier keys create --file {source} ...`")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyStoreError(
            f"{source} is not a keys file (JSON written by `atelier keys create`): {exc}. "
            "Plain one-key-a-line files are no longer accepted: a key must name its tenants and role"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("keys"), list):
        raise KeyStoreError(f'{source}: expected {{"format": "{FORMAT}", "keys": [...]}}')
    return [KeyRecord.from_json(item, f"{source}: keys[{i}]") for i, item in enumerate(raw["keys"])]


def read_keys_file(path: Path) -> list[KeyRecord]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyStoreError(f"ATELIER_API_KEYS_FILE {path} cannot be read: {exc.strerror or exc}") from None
    return parse_keys_file(text, str(path))


def write_keys_file(path: Path, records: Sequence[KeyRecord]) -> None:
    """Replace the file atomically (a reader never sees half a file), readable by its owner only."""
    body = json.dumps({"format": FORMAT, "keys": [r.to_json() for r in records]}, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyStore(Protocol):
    source: str

    def authenticate(self, key: str) -> Principal | None: ...


def match_record(record: KeyRecord | None, key: str) -> Principal | None:
    if record is None or not record.active or not hmac.compare_digest(record.sha256, hash_key(key)):
        return None
    return Principal(record.id, record.tenants, record.role)


@dataclass
class FileKeyStore:
    """The keys file, re-read when it changes (checked at most every ``reload_s``), so a key
    revoked in the file (or in the Kubernetes Secret it is mounted from) stops working without a
    restart. A file that turns unreadable or invalid later keeps the last good keys and logs an
    error: the running service neither opens up nor locks every caller out over a bad edit."""

    path: Path
    reload_s: float = 2.0
    source: str = ""
    _by_id: dict[str, KeyRecord] = field(default_factory=dict)
    _stamp: tuple[float, int, int] = (0.0, 0, 0)
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.source = f"file {self.path}"
        self._by_id = check_records(read_keys_file(self.path), str(self.path))
        self._stamp = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> tuple[float, int, int]:
        st = self.path.stat()
        return (st.st_mtime, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_s:
            return
        with self._lock:
            if now - self._checked < self.reload_s:
                return
            self._checked = now
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return
                self._by_id = check_records(read_keys_file(self.path), str(self.path))
                self._stamp = stamp
                log.info("reloaded %d API keys from %s", len(self._by_id), self.path)
            except (OSError, KeyStoreError) as exc:
                log.error("keeping the previous API keys: %s", exc)

    @property
    def records(self) -> list[KeyRecord]:
        self._maybe_reload()
        return list(self._by_id.values())

    def authenticate(self, key: str) -> Principal | None:
        key_id = split_key(key)
        if key_id is None:
            return None
        self._maybe_reload()
        return match_record(self._by_id.get(key_id), key)


def revoke(records: Sequence[KeyRecord], key_id: str) -> list[KeyRecord]:
    found = [r for r in records if r.id == key_id]
    if not found:
        raise KeyError(key_id)
    return [replace(r, revoked=r.revoked or _now()) if r.id == key_id else r for r in records]
