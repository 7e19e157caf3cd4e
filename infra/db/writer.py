"""The database write path: contract messages in, rows out, idempotently.

Time series are COPYed straight into their table inside a savepoint. If the batch holds a
row that is already there (a batch redelivered after a crash or rebalance: consumers are
at-least-once), the unique index refuses it, the savepoint rolls back, and the batch goes
the slow way instead: COPY into a per-session staging table, then one
``INSERT ... ON CONFLICT DO NOTHING``. So nothing is stored twice, and the common case costs
one COPY. Evidence (keyframe JPEG and saliency grid) takes the same path. Alert versions and
acknowledgements are low-volume and go through plain inserts with the same conflict rule; the
``alerts`` table of current states follows from ``alert_versions`` by trigger.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql

from icu.contracts import Alert, AlertAck, CameraStatus, Contract, Detection, Evidence, Vitals

M = TypeVar("M", bound=Contract)
Row = tuple[Any, ...]


@dataclass(frozen=True)
class CopyTarget(Generic[M]):
    """How one message type maps onto one time-series table."""

    table: str
    columns: tuple[str, ...]
    row: Callable[[M], Row]

    @property
    def staging(self) -> str:
        return f"icu_stage_{self.table}"


VITALS = CopyTarget[Vitals](
    "vitals",
    (
        "ts",
        "bed_id",
        "source",
        "patient_id",
        "hr",
        "rr",
        "spo2",
        "sbp",
        "dbp",
        "map",
        "temp_c",
        "on_oxygen",
        "consciousness",
        "spo2_scale",
    ),
    lambda v: (
        v.ts,
        v.bed_id,
        v.source,
        v.patient_id,
        v.hr,
        v.rr,
        v.spo2,
        v.sbp,
        v.dbp,
        v.map,
        v.temp_c,
        v.on_oxygen,
        v.consciousness.value if v.consciousness else None,
        v.spo2_scale,
    ),
)

DETECTIONS = CopyTarget[Detection](
    "detections",
    (
        "ts",
        "bed_id",
        "camera_id",
        "seq",
        "model",
        "model_version",
        "grimace",
        "twitch",
        "apnea",
        "resp_rate",
        "resp_quality",
        "baseline_resp_rate",
        "baseline_resp_quality",
        "motion_energy",
        "twitch_burst",
        "degraded",
        "window_end",
        "findings",
        "inferred_at",
    ),
    lambda d: (
        d.ts,
        d.bed_id,
        d.camera_id,
        d.seq,
        d.model,
        d.model_version,
        d.grimace,
        d.twitch,
        d.apnea,
        d.resp_rate,
        d.resp_quality,
        d.baseline.resp_rate if d.baseline else None,
        d.baseline.resp_quality if d.baseline else None,
        d.baseline.motion_energy if d.baseline else None,
        d.baseline.twitch_burst if d.baseline else None,
        d.degraded,
        d.window_end,
        None if d.findings is None else [f.value for f in d.findings],
        d.inferred_at,
    ),
)

EVIDENCE = CopyTarget[Evidence](
    "evidence",
    (
        "ts",
        "bed_id",
        "camera_id",
        "finding",
        "seq",
        "window_start",
        "window_end",
        "probability",
        "model",
        "model_version",
        "saliency_rows",
        "saliency_cols",
        "saliency",
        "keyframe_jpeg",
        "inferred_at",
    ),
    lambda e: (
        e.ts,
        e.bed_id,
        e.camera_id,
        e.finding.value,
        e.seq,
        e.window_start,
        e.window_end,
        e.probability,
        e.model,
        e.model_version,
        e.saliency_rows,
        e.saliency_cols,
        e.saliency,  # a list of floats: COPY text format spells it as an array literal
        e.keyframe_jpeg,  # bytes: COPY text format spells it as bytea hex
        e.inferred_at,
    ),
)

CAMERA_STATUS = CopyTarget[CameraStatus](
    "camera_status",
    (
        "ts",
        "bed_id",
        "camera_id",
        "state",
        "source",
        "fps_in",
        "fps_out",
        "frames_dropped",
        "reconnects",
        "last_frame_age_s",
        "detail",
    ),
    lambda c: (
        c.ts,
        c.bed_id,
        c.camera_id,
        c.state.value,
        c.source,
        c.fps_in,
        c.fps_out,
        c.frames_dropped,
        c.reconnects,
        c.last_frame_age_s,
        c.detail,
    ),
)

_ALERT_COLUMNS = (
    "alert_id",
    "version",
    "bed_id",
    "code",
    "kind",
    "priority",
    "state",
    "raised_at",
    "updated_at",
    "explanation",
    "evidence",
    "news2",
    "escalation_level",
    "acknowledged_by",
    "acknowledged_at",
    "snoozed_until",
    "resolved_at",
)
_ACK_COLUMNS = ("ack_id", "alert_id", "bed_id", "user_name", "ts", "action", "snooze_s", "reason")


class DatabaseWriter:
    """Writes batches of contract messages on one connection. Not thread-safe."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.fast_batches = 0  # batches stored by one direct COPY
        self.deduplicated_batches = 0  # batches that held already-stored rows

    def write_vitals(self, batch: Sequence[Vitals]) -> int:
        return self.copy(VITALS, batch)

    def write_detections(self, batch: Sequence[Detection]) -> int:
        return self.copy(DETECTIONS, batch)

    def write_camera_status(self, batch: Sequence[CameraStatus]) -> int:
        return self.copy(CAMERA_STATUS, batch)

    def write_evidence(self, batch: Sequence[Evidence]) -> int:
        """Evidence rows, keyframe JPEG (bytea) and saliency grid (real[]) included; idempotent
        on (bed_id, finding, ts, model)."""
        return self.copy(EVIDENCE, batch)

    def copy(self, target: CopyTarget[M], batch: Sequence[M]) -> int:
        """COPY ``batch`` in; returns how many rows were new (duplicates are skipped)."""
        if not batch:
            return 0
        rows = [target.row(message) for message in batch]
        columns = sql.SQL(", ").join(map(sql.Identifier, target.columns))
        with self.conn.transaction(), self.conn.cursor() as cur:
            try:
                with self.conn.transaction():  # savepoint: a duplicate undoes only this attempt
                    self._copy_rows(cur, sql.Identifier(target.table), columns, rows)
                self.fast_batches += 1
                return len(rows)
            except psycopg.errors.UniqueViolation:
                self.deduplicated_batches += 1
            staging = sql.Identifier(target.staging)
            self._ensure_staging(cur, target)
            self._copy_rows(cur, staging, columns, rows)
            cur.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                    sql.Identifier(target.table), columns, columns, staging
                )
            )
            inserted = cur.rowcount
            cur.execute(sql.SQL("TRUNCATE {}").format(staging))
        return inserted

    @staticmethod
    def _copy_rows(cur: psycopg.Cursor[Any], table: sql.Identifier, columns: sql.Composable, rows: list[Row]) -> None:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)) as copy:
            for row in rows:
                copy.write_row(row)

    def _ensure_staging(self, cur: psycopg.Cursor[Any], target: CopyTarget[Any]) -> None:
        # Always asked: a rollback of the transaction that created it drops the table again.
        cur.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(target.staging), sql.Identifier(target.table)
            )
        )

    def write_alerts(self, batch: Sequence[Alert]) -> int:
        """Insert alert versions; the current-state table follows by trigger."""
        rows = [
            (
                a.alert_id,
                a.version,
                a.bed_id,
                a.code,
                a.kind.value,
                a.priority.value,
                a.state.value,
                a.raised_at,
                a.updated_at,
                a.explanation,
                json.dumps(a.evidence),
                a.news2,
                a.escalation_level,
                a.acknowledged_by,
                a.acknowledged_at,
                a.snoozed_until,
                a.resolved_at,
            )
            for a in batch
        ]
        return self._insert("alert_versions", _ALERT_COLUMNS, rows)

    def write_acks(self, batch: Sequence[AlertAck]) -> int:
        rows = [(k.ack_id, k.alert_id, k.bed_id, k.user, k.ts, k.action.value, k.snooze_s, k.reason) for k in batch]
        return self._insert("alert_acks", _ACK_COLUMNS, rows)

    def _insert(self, table: str, columns: tuple[str, ...], rows: list[Row]) -> int:
        if not rows:
            return 0
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join([sql.Placeholder()] * len(columns)),
        )
        inserted = 0
        with self.conn.transaction(), self.conn.cursor() as cur:
            for row in rows:
                cur.execute(statement, row)
                inserted += cur.rowcount
        return inserted
