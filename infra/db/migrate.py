"""Versioned schema migrations for PostgreSQL, with or without TimescaleDB.

Files in ``migrations/`` are named ``NNNN_name.sql`` (both backends), or
``NNNN_name.plain.sql`` and ``NNNN_name.timescale.sql`` (one per backend). In shared files
``@PARTITION_BY_TS@`` becomes ``PARTITION BY RANGE (ts)`` on plain PostgreSQL and nothing on
TimescaleDB. A file whose first line is ``-- icu:no-transaction`` runs in autocommit
(TimescaleDB continuous aggregates cannot be created inside a transaction block).

Applied migrations are recorded with a checksum in ``icu_schema_migrations``; an applied file
that later changes is an error, never silently re-run. The backend chosen by the first
migration is recorded and kept.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import psycopg

from infra.errors import InfraError

log = logging.getLogger(__name__)

Backend = Literal["plain", "timescale"]
BACKENDS: tuple[Backend, ...] = ("plain", "timescale")

_FILE_PATTERN = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<backend>plain|timescale))?\.sql$")
_NO_TRANSACTION = "-- icu:no-transaction"
# Any constant works as long as every migrator agrees; this one spells "icu-migr".
_LOCK_ID = 0x6963752D6D696772


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(_NO_TRANSACTION)


def _render(sql: str, backend: Backend) -> str:
    return sql.replace("@PARTITION_BY_TS@", "PARTITION BY RANGE (ts)" if backend == "plain" else "")


def discover(backend: Backend) -> list[Migration]:
    """The migrations for ``backend``, in version order."""
    folder = resources.files("infra.db") / "migrations"
    by_version: dict[int, dict[str | None, tuple[str, str]]] = {}
    for entry in folder.iterdir():
        match = _FILE_PATTERN.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise InfraError(f"migration file {entry.name} does not match NNNN_name[.plain|.timescale].sql")
            continue
        variants = by_version.setdefault(int(match["version"]), {})
        variants[match["backend"]] = (match["name"], entry.read_text(encoding="utf-8"))
    migrations = []
    for version in sorted(by_version):
        variants = by_version[version]
        if None in variants and len(variants) > 1:
            raise InfraError(f"migration {version:04d} has both a shared file and a backend-specific one")
        if None not in variants and set(variants) != set(BACKENDS):
            raise InfraError(f"migration {version:04d} needs both .plain.sql and .timescale.sql variants")
        name, text = variants.get(None) or variants[backend]
        migrations.append(Migration(version, name, _render(text, backend)))
    return migrations


def detect_backend(conn: psycopg.Connection, preference: Literal["auto", "plain", "timescale"]) -> Backend:
    """Pick the storage backend: the recorded one if the schema exists, else by preference."""
    recorded = _recorded_backend(conn)
    if recorded is not None:
        if preference != "auto" and preference != recorded:
            raise InfraError(
                f"this database was migrated for the {recorded} backend; ICU_DATABASE_TIMESERIES={preference} "
                "cannot change that (use a new database)"
            )
        return recorded
    if preference == "plain":
        return "plain"
    installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if installed:
        return "timescale"
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if available:
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return "timescale"
        except psycopg.Error as exc:
            if preference == "timescale":
                raise InfraError(
                    f"ICU_DATABASE_TIMESERIES=timescale but the extension cannot be created: {exc}"
                ) from exc
            log.warning("timescaledb is available but could not be enabled (%s); using native partitioning", exc)
            return "plain"
    if preference == "timescale":
        raise InfraError("ICU_DATABASE_TIMESERIES=timescale but this PostgreSQL has no timescaledb extension")
    return "plain"


def _recorded_backend(conn: psycopg.Connection) -> Backend | None:
    exists = conn.execute("SELECT to_regclass('icu_schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT backend FROM icu_schema_migrations ORDER BY version LIMIT 1").fetchone()
    if row is None:
        return None
    backend = row[0]
    if backend not in BACKENDS:
        raise InfraError(f"icu_schema_migrations records an unknown backend {backend!r}")
    return backend


@dataclass(frozen=True)
class MigrationReport:
    backend: Backend
    applied: list[Migration]
    current_version: int


def migrate(url: str, *, preference: Literal["auto", "plain", "timescale"] = "auto") -> MigrationReport:
    """Apply every pending migration. Safe to run concurrently (advisory lock) and repeatedly."""
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            backend = detect_backend(conn, preference)
            conn.execute(
                """CREATE TABLE IF NOT EXISTS icu_schema_migrations (
                       version     integer PRIMARY KEY,
                       name        text NOT NULL,
                       checksum    text NOT NULL,
                       backend     text NOT NULL,
                       applied_at  timestamptz NOT NULL DEFAULT now())"""
            )
            applied_rows = conn.execute("SELECT version, name, checksum FROM icu_schema_migrations").fetchall()
            applied = {version: (name, checksum) for version, name, checksum in applied_rows}
            done: list[Migration] = []
            for migration in discover(backend):
                if migration.version in applied:
                    name, checksum = applied[migration.version]
                    if checksum != migration.checksum:
                        raise InfraError(
                            f"migration {migration.version:04d}_{name} was changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                log.info("applying migration %04d_%s (%s)", migration.version, migration.name, backend)
                _apply(conn, migration, backend)
                done.append(migration)
            version_row = conn.execute("SELECT coalesce(max(version), 0) FROM icu_schema_migrations").fetchone()
            current = int(version_row[0]) if version_row else 0
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return MigrationReport(backend, done, current)


def _apply(conn: psycopg.Connection, migration: Migration, backend: Backend) -> None:
    record = (
        "INSERT INTO icu_schema_migrations (version, name, checksum, backend) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.checksum, backend),
    )
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(*record)
        else:
            for statement in split_statements(migration.sql):
                conn.execute(statement.encode())
            conn.execute(*record)
    except psycopg.Error as exc:
        raise InfraError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc


def split_statements(sql: str) -> list[str]:
    """Split a migration without dollar-quoted bodies into statements (no-transaction files)."""
    if "$$" in sql:
        raise InfraError("no-transaction migrations cannot contain dollar-quoted bodies")
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """An autocommit connection, or an :class:`InfraError` saying which URL failed and why."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InfraError(f"cannot connect to the database at {redact(url)} (ICU_DATABASE_URL): {first_line}") from exc


def redact(url: str) -> str:
    """The connection string with any password replaced, for logs and errors.

    Handles URLs (``postgresql://user:pw@host/db``, ``?password=pw``) and libpq keyword strings
    (``host=h password=pw``).
    """
    url = re.sub(r"(://[^:/@?]+:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password=)('(?:[^'\\]|\\.)*'|[^&\s]+)", r"\1***", url)
