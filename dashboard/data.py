"""The dashboard's reads: typed query functions over the project's tables and rollups.

Every function takes an open connection and the time ``now`` it reads up to, and returns
dataclasses or pandas frames; none caches (the Streamlit layer decides that). Raw time series
are read only over short windows (seconds to hours, served by the time index); anything longer
comes from the per-minute rollups ``vitals_1m`` / ``detections_1m`` (:mod:`infra.db.queries`),
so a page costs the same with a day of data as with an hour.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from dashboard.core import AlertRow, BedSnapshot, Event, EvidenceRef, Reading, VideoFindings, alert_event_text
from infra.db.migrate import Backend
from infra.db.queries import BUCKET_ORIGIN, bucket_expression, vitals_series

BED_HORIZON: Final = timedelta(hours=24)
"""A bed with no vitals for this long (and no open alert, and not in ``beds``) leaves the ward view."""
CONTINUOUS_WINDOW: Final = timedelta(minutes=15)
"""How far back the latest HR/RR/SpO2 are looked for; older ones show as missing, the bed as lost."""
CHARTED_WINDOW: Final = timedelta(hours=4)
"""How far back cuff pressure, temperature, oxygen and ACVPU are looked for (charted readings)."""
VIDEO_WINDOW: Final = timedelta(minutes=10)
CAMERA_WINDOW: Final = timedelta(hours=1)

_ALERT_COLUMNS: Final = (
    "alert_id, bed_id, code, kind, priority, state, raised_at, updated_at, explanation, evidence, news2, "
    "escalation_level, acknowledged_by, acknowledged_at, snoozed_until, resolved_at, version"
)


class Database:
    """One autocommit connection shared by the dashboard's sessions, used one query batch at a
    time, and reopened when it broke (a database restart shows as one failed refresh, not a dead
    dashboard)."""

    def __init__(self, url: str, *, application_name: str = "icu-dashboard") -> None:
        self.url = url
        self.application_name = application_name
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._backend: Backend | None = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=5, application_name=self.application_name
                )
            yield self._conn

    def backend(self) -> Backend:
        if self._backend is None:
            with self.connection() as conn:
                self._backend = detect_backend(conn)
        return self._backend

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def detect_backend(conn: psycopg.Connection) -> Backend:
    """The time-series backend the schema was migrated with."""
    row = conn.execute("SELECT to_regclass('vitals_1m_store') IS NOT NULL").fetchone()
    return "plain" if row and row[0] else "timescale"


@dataclass(frozen=True)
class BedInfo:
    bed_id: str
    ward: str
    label: str | None


def ward_beds(conn: psycopg.Connection, now: datetime, *, ward: str | None = None) -> list[BedInfo]:
    """Beds to show: those in ``beds``, those with vitals in the last day (from the rollup) and
    those with an open alert. Beds not in ``beds`` belong to ward 'default'."""
    query = """
        WITH seen AS (
            SELECT bed_id FROM beds
            UNION SELECT DISTINCT bed_id FROM vitals_1m WHERE bucket >= %(since)s AND bucket <= %(now)s
            UNION SELECT DISTINCT bed_id FROM alerts WHERE state <> 'resolved'
        )
        SELECT s.bed_id, coalesce(b.ward, 'default') AS ward, b.label
        FROM seen s LEFT JOIN beds b USING (bed_id)
        WHERE %(ward)s::text IS NULL OR coalesce(b.ward, 'default') = %(ward)s::text
        ORDER BY s.bed_id
    """
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, {"since": now - BED_HORIZON, "now": now, "ward": ward}).fetchall()
    return [BedInfo(**row) for row in rows]


def wards(conn: psycopg.Connection, now: datetime) -> list[str]:
    return sorted({bed.ward for bed in ward_beds(conn, now)})


def _latest(
    conn: psycopg.Connection, bed_ids: Sequence[str], since: datetime, now: datetime, columns: Sequence[str]
) -> dict[str, dict[str, Reading]]:
    """Per bed, the latest non-null value of each column in (since, now] with its time."""
    parts = []
    for column in columns:
        ident = sql.Identifier(column)
        parts.append(
            sql.SQL(
                "(array_agg({c} ORDER BY ts DESC) FILTER (WHERE {c} IS NOT NULL))[1] AS {v}, "
                "max(ts) FILTER (WHERE {c} IS NOT NULL) AS {t}"
            ).format(c=ident, v=sql.Identifier(f"{column}__v"), t=sql.Identifier(f"{column}__t"))
        )
    nonnull = sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in columns)
    query = sql.SQL(
        "SELECT bed_id, {parts} FROM vitals WHERE ts > %(since)s AND ts <= %(now)s AND bed_id = ANY(%(beds)s) "
        "AND ({nonnull}) GROUP BY bed_id"
    ).format(parts=sql.SQL(", ").join(parts), nonnull=nonnull)
    out: dict[str, dict[str, Reading]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(query, {"since": since, "now": now, "beds": list(bed_ids)}).fetchall():
            readings = out.setdefault(row["bed_id"], {})
            for column in columns:
                value, ts = row[f"{column}__v"], row[f"{column}__t"]
                if value is not None and ts is not None:
                    readings[column] = Reading(value=value.strip() if isinstance(value, str) else value, ts=ts)
    return out


def bed_snapshots(conn: psycopg.Connection, beds: Sequence[BedInfo], now: datetime) -> list[BedSnapshot]:
    """Everything a ward tile needs for each bed, in a handful of queries for the whole ward."""
    if not beds:
        return []
    ids = [bed.bed_id for bed in beds]
    continuous = _latest(conn, ids, now - CONTINUOUS_WINDOW, now, ("hr", "rr", "spo2"))
    charted = _latest(conn, ids, now - CHARTED_WINDOW, now, ("sbp", "dbp", "temp_c", "on_oxygen", "consciousness"))
    with conn.cursor(row_factory=dict_row) as cur:
        # Last vitals of any kind: the raw window first, the rollup for beds quiet longer.
        last_rows = cur.execute(
            "SELECT bed_id, max(bucket) + interval '1 minute' AS ts FROM vitals_1m "
            "WHERE bed_id = ANY(%(beds)s) AND bucket >= %(since)s AND bucket <= %(now)s GROUP BY bed_id",
            {"beds": ids, "since": now - BED_HORIZON, "now": now},
        ).fetchall()
        scale_rows = cur.execute(
            "SELECT DISTINCT ON (bed_id) bed_id, spo2_scale FROM vitals "
            "WHERE bed_id = ANY(%(beds)s) AND ts > %(since)s AND ts <= %(now)s ORDER BY bed_id, ts DESC",
            {"beds": ids, "since": now - CONTINUOUS_WINDOW, "now": now},
        ).fetchall()
        video_rows = cur.execute(
            "SELECT DISTINCT ON (bed_id) bed_id, ts, grimace, twitch, apnea, resp_rate, baseline_resp_rate, degraded, "
            "findings "
            "FROM detections WHERE bed_id = ANY(%(beds)s) AND ts > %(since)s AND ts <= %(now)s "
            "ORDER BY bed_id, ts DESC",
            {"beds": ids, "since": now - VIDEO_WINDOW, "now": now},
        ).fetchall()
        camera_rows = cur.execute(
            "SELECT DISTINCT ON (bed_id) bed_id, ts, state FROM camera_status "
            "WHERE bed_id = ANY(%(beds)s) AND ts > %(since)s AND ts <= %(now)s ORDER BY bed_id, ts DESC",
            {"beds": ids, "since": now - CAMERA_WINDOW, "now": now},
        ).fetchall()
    alerts = open_alerts(conn, bed_ids=ids)
    last_seen = {row["bed_id"]: min(row["ts"], now) for row in last_rows}
    scale = {row["bed_id"]: row["spo2_scale"] for row in scale_rows}
    video = {row["bed_id"]: row for row in video_rows}
    camera = {row["bed_id"]: row for row in camera_rows}
    out = []
    for bed in beds:
        readings = {**charted.get(bed.bed_id, {}), **continuous.get(bed.bed_id, {})}
        newest = max((r.ts for r in readings.values()), default=None)
        last_ts = newest if newest is not None else last_seen.get(bed.bed_id)
        v = video.get(bed.bed_id)
        c = camera.get(bed.bed_id)
        out.append(
            BedSnapshot(
                bed_id=bed.bed_id,
                ward=bed.ward,
                label=bed.label,
                readings=readings,
                spo2_scale=int(scale.get(bed.bed_id, 1)),
                last_vitals_ts=last_ts,
                video=VideoFindings(
                    ts=v["ts"],
                    grimace=v["grimace"],
                    twitch=v["twitch"],
                    apnea=v["apnea"],
                    resp_rate=v["resp_rate"],
                    baseline_resp_rate=v["baseline_resp_rate"],
                    degraded=v["degraded"],
                    findings=None if v["findings"] is None else tuple(v["findings"]),
                )
                if v
                else None,
                camera_state=c["state"] if c else None,
                camera_status_ts=c["ts"] if c else None,
                alerts=[a for a in alerts if a.bed_id == bed.bed_id],
            )
        )
    return out


# --- alerts ---------------------------------------------------------------------------------


def _alert(row: dict[str, Any]) -> AlertRow:
    evidence = row["evidence"]
    if isinstance(evidence, str):
        evidence = json.loads(evidence)
    return AlertRow(**{**row, "evidence": evidence or {}})


def open_alerts(conn: psycopg.Connection, *, bed_ids: Sequence[str] | None = None) -> list[AlertRow]:
    """Alerts that are not resolved (current state), optionally for some beds."""
    query = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state <> 'resolved'"
    params: dict[str, Any] = {}
    if bed_ids is not None:
        query += " AND bed_id = ANY(%(beds)s)"
        params["beds"] = list(bed_ids)
    with conn.cursor(row_factory=dict_row) as cur:
        return [_alert(row) for row in cur.execute(query, params).fetchall()]


def alert_history(conn: psycopg.Connection, bed_id: str, *, since: datetime, limit: int = 50) -> list[AlertRow]:
    """A bed's alerts (current state) raised or changed since ``since``, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE bed_id = %s AND updated_at >= %s "
            "ORDER BY updated_at DESC LIMIT %s",
            (bed_id, since, limit),
        ).fetchall()
    return [_alert(row) for row in rows]


