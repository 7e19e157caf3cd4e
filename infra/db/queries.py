"""Read queries shared by the dashboard, evaluation and tests, identical on both backends.

Per-minute rollups (``vitals_1m``, ``detections_1m``) have the same name and columns on
plain PostgreSQL and TimescaleDB; coarser buckets re-bin them with ``date_bin`` or
``time_bucket`` using one origin (2000-01-03 00:00 UTC, TimescaleDB's default), so both
backends return the same buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from infra.db.migrate import Backend

BUCKET_ORIGIN = datetime.fromisoformat("2000-01-03T00:00:00+00:00")


def bucket_expression(backend: Backend, column: str) -> sql.Composable:
    """SQL that bins ``column`` by the ``%(width)s`` interval parameter from the shared origin."""
    function = "time_bucket" if backend == "timescale" else "date_bin"
    return sql.SQL("{}(%(width)s::interval, {}, %(origin)s::timestamptz)").format(
        sql.SQL(function), sql.Identifier(column)
    )


@dataclass(frozen=True)
class VitalsBucket:
    bucket: datetime
    n: int
    hr_avg: float | None
    rr_avg: float | None
    spo2_avg: float | None
    spo2_min: float | None
    sbp_avg: float | None
    temp_avg: float | None


def vitals_series(
    conn: psycopg.Connection,
    backend: Backend,
    *,
    bed_id: str,
    start: datetime,
    end: datetime,
    width: timedelta = timedelta(minutes=1),
) -> list[VitalsBucket]:
    """Vitals for one bed in [start, end), averaged per ``width`` (a whole number of minutes).

    Averages over coarser buckets weight each minute by its number of readings of that
    measurement, so they equal the average of the raw readings.
    """
    if width < timedelta(minutes=1) or width % timedelta(minutes=1):
        raise ValueError("width must be a whole number of minutes")

    def weighted(measurement: str) -> sql.Composable:
        # Weight each minute by how many readings of this measurement it holds.
        return sql.SQL("(sum({avg} * {n}) / nullif(sum({n}), 0))::real").format(
            avg=sql.Identifier(f"{measurement}_avg"), n=sql.Identifier(f"{measurement}_n")
        )

    query = sql.SQL(
        "SELECT {bucket} AS bucket, sum(n)::integer AS n, {hr} AS hr_avg, {rr} AS rr_avg, {spo2} AS spo2_avg, "
        "min(spo2_min) AS spo2_min, {sbp} AS sbp_avg, {temp} AS temp_avg "
        "FROM vitals_1m WHERE bed_id = %(bed_id)s AND bucket >= %(start)s AND bucket < %(end)s "
        "GROUP BY 1 ORDER BY 1"
    ).format(
        bucket=bucket_expression(backend, "bucket"),
        hr=weighted("hr"),
        rr=weighted("rr"),
        spo2=weighted("spo2"),
        sbp=weighted("sbp"),
        temp=weighted("temp"),
    )
    params: dict[str, Any] = {
        "width": width,
        "origin": BUCKET_ORIGIN,
        "bed_id": bed_id,
        "start": start,
        "end": end,
    }
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return [VitalsBucket(**row) for row in rows]


def latest_vitals(conn: psycopg.Connection, bed_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The most recent vitals row per bed (by measurement time)."""
    query = (
        "SELECT DISTINCT ON (bed_id) bed_id, ts, hr, rr, spo2, sbp, dbp, map, temp_c, on_oxygen, consciousness, "
        "spo2_scale, source FROM vitals WHERE bed_id = ANY(%s) ORDER BY bed_id, ts DESC"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, (bed_ids,)).fetchall()
    return {row["bed_id"]: row for row in rows}
