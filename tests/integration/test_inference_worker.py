"""The inference worker against the real broker: frames in, detections and dead letters out."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import torch

from icu.contracts import DeadLetter, Detection, Evidence, Finding, FrameHeader, Topic, decode, make_frame
from icu.kafka import GracefulStop, close_producer, create_producer
from inference.model import build_model
from inference.worker import InferenceWorker, InferSettings, build_engine, consume_loop
from infra.settings import TopicsAdminSettings
from simulator.bed import BedSimulation
from simulator.scenario import load_scenario
from tests.integration.records import read_records, wait_for_record


def tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(name="temporal-test", height=48, width=64, channels=(8, 16), dim=16, heads=2,
                        temporal_layers=4, lookahead_frames=5)  # fmt: skip
    with torch.no_grad():
        model.findings.bias[0] = 50.0  # grimace on every frame: evidence at the first detection
    torch.save({"model_config": model.config.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def test_worker_publishes_detections_per_bed_and_dead_letters_bad_frames(
    kafka_settings: TopicsAdminSettings, tmp_path: Path
) -> None:
    settings = InferSettings(
        kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
        topic_prefix=kafka_settings.topic_prefix,
        infer_weights=tiny_weights(tmp_path / "model.pt"),
        infer_device="cpu",
        infer_window_frames=32,
        infer_group="infer-test",
        infer_start="earliest",
    )
    producer = create_producer(settings)
    frames_topic = Topic.FRAMES.full_name(settings.topic_prefix)
    start = datetime.now(UTC).replace(microsecond=0)
    for bed, seed in (("icu1-01", 1), ("icu1-02", 2)):
        sim = BedSimulation(load_scenario("stable"), seed=seed, fps=10)
        for index in range(40):  # 4 s of video
            image = sim.frame_at(index).image
            ok, jpeg = cv2.imencode(".jpg", image)
            assert ok
            header = FrameHeader(bed_id=bed, camera_id=f"{bed}-cam", seq=index, width=320, height=240,
                                 capture_ts=start + timedelta(seconds=index / 10))  # fmt: skip
            frame = make_frame(header, jpeg.tobytes())
            producer.send(frames_topic, key=frame.key(), value=frame.jpeg, headers=frame.kafka_headers())
    garbage = make_frame(
        FrameHeader(bed_id="icu1-03", camera_id="icu1-03-cam", seq=0, width=320, height=240, capture_ts=start),
        b"\xff\xd8\xff" + bytes(range(256)) * 4 + b"\xff\xd9",
    )
    producer.send(frames_topic, key=garbage.key(), value=garbage.jpeg, headers=garbage.kafka_headers())
    producer.send(frames_topic, key=b"icu1-03", value=b"not a frame at all", headers=[])
    producer.flush()

    stop = GracefulStop()
    engine = build_engine(settings)
    worker = InferenceWorker(settings, engine, producer)
    loop = consume_loop(settings, worker, producer, stop)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        detections_topic = Topic.DETECTIONS.full_name(settings.topic_prefix)
        wait_for_record(kafka_settings, detections_topic, lambda r: decode(Detection, r.value).seq == 34, 30)
    finally:
        stop.set()
        thread.join(timeout=30)
        close_producer(producer, 10)
    detections = [decode(Detection, r.value) for r in read_records(kafka_settings, detections_topic, 100, 3)]
    for bed in ("icu1-01", "icu1-02"):
        seqs = [d.seq for d in detections if d.bed_id == bed]
        # From 2 s of video, then every second; each for the frame 5 frames (the lookahead) before the newest.
        assert seqs == [14, 24, 34], (bed, seqs)
        last = next(d for d in detections if d.bed_id == bed and d.seq == 34)
        assert last.ts == start + timedelta(seconds=3.4)
        assert last.window_end == start + timedelta(seconds=3.9)
        assert last.model == "temporal-test"
        assert last.baseline is not None
        assert last.grimace > 0.99
    assert engine.stats.evidence >= 2, engine.stats
    evidence = [decode(Evidence, r.value) for r in read_records(
        kafka_settings, Topic.EVIDENCE.full_name(settings.topic_prefix), 10, 3)]  # fmt: skip
    assert sorted(e.bed_id for e in evidence if e.finding is Finding.GRIMACE) == ["icu1-01", "icu1-02"]
    for item in evidence:
        image = cv2.imdecode(np.frombuffer(item.keyframe_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (240, 320, 3)
        assert item.window_start <= item.ts <= item.window_end
    letters = [decode(DeadLetter, r.value) for r in read_records(
        kafka_settings, Topic.DEAD_LETTER.full_name(settings.topic_prefix), 10, 3)]  # fmt: skip
    reasons = sorted(letter.reason for letter in letters)
    assert any("cannot be decoded" in reason for reason in reasons), reasons
    assert any("header" in reason for reason in reasons), reasons  # the record without frame headers
    assert all(letter.stage == "inference" for letter in letters)
    assert engine.stats.frames == 80
