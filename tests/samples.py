"""Valid sample messages of every contract, for tests of every stage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from icu.contracts import (
    AckAction,
    Alert,
    AlertAck,
    AlertKind,
    AlertPriority,
    AlertState,
    BaselineFindings,
    CameraState,
    CameraStatus,
    Consciousness,
    Contract,
    DeadLetter,
    Detection,
    Evidence,
    Finding,
    Frame,
    FrameHeader,
    Vitals,
    make_frame,
)
from tests.fixtures import load

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
ALERT_ID = uuid.UUID("7b0e5f0e-3f7a-4a53-9d61-6f3f5d0c2a11")


def vitals(bed_id: str = "icu1-bed01", ts: datetime = T0, **changes: object) -> Vitals:
    fields: dict[str, object] = dict(
        bed_id=bed_id,
        ts=ts,
        source="sim",
        hr=88.0,
        rr=18.0,
        spo2=96.0,
        sbp=124.0,
        dbp=78.0,
        map=93.0,
        temp_c=37.1,
        on_oxygen=False,
        consciousness=Consciousness.ALERT,
    )
    fields.update(changes)
    return Vitals.model_validate(fields)


def detection(bed_id: str = "icu1-bed01", ts: datetime = T0, seq: int = 1) -> Detection:
    return Detection(
        bed_id=bed_id,
        camera_id="cam1",
        ts=ts,
        seq=seq,
        model="temporal",
        model_version="0.1.0",
        grimace=0.1,
        twitch=0.02,
        apnea=0.0,
        resp_rate=16.5,
        resp_quality=0.9,
        baseline=BaselineFindings(resp_rate=16.0, resp_quality=0.8, motion_energy=1.5, twitch_burst=False),
        inferred_at=ts + timedelta(milliseconds=80),
    )


def evidence(bed_id: str = "icu1-bed01", ts: datetime = T0) -> Evidence:
    return Evidence(
        bed_id=bed_id,
        camera_id="cam1",
        finding=Finding.APNEA,
        ts=ts,
        seq=7,
        window_start=ts - timedelta(seconds=10),
        window_end=ts + timedelta(seconds=2),
        probability=0.82,
        model="temporal-small",
        model_version="temporal-small@1",
        saliency_rows=2,
        saliency_cols=2,
        saliency=[0.1, 0.2, 0.3, 0.4],
        keyframe_jpeg=b"\xff\xd8\xff\xe0 keyframe \xff\xd9",
        inferred_at=ts + timedelta(seconds=2, milliseconds=90),
    )


def alert(version: int = 1, state: AlertState = AlertState.OPEN, bed_id: str = "icu1-bed01") -> Alert:
    extra: dict[str, object] = {}
    if state is AlertState.ACKNOWLEDGED:
        extra = {"acknowledged_by": "nurse.a", "acknowledged_at": T0 + timedelta(seconds=30)}
    if state is AlertState.RESOLVED:
        extra = {"resolved_at": T0 + timedelta(minutes=5)}
    return Alert.model_validate(
        dict(
            bed_id=bed_id,
            alert_id=ALERT_ID,
            version=version,
            code="NEWS2_HIGH",
            kind=AlertKind.PHYSIOLOGICAL,
            priority=AlertPriority.HIGH,
            state=state,
            raised_at=T0,
            updated_at=T0 + timedelta(seconds=version),
            explanation="NEWS2 7 (RR 26, SpO2 91, HR 118)",
            evidence={"news2": 7, "rr": 26.0, "video": False},
            news2=7,
            **extra,
        )
    )


def ack(action: AckAction = AckAction.ACKNOWLEDGE) -> AlertAck:
    snooze = {"snooze_s": 600, "reason": "patient being repositioned"} if action is AckAction.SNOOZE else {}
    return AlertAck.model_validate(
        dict(
            ack_id=uuid.uuid4(), alert_id=ALERT_ID, bed_id="icu1-bed01", user="nurse.a", ts=T0, action=action, **snooze
        )
    )


def camera_status(bed_id: str = "icu1-bed01", ts: datetime = T0) -> CameraStatus:
    return CameraStatus(
        bed_id=bed_id,
        camera_id="cam1",
        ts=ts,
        state=CameraState.LIVE,
        source="rtsp",
        fps_in=30.0,
        fps_out=10.0,
        frames_dropped=3,
        reconnects=0,
        last_frame_age_s=0.1,
    )


def dead_letter() -> DeadLetter:
    return DeadLetter(
        ts=T0,
        stage="db-sink",
        source_topic="icu.vitals",
        partition=2,
        offset=41,
        key=b"icu1-bed01",
        value=b"\x00not json",
        headers=[],
        reason="invalid vitals message: not valid JSON",
        error_type="contract",
    )


def frame(bed_id: str = "icu1-bed01", seq: int = 1) -> Frame:
    header = FrameHeader(bed_id=bed_id, camera_id="cam1", capture_ts=T0, seq=seq, width=32, height=24)
    return make_frame(header, load("frame-32x24.jpg"))


def every_json_message() -> list[Contract]:
    return [
        vitals(),
        detection(),
        evidence(),
        alert(),
        alert(2, AlertState.ACKNOWLEDGED),
        alert(3, AlertState.RESOLVED),
        ack(),
        ack(AckAction.SNOOZE),
        camera_status(),
        dead_letter(),
    ]
