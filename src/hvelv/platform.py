"""The running instance: settings, database, keyring, audit ledger and token signer.

Built once per process (``Platform.open``) and passed explicitly; nothing global.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hvelv.audit.ledger import AuditRecord, Ledger
from hvelv.audit.trail import AuditTrail
from hvelv.config import Settings
from hvelv.consent.decisions import ConsentCache
from hvelv.crypto.keyring import Keyring, load_keyring
from hvelv.datasets.runtime import DatasetRuntime
from hvelv.db import migrate
from hvelv.db.batch import BatchWriter
from hvelv.db.engine import Database
from hvelv.security.auth_cache import AUTH_TABLES, AuthCache
from hvelv.security.tokens import TokenSigner
from hvelv.storage.base import BlobStore
from hvelv.storage.factory import build_store


class NotInitialised(Exception):
    """The instance has no keyring or its database is not migrated."""


@dataclass
class Platform:
    settings: Settings
    db: Database
    keyring: Keyring
    ledger: Ledger
    signer: TokenSigner
    _stores: dict[str, BlobStore] = field(default_factory=dict, repr=False)
    # per-process accelerator for consent decisions, rebuilt from the database (stateless)
    consent_cache: ConsentCache = field(default_factory=ConsentCache)
    # per-process query engines and participant key registries of datasets (also rebuilt)
    datasets: DatasetRuntime = field(default_factory=DatasetRuntime)
    # the process's group-commit writer (hvelv.db.batch); its thread starts with its first job
    writes: BatchWriter | None = None
    # per-process memory of verified logins, projects and roles (hvelv.security.auth_cache)
    auth_cache: AuthCache | None = None

    def __post_init__(self) -> None:
        if self.writes is None:
            self.writes = BatchWriter(self.db)
        if self.auth_cache is None:
            self.auth_cache = AuthCache(
                self.db.watch(AUTH_TABLES), self.settings.auth_cache_seconds
            )

    @property
    def auth(self) -> AuthCache:
        assert self.auth_cache is not None
        return self.auth_cache

    @property
    def batch(self) -> BatchWriter:
        assert self.writes is not None
        return self.writes

    @classmethod
    def open(cls, settings: Settings, *, check_schema: bool = True) -> Platform:
        keyring = load_keyring(settings.home)
        db = Database(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.db_pool_size,
        )
        if check_schema and not migrate.is_current(db.engine):
            db.dispose()
            raise NotInitialised(
                "the database schema is not current; run `hvelv db upgrade` (or `hvelv init`)"
            )
        return cls.build(settings, db, keyring)

    @classmethod
    def build(cls, settings: Settings, db: Database, keyring: Keyring) -> Platform:
        ledger = Ledger(
            keyring.signing_key, keyring.signing_key_id, settings.audit_checkpoint_interval
        )
        signer = TokenSigner(keyring.token_key, keyring.token_key_id)
        return cls(
            settings=settings,
            db=db,
            keyring=keyring,
            ledger=ledger,
            signer=signer,
            datasets=DatasetRuntime.from_settings(settings),
        )

    @property
    def store_name(self) -> str:
        """The blob store new objects are written to."""
        return self.settings.storage_backend

    def store(self, name: str | None = None) -> BlobStore:
        """A blob store by name (``local``, ``s3``), built once; default: where new objects go."""
        name = name or self.store_name
        if name not in self._stores:
            self._stores[name] = build_store(self.settings.storage(name))
        return self._stores[name]

    def audit_now(self, record: AuditRecord) -> None:
        """Write one event in its own transaction (refusals, API key use)."""
        with self.db.write() as session:
            self.ledger.record(session, record)

    def run_as(self, actor: str, work: Callable[[AuditTrail], Any]) -> Any:
        """Run local administration (CLI) in one write transaction with an audit trail."""
        with self.db.write() as session:
            return work(AuditTrail(session, self.ledger, actor))

    def close(self) -> None:
        self.batch.close()
        self.datasets.close()
        self.db.dispose()
