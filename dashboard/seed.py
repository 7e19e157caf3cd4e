"""A known ward scenario in the database, for the dashboard's tests, benchmark and screenshots.

Six bed profiles, cycled over the beds, each with a clear place in the urgency order:

=============  ==============================================  =====================================
profile        data                                            open alert
=============  ==============================================  =====================================
deteriorating  HR 125, RR 26, SpO2 91, BP 95/60, T 38.4 (NEWS2 10-11) NEWS2_HIGH high, escalated level 1
apnea          RR 10, video apnea 0.92 with evidence keyframe  APNEA_VIDEO high
stale          vitals stopped 10 min ago                       VITALS_STALE medium (technical)
camera-lost    normal vitals, camera lost 5 min ago            CAMERA_LOST low (technical)
medium         HR 112, RR 22, T 38.0 (NEWS2 4)                 NEWS2_MEDIUM medium, acknowledged
stable         HR 72, RR 15, SpO2 97, BP 122/76, T 36.8        none (one resolved earlier)
=============  ==============================================  =====================================

Time series go in by COPY through the project's write path (:class:`infra.db.writer.DatabaseWriter`)
as ready rows, then the per-minute rollups are refreshed, as `icu db maintain` does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import cv2
import numpy as np
import psycopg

from icu.contracts import FINDING_THRESHOLD, Alert, AlertKind, AlertPriority, AlertState, Evidence, Finding
from infra.db.maintenance import maintain, refresh_rollups
from infra.db.migrate import Backend
from infra.db.writer import CAMERA_STATUS, DETECTIONS, VITALS, CopyTarget, DatabaseWriter

PROFILES: Final = ("deteriorating", "apnea", "stale", "camera-lost", "medium", "stable")
EXPECTED_ORDER: Final = ("deteriorating", "apnea", "stale", "camera-lost", "medium", "stable")
"""Urgency order of the profiles on the ward page (most urgent first)."""

BASE: Final[dict[str, dict[str, float]]] = {
    "deteriorating": {"hr": 125, "rr": 26, "spo2": 91, "sbp": 95, "dbp": 60, "temp_c": 38.6},
    "apnea": {"hr": 84, "rr": 10, "spo2": 96, "sbp": 118, "dbp": 72, "temp_c": 36.9},
    "stale": {"hr": 78, "rr": 16, "spo2": 97, "sbp": 126, "dbp": 80, "temp_c": 36.7},
    "camera-lost": {"hr": 70, "rr": 14, "spo2": 98, "sbp": 130, "dbp": 82, "temp_c": 36.6},
    "medium": {"hr": 112, "rr": 22, "spo2": 96, "sbp": 124, "dbp": 78, "temp_c": 38.2},
    "stable": {"hr": 72, "rr": 15, "spo2": 97, "sbp": 122, "dbp": 76, "temp_c": 36.8},
}
ALERT_NAMESPACE: Final = uuid.UUID("0b4f2a57-8a1e-4f6c-9a55-6d8e3f7f0d42")
CHUNK: Final = 50_000


@dataclass(frozen=True)
class SeedReport:
    beds: list[str]
    profiles: dict[str, str]
    vitals_rows: int
    detection_rows: int
    camera_rows: int
    alerts: int
    seconds: float
    now: datetime
    """The time the seeded data ends (the live beds' latest readings)."""


def bed_ids(beds: int, prefix: str = "icu1-bed") -> list[str]:
    return [f"{prefix}{i + 1:02d}" for i in range(beds)]


def profile_of(index: int) -> str:
    return PROFILES[index % len(PROFILES)]


def alert_id(bed_id: str, code: str) -> uuid.UUID:
    return uuid.uuid5(ALERT_NAMESPACE, f"{bed_id}/{code}")


def _chunks(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _vitals_rows(bed: str, profile: str, start: datetime, seconds: int, seed: int) -> Iterator[tuple[Any, ...]]:
    base = BASE[profile]
    rng = np.random.default_rng(seed)
    hr = base["hr"] + rng.normal(0, 1.5, seconds)
    rr = base["rr"] + rng.normal(0, 0.5, seconds)
    spo2 = np.clip(base["spo2"] + rng.normal(0, 0.4, seconds), 50, 100)
    # The last 2 hours drift towards the profile's values from a calmer start, so charts show a course.
    ramp = np.clip((np.arange(seconds) - (seconds - 7200)) / 7200, 0, 1)
    calm = BASE["stable"]
    hr = calm["hr"] + (hr - calm["hr"]) * ramp
    rr = calm["rr"] + (rr - calm["rr"]) * ramp
    spo2 = calm["spo2"] + (spo2 - calm["spo2"]) * ramp
    step = timedelta(seconds=1)
    for i in range(seconds):
        ts = start + step * i
        nibp = i % 300 == 0
        temp = i % 900 == 0
        first = temp  # ACVPU and oxygen charted with the temperature, every 15 min
        sbp = calm["sbp"] + (base["sbp"] - calm["sbp"]) * ramp[i] if nibp else None
        dbp = calm["dbp"] + (base["dbp"] - calm["dbp"]) * ramp[i] if nibp else None
        yield (
            ts,
            bed,
            "seed",
            None,
            round(float(hr[i]), 1),
            round(float(rr[i]), 1),
            round(float(spo2[i]), 1),
            round(sbp, 0) if sbp is not None else None,
            round(dbp, 0) if dbp is not None else None,
            round((sbp + 2 * dbp) / 3, 0) if sbp is not None and dbp is not None else None,
            round(calm["temp_c"] + (base["temp_c"] - calm["temp_c"]) * ramp[i], 1) if temp else None,
            False if first else None,
            "A" if first else None,
            1,
        )


def _detection_rows(bed: str, profile: str, start: datetime, seconds: int, seed: int) -> Iterator[tuple[Any, ...]]:
    rng = np.random.default_rng(seed + 1)
    apnea = np.clip(rng.normal(0.03, 0.02, seconds), 0, 1)
    if profile == "apnea":
        apnea[-90:] = np.clip(rng.normal(0.92, 0.02, 90), 0, 1)
    grimace = np.clip(rng.normal(0.08 if profile != "deteriorating" else 0.35, 0.04, seconds), 0, 1)
    twitch = np.clip(rng.normal(0.02, 0.01, seconds), 0, 1)
    rate = BASE[profile]["rr"]
    resp = rate + rng.normal(0, 0.8, seconds)
    baseline = rate + rng.normal(0.5, 1.5, seconds)
    if profile == "apnea":
        resp[-90:] = 0.0
        baseline[-90:] = 0.0
    step = timedelta(seconds=1)
    for i in range(seconds):
        ts = start + step * i
        yield (
            ts,
            bed,
            "cam1",
            i,
            "temporal-small",
            "temporal-small@1",
            float(grimace[i]),
            float(twitch[i]),
            float(apnea[i]),
            float(max(0.0, resp[i])),
            0.9,
            float(max(0.0, baseline[i])),
            0.7,
            1.0,
            False,
            False,
            ts + timedelta(seconds=2),
            [
                name
                for name, p in (("grimace", grimace[i]), ("twitch", twitch[i]), ("apnea", apnea[i]))
                if p >= FINDING_THRESHOLD
            ],
            ts + timedelta(seconds=2, milliseconds=80),
        )


def _camera_rows(bed: str, profile: str, start: datetime, seconds: int, period_s: int) -> Iterator[tuple[Any, ...]]:
    lost_from = seconds - 300 if profile == "camera-lost" else seconds + 1
    for i in range(0, seconds, period_s):
        lost = i >= lost_from
        yield (
            start + timedelta(seconds=i),
            bed,
            "cam1",
            "lost" if lost else "live",
            "rtsp",
            0.0 if lost else 25.0,
            0.0 if lost else 10.0,
            i // 600,
            1 if lost else 0,
            float(i - lost_from) if lost else 0.1,
            "no frames" if lost else "",
        )


def keyframe_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A synthetic keyframe with a saliency heat map over the chest, like the inference worker's."""
    frame = np.full((height, width, 3), 70, np.uint8)
    cv2.ellipse(frame, (width // 2, height // 3), (40, 50), 0, 0, 360, (160, 170, 190), -1)
    cv2.rectangle(frame, (width // 2 - 70, height // 2), (width // 2 + 70, height - 10), (120, 130, 150), -1)
    heat = np.zeros((height, width), np.float32)
    cv2.circle(heat, (width // 2, int(height * 0.7)), 50, 1.0, -1)
    blurred = cv2.GaussianBlur(heat, (0, 0), 20)
    scaled = (blurred / max(float(blurred.max()), 1e-6) * 255).astype(np.uint8)
    overlay = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
    blended = cv2.addWeighted(frame, 0.6, overlay, 0.4, 0)
    ok, encoded = cv2.imencode(".jpg", blended, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def _alerts(bed: str, profile: str, now: datetime) -> list[Alert]:
    def make(code: str, kind: AlertKind, priority: AlertPriority, explanation: str, raised_ago_s: float,
             versions: list[dict[str, Any]], news2: int | None = None,
             evidence: dict[str, Any] | None = None) -> list[Alert]:  # fmt: skip
        raised = now - timedelta(seconds=raised_ago_s)
        out = []
        for number, changes in enumerate(versions, start=1):
            fields: dict[str, Any] = {
                "bed_id": bed,
                "alert_id": alert_id(bed, code),
                "version": number,
                "code": code,
                "kind": kind,
                "priority": priority,
                "state": AlertState.OPEN,
                "raised_at": raised,
                "updated_at": raised,
                "explanation": explanation,
                "evidence": evidence or {},
                "news2": news2,
            }
            fields.update(changes)
            out.append(Alert.model_validate(fields))
        return out

    physiological, technical = AlertKind.PHYSIOLOGICAL, AlertKind.TECHNICAL
    if profile == "deteriorating":
        return make("NEWS2_HIGH", physiological, AlertPriority.HIGH, "NEWS2 11 (RR 26, SpO2 91, HR 125, SBP 95)",
                    240, [{}, {"state": AlertState.ESCALATED, "escalation_level": 1,
                                "updated_at": now - timedelta(seconds=210)}],
                    news2=11, evidence={"news2": 11, "rr": 26.0})  # fmt: skip
    if profile == "apnea":
        return make("APNEA_VIDEO", physiological, AlertPriority.HIGH, "No breathing movement on video for 25 s",
                    65, [{}], evidence={"finding": "apnea", "apnea_s": 25.0})  # fmt: skip
    if profile == "stale":
        return make("VITALS_STALE", technical, AlertPriority.MEDIUM, "No vitals from the monitor for 5 min",
                    300, [{}])  # fmt: skip
    if profile == "camera-lost":
        return make("CAMERA_LOST", technical, AlertPriority.LOW, "Camera cam1 lost: no frames", 280, [{}])
    if profile == "medium":
        return make("NEWS2_MEDIUM", physiological, AlertPriority.MEDIUM, "NEWS2 5 (HR 112, RR 22, T 38.2)", 900,
                    [{}, {"state": AlertState.ACKNOWLEDGED, "acknowledged_by": "nurse.b",
                          "acknowledged_at": now - timedelta(seconds=800), "updated_at": now - timedelta(seconds=800)}],
                    news2=5)  # fmt: skip
    return make("NEWS2_LOW_MEDIUM", physiological, AlertPriority.LOW, "Red score: SpO2 91", 6 * 3600,
                [{}, {"state": AlertState.RESOLVED, "resolved_at": now - timedelta(hours=5),
                      "updated_at": now - timedelta(hours=5)}])  # fmt: skip


def seed_ward(
    conn: psycopg.Connection,
    backend: Backend,
    *,
    beds: int = 6,
    hours: float = 2.0,
    now: datetime | None = None,
    ward: str = "icu1",
    camera_period_s: int = 10,
) -> SeedReport:
    """Seed ``beds`` beds with ``hours`` of 1 Hz vitals and detections ending at ``now``, camera
    statuses, alerts and evidence. ``conn`` must be autocommit on a migrated database."""
    began = time.perf_counter()
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    seconds = int(hours * 3600)
    start = now - timedelta(seconds=seconds)
    maintain(conn, backend, retention_days=30, now=now)  # daily partitions for the whole span
    writer = DatabaseWriter(conn)
    vitals_target: CopyTarget[Any] = CopyTarget(VITALS.table, VITALS.columns, lambda row: row)
    detections_target: CopyTarget[Any] = CopyTarget(DETECTIONS.table, DETECTIONS.columns, lambda row: row)
    camera_target: CopyTarget[Any] = CopyTarget(CAMERA_STATUS.table, CAMERA_STATUS.columns, lambda row: row)
    ids = bed_ids(beds)
    profiles = {bed: profile_of(i) for i, bed in enumerate(ids)}
    counts = {"vitals": 0, "detections": 0, "camera": 0}
    alerts: list[Alert] = []
    evidence: list[Evidence] = []
    jpeg = keyframe_jpeg()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO beds (bed_id, ward, label) VALUES (%s, %s, %s) ON CONFLICT (bed_id) DO NOTHING",
            [(bed, ward, f"Bed {bed[-2:]}") for bed in ids],
        )
    for i, bed in enumerate(ids):
        profile = profiles[bed]
        vitals_seconds = seconds - 600 if profile == "stale" else seconds
        for chunk in _chunks(_vitals_rows(bed, profile, start, vitals_seconds, seed=i)):
            counts["vitals"] += writer.copy(vitals_target, chunk)
        for chunk in _chunks(_detection_rows(bed, profile, start, seconds, seed=i)):
            counts["detections"] += writer.copy(detections_target, chunk)
        for chunk in _chunks(_camera_rows(bed, profile, start, seconds, camera_period_s)):
            counts["camera"] += writer.copy(camera_target, chunk)
        alerts += _alerts(bed, profile, now)
        if profile == "apnea":
            ts = now - timedelta(seconds=88)
            evidence.append(
                Evidence(
                    bed_id=bed,
                    camera_id="cam1",
                    finding=Finding.APNEA,
                    ts=ts,
                    seq=seconds - 88,
                    window_start=ts - timedelta(seconds=12),
                    window_end=ts + timedelta(seconds=2),
                    probability=0.91,
                    model="temporal-small",
                    model_version="temporal-small@1",
                    saliency_rows=2,
                    saliency_cols=2,
                    saliency=[0.1, 0.1, 0.5, 0.3],
                    keyframe_jpeg=jpeg,
                    inferred_at=ts + timedelta(seconds=2),
                )
            )
    writer.write_alerts(alerts)
    writer.write_evidence(evidence)
    refresh_rollups(conn, backend, start, now)
    return SeedReport(
        beds=ids,
        profiles=profiles,
        vitals_rows=counts["vitals"],
        detection_rows=counts["detections"],
        camera_rows=counts["camera"],
        alerts=len({a.alert_id for a in alerts}),
        seconds=round(time.perf_counter() - began, 2),
        now=now,
    )
