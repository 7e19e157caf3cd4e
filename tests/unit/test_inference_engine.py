"""The worker's core with a real (small, untrained) model: frames in, detections out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
import torch

from icu.contracts import Frame, FrameHeader, make_frame
from inference.engine import EngineConfig, InferenceEngine, decode_jpeg
from inference.model import build_model
from simulator.bed import BedSimulation
from simulator.scenario import load_scenario

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def frames_of(
    bed: str, seconds: float, *, seed: int, skip: frozenset[int] = frozenset()
) -> list[tuple[Frame, np.ndarray]]:
    sim = BedSimulation(load_scenario("stable"), seed=seed, fps=10)
    out = []
    for index in range(int(seconds * 10)):
        image = sim.frame_at(index).image
        if index in skip:
            continue
        ok, jpeg = cv2.imencode(".jpg", image)
        assert ok
        header = FrameHeader(bed_id=bed, camera_id=f"{bed}-cam", capture_ts=T0 + timedelta(seconds=index / 10),
                             seq=index, width=image.shape[1], height=image.shape[0])  # fmt: skip
        frame = make_frame(header, jpeg.tobytes())
        decoded = decode_jpeg(frame)
        assert isinstance(decoded, np.ndarray)
        out.append((frame, decoded))
    return out


@pytest.fixture
def engine() -> InferenceEngine:
    torch.manual_seed(0)
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=4)
    return InferenceEngine(model, config=EngineConfig(window_frames=32), device=torch.device("cpu"),
                           model_version="test-0")  # fmt: skip


def test_detections_once_per_second_per_bed_after_two_seconds(engine: InferenceEngine) -> None:
    beds = {"icu1-01": frames_of("icu1-01", 5, seed=1), "icu1-02": frames_of("icu1-02", 5, seed=2)}
    detections = []
    for poll in range(0, 50, 10):  # five polls of one second from both beds
        engine.add([item for bed in beds.values() for item in bed[poll : poll + 10]], arrival=float(poll))
        detections += engine.due(now=T0 + timedelta(seconds=10))
    per_bed = {bed: [d for d in detections if d.bed_id == bed] for bed in beds}
    for bed, mine in per_bed.items():
        assert [d.seq for d in mine] == [19, 29, 39, 49], bed  # first at 2 s of video, then every 1 s
        last = mine[-1]
        assert last.ts == T0 + timedelta(seconds=4.9)
        assert last.camera_id == f"{bed}-cam"
        assert last.model == "temporal-small"
        assert last.model_version == "test-0"
        assert 0.0 <= last.grimace <= 1.0
        assert last.baseline is not None
        assert not last.degraded
    assert engine.stats.frames == 100
    assert engine.stats.windows == 8


def test_missing_frames_mark_the_window_degraded(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-03", 4, seed=3, skip=frozenset({25, 26, 27}))
    engine.add(frames, arrival=0.0)
    detection = engine.due()[-1]
    assert detection.degraded
    assert engine.buffers.beds["icu1-03"].stats.filled == 3


def test_bad_frames_are_refused_with_a_reason() -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    header = FrameHeader(bed_id="b", camera_id="c", capture_ts=T0, seq=0, width=640, height=480)
    assert decode_jpeg(make_frame(header, jpeg.tobytes())) == "image is 320x240, headers say 640x480"
    garbage = b"\xff\xd8\xff" + bytes(range(256)) * 4 + b"\xff\xd9"
    assert decode_jpeg(make_frame(header, garbage)) == "JPEG payload cannot be decoded"


def test_silent_beds_are_forgotten(engine: InferenceEngine) -> None:
    engine.add(frames_of("icu1-04", 1, seed=4), arrival=100.0)
    assert engine.evict_silent(now=129.0) == []
    assert engine.evict_silent(now=131.0) == ["icu1-04"]
    assert "icu1-04" not in engine.beds


def test_late_repeated_and_too_dense_frames_are_skipped(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-05", 3, seed=5)
    engine.add(frames[:20], arrival=0.0)
    late = frames[10]  # an old frame replayed
    repeat = frames[19]
    dense_header = repeat[0].header.model_copy(
        update={"capture_ts": repeat[0].header.capture_ts + timedelta(seconds=0.03)}
    )
    dense = (make_frame(dense_header, repeat[0].jpeg), repeat[1])  # 30 ms after the newest: above 10 fps
    engine.add([late, repeat, dense], arrival=1.0)
    assert engine.stats.skipped == 3
    assert engine.stats.frames == 20
    engine.add(frames[20:], arrival=2.0)
    assert [d.seq for d in engine.due()] == [19, 29]


def test_a_clock_that_jumps_back_restarts_the_bed(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-06", 4, seed=6)
    engine.add(frames, arrival=0.0)
    engine.due()
    back = []
    for k, (frame, image) in enumerate(frames_of("icu1-06", 4, seed=7)):
        header = frame.header.model_copy(
            update={"capture_ts": frame.header.capture_ts - timedelta(hours=1), "seq": 100 + k}
        )
        back.append((make_frame(header, frame.jpeg), image))
    engine.add(back, arrival=1.0)
    assert engine.stats.skipped == 19  # the 20th frame in a row from the past (2 s) restarts the bed
    detections = engine.due()
    assert detections
    assert detections[-1].seq == 138  # 2 s of frames again (seq 119-138)
    assert detections[-1].ts < T0
