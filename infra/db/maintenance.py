"""Time-series housekeeping: partitions, retention, rollup refresh.

On TimescaleDB the extension's own jobs do this (chunks, compression, retention and
continuous-aggregate policies); :func:`maintain` only keeps the retention policy in line with
settings and refreshes recent rollups. On plain PostgreSQL it creates daily partitions ahead
of time, moves rows that landed in the default partition into proper ones, drops partitions
past retention, and refreshes the per-minute rollups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import psycopg
from psycopg import sql

from infra.db.migrate import Backend, MigrationReport, connect, migrate

log = logging.getLogger(__name__)

TIMESERIES_TABLES = ("vitals", "detections", "camera_status")
ROLLUPS = ("vitals_1m", "detections_1m")
ROLLUP_LOOKBACK = timedelta(hours=2)  # late rows within this window still reach the rollups


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rows_moved: int = 0
    rollups_refreshed_to: datetime | None = None


def maintain(
    conn: psycopg.Connection,
    backend: Backend,
    *,
    retention_days: int,
    now: datetime | None = None,
    days_ahead: int = 3,
) -> MaintenanceReport:
    """One maintenance pass; idempotent. ``conn`` must be in autocommit mode."""
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    if backend == "timescale":
        _timescale_retention(conn, retention_days)
    else:
        for table in TIMESERIES_TABLES:
            _plain_partitions(conn, table, now=now, days_ahead=days_ahead, retention_days=retention_days, report=report)
    refresh_rollups(conn, backend, now - ROLLUP_LOOKBACK, now)
    report.rollups_refreshed_to = now
    return report


def prepare_database(
    url: str, *, preference: Literal["auto", "plain", "timescale"], retention_days: int
) -> tuple[MigrationReport, MaintenanceReport]:
    """Migrate, then one maintenance pass: what every service start and `icu db` needs."""
    migration = migrate(url, preference=preference)
    with connect(url) as conn:
        maintenance = maintain(conn, migration.backend, retention_days=retention_days)
    return migration, maintenance


def refresh_rollups(conn: psycopg.Connection, backend: Backend, start: datetime, end: datetime) -> None:
    """Materialise whole minutes of the per-minute rollups in [start, end)."""
    if backend == "timescale":
        for view in ROLLUPS:
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, start, end))
    else:
        conn.execute("SELECT refresh_rollups(%s, %s)", (start, end))


def _timescale_retention(conn: psycopg.Connection, retention_days: int) -> None:
    wanted = timedelta(days=retention_days)
    for table in TIMESERIES_TABLES:
        row = conn.execute(
            "SELECT config->>'drop_after' FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_name = %s",
            (table,),
        ).fetchone()
        if row is not None:
            current = conn.execute("SELECT %s::interval", (row[0],)).fetchone()
            if current is not None and current[0] == wanted:
                continue
            conn.execute("SELECT remove_retention_policy(%s)", (table,))
        conn.execute("SELECT add_retention_policy(%s, %s::interval)", (table, wanted))
        log.info("retention policy on %s set to %d days", table, retention_days)


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _existing_partitions(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (table,),
    ).fetchall()
    return {name for (name,) in rows}


def _plain_partitions(
    conn: psycopg.Connection,
    table: str,
    *,
    now: datetime,
    days_ahead: int,
    retention_days: int,
    report: MaintenanceReport,
) -> None:
    existing = _existing_partitions(conn, table)
    default = sql.Identifier(f"{table}_default")
    today = now.astimezone(UTC).date()
    wanted = {today + timedelta(days=offset) for offset in range(-1, days_ahead + 1)}
    stray_days = conn.execute(
        sql.SQL("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM {}").format(default)
    ).fetchall()
    wanted.update(day for (day,) in stray_days)
    for day in sorted(wanted):
        name = partition_name(table, day)
        if name in existing:
            continue
        lo, hi = _day_bounds(day)
        # Rows for this day may sit in the default partition; PostgreSQL refuses to create an
        # overlapping partition, so move them out and back in within one transaction.
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE icu_moving ON COMMIT DROP AS "
                    "WITH moved AS (DELETE FROM {} WHERE ts >= %s AND ts < %s RETURNING *) SELECT * FROM moved"
                ).format(default),
                (lo, hi),
            )
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                    sql.Identifier(name), sql.Identifier(table), sql.Literal(lo), sql.Literal(hi)
                )
            )
            moved = conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM icu_moving").format(sql.Identifier(table)))
            report.rows_moved += moved.rowcount
        report.created.append(name)
        existing.add(name)
    cutoff = today - timedelta(days=retention_days)
    for name in sorted(existing):
        suffix = name.removeprefix(f"{table}_p")
        if len(suffix) != 8 or not suffix.isdigit():
            continue
        day = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC).date()
        if day < cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            report.dropped.append(name)
            log.info("dropped partition %s (older than %d days)", name, retention_days)
    if report.rows_moved:
        log.info("moved %d rows of %s out of the default partition", report.rows_moved, table)
