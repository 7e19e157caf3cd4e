"""`icu eval alerts`'s core on hand-worked cases: matching, time to alert, false alerts, burden."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from icu.cli import build_parser
from icu.contracts import Alert, AlertKind, AlertPriority, AlertState
from research import ResearchError
from research.evaluate import Annotation, evaluate_alerts, fold_alerts, load_annotations, table
from research.plot import plot_alerts

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def version(bed: str, code: str, raised: float, v: int, state: AlertState, updated: float,
            kind: AlertKind = AlertKind.PHYSIOLOGICAL, alert_id: str | None = None) -> Alert:  # fmt: skip
    return Alert(bed_id=bed, alert_id=uuid.UUID(alert_id or uuid.uuid5(uuid.NAMESPACE_URL, f"{bed}{code}{raised}").hex),
                 version=v, code=code, kind=kind, priority=AlertPriority.HIGH, state=state, raised_at=at(raised),
                 updated_at=at(updated), explanation="x",
                 resolved_at=at(updated) if state is AlertState.RESOLVED else None)  # fmt: skip


def test_time_to_alert_misses_false_alerts_and_burden() -> None:
    truth = [
        Annotation(bed_id="b1", onset=at(100), end=at(130), type="apnea"),
        Annotation(bed_id="b1", onset=at(1000), end=at(1040), type="apnea"),  # missed
        Annotation(bed_id="b2", onset=at(200), end=at(250), type="seizure"),
        Annotation(bed_id="b2", onset=at(50), end=at(60), type="apnea", alert_expected=False),
    ]
    versions = [
        version("b1", "APNEA_VIDEO", 121, 1, AlertState.OPEN, 121),
        version("b1", "APNEA_VIDEO", 121, 2, AlertState.ESCALATED, 151),
        version("b1", "APNEA_VIDEO", 121, 2, AlertState.ESCALATED, 151),  # a redelivered duplicate
        version("b1", "APNEA_VIDEO", 121, 3, AlertState.RESOLVED, 200),
        version("b2", "NEWS2", 220, 1, AlertState.OPEN, 220),  # during the seizure: not false, not a catch
        version("b2", "SEIZURE_VIDEO", 208, 1, AlertState.OPEN, 208),
        version("b2", "APNEA_VIDEO", 55, 1, AlertState.OPEN, 55),  # below the expected threshold: false
        version("b1", "NEWS2", 2000, 1, AlertState.OPEN, 2000),  # false
        version("b1", "VITALS_STALE", 3000, 1, AlertState.OPEN, 3000, kind=AlertKind.TECHNICAL),
        version("b1", "NEWS2", 9000, 1, AlertState.OPEN, 9000),  # after the recording: not counted
    ]
    raises = fold_alerts(versions)
    assert len(raises) == 7
    apnea = next(r for r in raises if r.bed_id == "b1" and r.code == "APNEA_VIDEO")
    assert (apnea.versions, apnea.escalations, apnea.resolved_at) == (3, 1, at(200))
    result = evaluate_alerts(truth, raises, {"b1": 2.0, "b2": 2.0}, window=(T0, at(7200)))
    s = result.summary()
    assert [(o.type, o.time_to_alert_s, o.detected_by) for o in result.onsets] == [
        ("apnea", 21.0, "APNEA_VIDEO"),
        ("seizure", 8.0, "SEIZURE_VIDEO"),
        ("apnea", None, None),
    ]
    assert (s["onsets"], s["detected"], s["missed"]) == (3, 2, 1)
    assert s["median_time_to_alert_s"] == 14.5
    assert s["false_alerts"] == 2
    assert s["false_alerts_per_patient_hour"] == 0.5  # 2 over 4 patient-hours
    assert s["alerts"] == 6
    assert s["alerts_per_bed_per_day"] == 36.0  # 6 raises over 4/24 bed-days
    assert s["physiological_alerts_per_bed_per_day"] == 30.0
    assert s["escalations_per_bed_per_day"] == 6.0
    assert s["by_type"]["apnea"] == {"onsets": 2, "detected": 1, "missed": 1, "median_time_to_alert_s": 21.0,
                                     "max_time_to_alert_s": 21.0, "codes": ["APNEA_VIDEO"]}  # fmt: skip
    assert "false alerts / patient-hour  0.5" in table(s)


def test_an_alert_already_open_at_the_onset_catches_it_at_once() -> None:
    truth = [Annotation(bed_id="b1", onset=at(600), end=at(900), type="sepsis")]
    raises = fold_alerts([version("b1", "NEWS2", 500, 1, AlertState.OPEN, 500)])
    result = evaluate_alerts(truth, raises, {"b1": 1.0})
    assert result.onsets[0].time_to_alert_s == 0.0
    assert len(result.false_raises) == 1  # raised before anything was wrong


def test_annotation_files_take_events_or_the_simulator_s_truth_lines(tmp_path: Path) -> None:
    path = tmp_path / "annotations.jsonl"
    lines = [
        {"bed_id": "b1", "onset": "2026-03-01T08:01:00Z", "end": "2026-03-01T08:02:00Z", "type": "fall",
         "codes": ["FALL_VIDEO"]},
        {"bed_id": "b2", "start": "2026-03-01T08:00:00+00:00", "events": [
            {"type": "apnea", "onset_ts": "2026-03-01T08:00:10+00:00", "end_ts": "2026-03-01T08:00:40+00:00",
             "alert_expected": True}]},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    got = load_annotations(path)
    assert [(a.bed_id, a.type, a.family(), a.alert_expected) for a in got] == [
        ("b1", "fall", ("FALL_VIDEO",), True),
        ("b2", "apnea", ("APNEA_VIDEO",), True),
    ]
    path.write_text('{"bed_id": "b1", "onset": "2026-03-01T08:01:00"}\n')
    with pytest.raises(ResearchError, match=r"annotations\.jsonl:1"):
        load_annotations(path)


def test_the_plot_is_a_png_with_the_alerts_drawn(tmp_path: Path) -> None:
    truth = [Annotation(bed_id="b1", onset=at(100), end=at(130), type="apnea")]
    raises = fold_alerts([version("b1", "APNEA_VIDEO", 121, 1, AlertState.OPEN, 121)])
    empty = plot_alerts(tmp_path / "empty.png", beds=["b1"], start=T0, end=at(600), annotations=truth, raises=[],
                        false_ids=set())  # fmt: skip
    drawn = plot_alerts(tmp_path / "a.png", beds=["b1"], start=T0, end=at(600), annotations=truth, raises=raises,
                        false_ids=set())  # fmt: skip
    assert drawn.read_bytes()[:4] == b"\x89PNG"
    assert drawn.read_bytes() != empty.read_bytes()


def test_icu_eval_takes_a_clip_directory_or_the_alerts_target() -> None:
    parser = build_parser()
    clips = parser.parse_args(["eval", "--data", "clips", "--model", "temporal"])
    assert (clips.target, str(clips.data), clips.model) == (None, "clips", "temporal")
    alerts = parser.parse_args(["eval", "alerts", "--recording", "rec", "--replay", "cap", "--grace", "60"])
    assert (alerts.target, str(alerts.recording), str(alerts.replay), alerts.grace) == ("alerts", "rec", "cap", 60)
    replay = parser.parse_args(["replay", "rec", "--speed", "max", "--topic-prefix", "r1"])
    assert (replay.speed, replay.topic_prefix) == ("max", "r1")
    record = parser.parse_args(["record", "--out", "o", "--export"])
    assert record.export
    assert record.blur_faces is None  # so --export turns blurring on
