"""API keys of the HTTP API: create, verify, revoke, list.

A key is ``psk_`` + ``secrets.token_urlsafe(32)`` (256 random bits). Only its sha256 (hex) and
its first 8 characters (for display) are stored; the plaintext is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import insert, select, update

from storage.errors import NotFoundError
from storage.jobtable.base import Repository
from storage.jobtable.engine import as_utc
from storage.jobtable.tables import ApiKey, utcnow

KEY_PREFIX = "psk_"
PREFIX_CHARS = 8


def hash_key(key: str) -> str:
    """sha256 of ``key`` (UTF-8) as 64 lowercase hex characters."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys(Repository):
    """The ``api_keys`` table.

    Raises (every method):
        StorageError: the database failed or is unreachable (chained from SQLAlchemy's error).
    """

    def create(self, name: str) -> tuple[ApiKey, str]:
        """Create a key named ``name`` (1-100 characters, for people: who or what uses it).

        Returns:
            ``(record, key)``: the stored record and the plaintext key, which is not stored
            anywhere and cannot be shown again.

        Raises:
            ValueError: ``name`` is empty or longer than 100 characters.
        """
        name = name.strip()
        if not 0 < len(name) <= 100:
            raise ValueError("an API key name must have 1 to 100 characters")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as session:
            new_id = session.execute(
                insert(ApiKey)
                .values(name=name, key_hash=hash_key(key), prefix=key[:PREFIX_CHARS],
                        created_at=utcnow())
                .returning(ApiKey.id)
            ).scalar_one()
        return self.get(new_id), key

    def verify(self, key: str) -> ApiKey | None:
        """The record of ``key`` (revoked or not: check ``revoked_at``), or None if unknown.

        Candidates are found by their display prefix and compared by hash with
        :func:`hmac.compare_digest`, so the comparison takes the same time wherever it differs.
        """
        if not key.startswith(KEY_PREFIX) or len(key) < PREFIX_CHARS + 8 or len(key) > 200:
            return None
        digest = hash_key(key)
        with self._tx() as session:
            candidates = session.execute(
                select(ApiKey).where(ApiKey.prefix == key[:PREFIX_CHARS])
            ).scalars().all()
        for record in candidates:
            if hmac.compare_digest(record.key_hash, digest):
                return _aware(record)
        return None

    def revoke(self, key_id: int) -> ApiKey:
        """Revoke a key (idempotent: an already revoked key keeps its first ``revoked_at``).

        Raises:
            NotFoundError: no key has this id.
        """
        with self._tx() as session:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return self.get(key_id)

    def get(self, key_id: int) -> ApiKey:
        """One key record.

        Raises:
            NotFoundError: no key has this id.
        """
        with self._tx() as session:
            record = session.get(ApiKey, key_id)
        if record is None:
            raise NotFoundError(f"API key {key_id} does not exist")
        return _aware(record)

    def list(self) -> list[ApiKey]:
        """All key records, oldest first."""
        with self._tx() as session:
            return [_aware(r) for r in session.execute(
                select(ApiKey).order_by(ApiKey.id)).scalars()]


def _aware(record: ApiKey) -> ApiKey:
    return as_utc(record, "created_at", "revoked_at")