def alert_by_id(conn: psycopg.Connection, alert_id: uuid.UUID) -> AlertRow | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE alert_id = %s", (alert_id,)).fetchone()
    return _alert(row) if row else None


def alert_events(conn: psycopg.Connection, bed_id: str, *, since: datetime, now: datetime) -> list[Event]:
    """Every alert version of a bed in (since, now] as timeline events."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT updated_at, code, priority, state, version, escalation_level, explanation FROM alert_versions "
            "WHERE bed_id = %s AND updated_at > %s AND updated_at <= %s ORDER BY updated_at",
            (bed_id, since, now),
        ).fetchall()
    return [
        Event(
            r["updated_at"],
            "alert",
            f"{alert_event_text(r['code'], r['priority'], r['state'], r['version'], r['escalation_level'])}: "
            f"{r['explanation']}",
        )
        for r in rows
    ]


@dataclass(frozen=True)
class AckRow:
    ack_id: uuid.UUID
    alert_id: uuid.UUID
    user_name: str
    ts: datetime
    action: str
    snooze_s: int | None
    reason: str | None


def acks_for(conn: psycopg.Connection, alert_ids: Sequence[uuid.UUID]) -> list[AckRow]:
    """Acknowledgements stored for these alerts (by the sink from ``alert-acks``), oldest first."""
    if not alert_ids:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT ack_id, alert_id, user_name, ts, action, snooze_s, reason FROM alert_acks "
            "WHERE alert_id = ANY(%s) ORDER BY ts",
            (list(alert_ids),),
        ).fetchall()
    return [AckRow(**row) for row in rows]


# --- evidence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceRow(EvidenceRef):
    bed_id: str
    model: str
    window_start: datetime
    window_end: datetime


def evidence_list(conn: psycopg.Connection, bed_id: str, *, since: datetime, now: datetime) -> list[EvidenceRow]:
    """Evidence records of a bed (without their images), newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT ts, bed_id, finding, probability, model, window_start, window_end FROM evidence "
            "WHERE bed_id = %s AND ts >= %s AND ts <= %s ORDER BY ts DESC LIMIT 200",
            (bed_id, since, now),
        ).fetchall()
    return [EvidenceRow(**row) for row in rows]


