"""The recording format without Kafka: write, read back merged by time, re-stamp, blur faces."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from icu.contracts import Alert, Detection, Frame, FrameHeader, Topic, Vitals, encode, make_frame
from research import ResearchError
from research.blur import blur_faces, blur_jpeg
from research.manifest import FORMAT_VERSION, read_manifest
from research.replay import parse_speed, replay_shift
from research.store import Position, Recording, RecordingWriter, shifted
from simulator.bed import BedSimulation
from simulator.scenario import load_scenario

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def sim_frames(n: int, *, bed: str = "icu1-01", index: int = 0) -> list[tuple[Frame, tuple[int, int, int, int]]]:
    sim = BedSimulation(load_scenario("stable"), seed=3, bed_id=bed, index=index)
    box = sim.renderer.region("face")
    face = (int(box.x0), int(box.y0), int(box.x1), int(box.y1))
    out = []
    for k in range(n):
        image = sim.frame_at(k).image
        ok, jpeg = cv2.imencode(".jpg", image)
        assert ok
        header = FrameHeader(bed_id=bed, camera_id=f"{bed}-cam", capture_ts=T0 + timedelta(seconds=k * 0.1),
                             seq=k, width=image.shape[1], height=image.shape[0])  # fmt: skip
        out.append((make_frame(header, jpeg.tobytes()), face))
    return out


def vitals(bed: str, second: float, hr: float = 80) -> Vitals:
    return Vitals(bed_id=bed, ts=T0 + timedelta(seconds=second), source="sim", hr=hr, rr=16, spo2=97)


def test_a_recording_reads_back_merged_by_time_with_each_file_s_order(tmp_path: Path) -> None:
    frames = sim_frames(5)
    with RecordingWriter(tmp_path / "r", source={"kind": "test"}) as writer:
        writer.add(vitals("icu1-01", 0.05))
        writer.add(vitals("icu1-02", 0.15))
        writer.add(vitals("icu1-01", 0.25))
        writer.add(vitals("icu1-01", 0.35))
        for frame, _ in frames:
            writer.add(frame)
        assert writer.add_record(Topic.VITALS, key=b"icu1-01", value=b"{broken") is False
        writer.add_record(Topic.VITALS, key=b"icu1-01", value=encode(vitals("icu1-01", 0.45, hr=90)))
    assert writer.rejected == 1
    manifest = read_manifest(tmp_path / "r")
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.start == T0
    assert manifest.end == T0 + timedelta(seconds=0.45)
    assert [b.bed_id for b in manifest.beds] == ["icu1-01", "icu1-02"]
    assert manifest.cameras[0].frames == 5
    rec = Recording(tmp_path / "r")
    events = list(rec.iter_events())
    assert [e.t for e in events] == sorted(e.t for e in events)
    assert [e.topic for e in events].count(Topic.FRAMES) == 5
    got = [e.message for e in events if isinstance(e.message, Frame)]
    assert [f.jpeg for f in got] == [f.jpeg for f, _ in frames]  # the JPEGs unchanged in the MP4
    assert [f.header for f in got] == [f.header for f, _ in frames]
    last = [e.message for e in events if isinstance(e.message, Vitals)][-1]
    assert last.hr == 90  # the raw record kept as published
    # The MP4 is a standard video file: FFmpeg decodes every frame.
    capture = cv2.VideoCapture(str(tmp_path / "r" / manifest.cameras[0].video))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    assert decoded == 5


def test_partitions_fetched_out_of_step_still_read_back_in_event_time(tmp_path: Path) -> None:
    # A live capture writes records as the consumer fetched them: all of partition 1's first,
    # then partition 0's, so the vitals file goes back in time. Each partition is in event time.
    def detection(bed: str, second: float) -> Detection:
        return Detection(bed_id=bed, camera_id=f"{bed}-cam", ts=T0 + timedelta(seconds=second), seq=int(second),
                         model="m", model_version="1", grimace=0, twitch=0, apnea=0, inferred_at=T0)  # fmt: skip

    with RecordingWriter(tmp_path / "r", source={}) as writer:
        for second in range(10):
            writer.add(vitals("icu1-02", second), position=Position(partition=1, offset=second))
        for second in range(10):
            writer.add(vitals("icu1-01", second), position=Position(partition=0, offset=second))
        for second in range(10):
            writer.add(detection("icu1-01", second + 0.5), position=Position(partition=0, offset=second))
    rec = Recording(tmp_path / "r")
    assert rec.partitions(Topic.VITALS) == [0, 1]
    events = list(rec.iter_events([Topic.VITALS, Topic.DETECTIONS]))
    assert len(events) == 30
    assert [e.t for e in events] == sorted(e.t for e in events)
    # One bed's vitals and detections interleave in time, as the alerts core needs them.
    bed = [type(e.message).__name__[0] for e in events if e.message.bed_id == "icu1-01"]
    assert bed == ["V", "D"] * 10


def test_a_recording_refuses_a_used_folder_and_reads_only_its_own_format(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ResearchError, match="not empty"):
        RecordingWriter(tmp_path / "used", source={})
    with RecordingWriter(tmp_path / "r", source={}) as writer:
        writer.add(vitals("icu1-01", 0))
    data = json.loads((tmp_path / "r" / "manifest.json").read_text())
    data["format_version"] = 99
    (tmp_path / "r" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ResearchError, match="format version 99"):
        Recording(tmp_path / "r")


def test_beds_outside_the_selection_and_truth_lines_of_other_beds_are_left_out(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    truth.write_text('{"bed_id": "icu1-01", "events": []}\n{"bed_id": "icu1-09", "events": []}\n')
    with RecordingWriter(tmp_path / "r", source={}, beds=["icu1-01"]) as writer:
        assert writer.add(vitals("icu1-01", 0))
        assert not writer.add(vitals("icu1-09", 0))
        assert writer.attach_truth(truth) == 1
    assert [b.bed_id for b in read_manifest(tmp_path / "r").beds] == ["icu1-01"]


def test_replay_re_stamping_moves_every_timestamp_by_the_same_whole_seconds() -> None:
    d = Detection(bed_id="b1", camera_id="b1-cam", ts=T0, seq=1, window_end=T0 + timedelta(seconds=2),
                  model="m", model_version="1", grimace=0.1, twitch=0.1, apnea=0.1,
                  inferred_at=T0 + timedelta(seconds=2.1))  # fmt: skip
    shift = replay_shift(T0, T0 + timedelta(days=3, seconds=12.7))
    assert shift == timedelta(days=3, seconds=12)
    moved = shifted(d, shift)
    assert isinstance(moved, Detection)
    assert (moved.ts, moved.window_end, moved.inferred_at) == (T0 + shift, d.window_end + shift,  # type: ignore[operator]
                                                              d.inferred_at + shift)  # fmt: skip
    assert moved.grimace == d.grimace
    frame, _ = sim_frames(1)[0]
    moved_frame = shifted(frame, shift)
    assert isinstance(moved_frame, Frame)
    assert moved_frame.header.capture_ts == T0 + shift
    assert moved_frame.jpeg == frame.jpeg
    assert parse_speed("max") is None
    assert parse_speed("10") == 10.0
    with pytest.raises(ResearchError):
        parse_speed("0")


def test_blurring_hides_the_simulated_face_and_keeps_the_frame_size() -> None:
    for index in range(3):
        frame, (x0, y0, x1, y1) = sim_frames(1, index=index)[0]
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        blurred = cv2.imdecode(np.frombuffer(blur_jpeg(frame.jpeg), np.uint8), cv2.IMREAD_COLOR)
        assert blurred.shape == image.shape
        face, hidden = image[y0:y1, x0:x1], blurred[y0:y1, x0:x1]
        assert float(np.abs(face.astype(int) - hidden.astype(int)).mean()) > 3.0
        # Detail (edges of eyes, mouth) is gone from the face region.
        sharp = cv2.Laplacian(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        soft = cv2.Laplacian(cv2.cvtColor(hidden, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        assert soft < 0.3 * sharp


def test_a_grayscale_frame_is_blurred_whole() -> None:
    rng = np.random.default_rng(0)
    image = np.repeat(rng.integers(0, 255, (120, 160, 1), dtype=np.uint8), 3, axis=2)
    out = blur_faces(image)
    assert float(np.abs(out.astype(int) - image.astype(int)).mean()) > 20


def test_an_export_recording_blurs_frames(tmp_path: Path) -> None:
    frames = sim_frames(2)
    with RecordingWriter(tmp_path / "r", source={}, blur_faces=True) as writer:
        for frame, _ in frames:
            writer.add(frame)
    rec = Recording(tmp_path / "r")
    assert rec.manifest.faces_blurred
    got = [e.message for e in rec.iter_events([Topic.FRAMES])]
    assert all(isinstance(f, Frame) and f.jpeg != o.jpeg for f, (o, _) in zip(got, frames, strict=True))


def test_alert_versions_are_timed_by_their_update() -> None:
    from research.store import event_time

    alert = Alert(bed_id="b1", alert_id="00000000-0000-0000-0000-000000000001", version=2, code="NEWS2",
                  kind="physiological", priority="high", state="escalated", raised_at=T0,
                  updated_at=T0 + timedelta(seconds=30), explanation="x")  # fmt: skip
    assert event_time(alert) == T0 + timedelta(seconds=30)