def evidence_image(conn: psycopg.Connection, evidence: EvidenceRow) -> bytes | None:
    """The keyframe JPEG (saliency overlay already drawn in by the inference worker)."""
    row = conn.execute(
        "SELECT keyframe_jpeg FROM evidence WHERE bed_id = %s AND finding = %s AND ts = %s AND model = %s",
        (evidence.bed_id, evidence.finding, evidence.ts, evidence.model),
    ).fetchone()
    return bytes(row[0]) if row else None


# --- time series for the patient page ---------------------------------------------------------


def chart_width(span: timedelta) -> timedelta:
    """Bucket width that keeps a chart near 150 points: 1 h -> 1 min, 6 h -> 2 min, 24 h -> 10 min."""
    minutes = max(1, round(span / timedelta(minutes=1) / 150))
    for nice in (1, 2, 3, 5, 10, 15, 30, 60):
        if minutes <= nice:
            return timedelta(minutes=nice)
    return timedelta(minutes=60)


def vitals_frame(
    conn: psycopg.Connection, backend: Backend, bed_id: str, *, start: datetime, end: datetime
) -> pd.DataFrame:
    """Vitals averaged per chart bucket (from ``vitals_1m``): bucket, hr, rr, spo2, spo2_min, sbp, temp_c."""
    buckets = vitals_series(conn, backend, bed_id=bed_id, start=start, end=end, width=chart_width(end - start))
    frame = pd.DataFrame(
        [
            {
                "bucket": b.bucket,
                "hr": b.hr_avg,
                "rr": b.rr_avg,
                "spo2": b.spo2_avg,
                "spo2_min": b.spo2_min,
                "sbp": b.sbp_avg,
                "temp_c": b.temp_avg,
            }
            for b in buckets
        ],
        columns=["bucket", "hr", "rr", "spo2", "spo2_min", "sbp", "temp_c"],
    )
    return frame


def detections_frame(
    conn: psycopg.Connection, backend: Backend, bed_id: str, *, start: datetime, end: datetime
) -> pd.DataFrame:
    """Video findings per chart bucket (from ``detections_1m``): the highest grimace / twitch / apnea
    probability, and the learned and classical respiration rates (breaths/min) averaged by minute."""
    query = sql.SQL(
        "SELECT {bucket} AS bucket, max(grimace_max) AS grimace, max(twitch_max) AS twitch, max(apnea_max) AS apnea, "
        "(sum(resp_rate_avg * n) / nullif(sum(n) FILTER (WHERE resp_rate_avg IS NOT NULL), 0))::real AS resp_rate, "
        "(sum(baseline_resp_rate_avg * n) / nullif(sum(n) FILTER (WHERE baseline_resp_rate_avg IS NOT NULL), 0))::real "
        "AS baseline_resp_rate "
        "FROM detections_1m WHERE bed_id = %(bed_id)s AND bucket >= %(start)s AND bucket < %(end)s "
        "GROUP BY 1 ORDER BY 1"
    ).format(bucket=bucket_expression(backend, "bucket"))
    params = {"width": chart_width(end - start), "origin": BUCKET_ORIGIN, "bed_id": bed_id, "start": start, "end": end}
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return pd.DataFrame(rows, columns=["bucket", "grimace", "twitch", "apnea", "resp_rate", "baseline_resp_rate"])


@dataclass(frozen=True)
class CameraEvent:
    ts: datetime
    camera_id: str
    state: str


def camera_changes(conn: psycopg.Connection, bed_id: str, *, since: datetime, now: datetime) -> list[CameraEvent]:
    """A bed's camera state changes in (since, now] (the periodic statuses in between left out)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT ts, camera_id, state FROM ("
            "  SELECT ts, camera_id, state, lag(state) OVER (PARTITION BY camera_id ORDER BY ts) AS previous"
            "  FROM camera_status WHERE bed_id = %s AND ts > %s AND ts <= %s"
            ") s WHERE previous IS DISTINCT FROM state ORDER BY ts",
            (bed_id, since, now),
        ).fetchall()
    return [CameraEvent(**row) for row in rows]


# --- system health --------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraHealthRow:
    bed_id: str
    camera_id: str
    ts: datetime
    state: str
    source: str
    fps_in: float
    fps_out: float
    frames_dropped: int
    reconnects: int
    last_frame_age_s: float | None
    detail: str


def camera_health_rows(conn: psycopg.Connection, now: datetime) -> list[CameraHealthRow]:
    """The latest status of every camera heard from in the last hour."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT DISTINCT ON (bed_id, camera_id) bed_id, camera_id, ts, state, source, fps_in, fps_out, "
            "frames_dropped, reconnects, last_frame_age_s, detail FROM camera_status "
            "WHERE ts > %s AND ts <= %s ORDER BY bed_id, camera_id, ts DESC",
            (now - CAMERA_WINDOW, now),
        ).fetchall()
    return [CameraHealthRow(**row) for row in rows]


@dataclass(frozen=True)
class StageFreshness:
    """How current one stage's output in the database is."""

    stage: str
    newest: datetime | None
    """Newest event time the stage produced (UTC); None when nothing in the last hour."""
    write_delay_s: float | None
    """Median seconds from event time to the sink storing it, over the last 5 minutes."""


def stage_freshness(conn: psycopg.Connection, now: datetime) -> list[StageFreshness]:
    """Per pipeline stage, the newest thing it produced that reached the database, and how long
    the way there took (staleness stands in for consumer lag when the broker cannot be asked)."""
    hour, recent = now - timedelta(hours=1), now - timedelta(minutes=5)
    probes = (
        ("vitals ingest → sink", "vitals", "ts"),
        ("inference → sink (detections)", "detections", "ts"),
        ("camera ingest → sink (status)", "camera_status", "ts"),
        ("alerts → sink", "alert_versions", "updated_at"),
    )
    out = []
    for stage, table, column in probes:
        query = sql.SQL(
            "SELECT (SELECT max({c}) FROM {t} WHERE {c} > %(hour)s AND {c} <= %(now)s), "
            "(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM {r} - {c})) "
            " FROM {t} WHERE {c} > %(recent)s AND {c} <= %(now)s)"
        ).format(
            c=sql.Identifier(column),
            t=sql.Identifier(table),
            r=sql.Identifier("recorded_at" if table == "alert_versions" else "received_at"),
        )
        row = conn.execute(query, {"hour": hour, "recent": recent, "now": now}).fetchone()
        newest, delay = (row[0], row[1]) if row else (None, None)
        out.append(StageFreshness(stage, newest, float(delay) if delay is not None else None))
    return out
