"""`icu sim ward` publishes contract-valid vitals and frames for each bed to a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from icu.contracts import Frame, Topic, Vitals, decode_record
from tests.integration.records import read_records

ICU = str(Path(sys.executable).parent / "icu")


def test_ward_publishes_vitals_and_frames_per_bed(kafka_settings, tmp_path):
    truth = tmp_path / "truth.jsonl"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ICU_")}
    env = {
        **clean,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ICU_SIM_FPS": "5",
    }
    argv = [ICU, "sim", "ward", "--beds", "3", "--scenario", "stable", "--scenario", "apnea",
            "--speed", "4", "--duration", "8", "--seed", "7", "--truth", str(truth)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(stats) == {"sim-01", "sim-02", "sim-03"}
    frames_sent = sum(s["frames_sent"] for s in stats.values())
    vitals_sent = sum(s["vitals_sent"] for s in stats.values())
    assert sum(s["send_errors"] for s in stats.values()) == 0
    # 8 simulated seconds at 5 fps: 40 frames per bed, some possibly skipped (latest-frame-wins).
    for bed in stats.values():
        assert bed["frames_sent"] + bed["frames_dropped"] >= 38
        assert bed["vitals_sent"] >= 7
    assert "ward: frames sent" in result.stderr

    vitals_records = read_records(kafka_settings, Topic.VITALS.full_name(kafka_settings.topic_prefix), vitals_sent)
    frame_records = read_records(kafka_settings, Topic.FRAMES.full_name(kafka_settings.topic_prefix), frames_sent)
    assert len(vitals_records) == vitals_sent
    assert len(frame_records) == frames_sent

    per_bed_vitals = defaultdict(list)
    for record in vitals_records:
        message = decode_record(Topic.VITALS, record.value)
        assert isinstance(message, Vitals)
        assert record.key == message.bed_id.encode()
        per_bed_vitals[message.bed_id].append(message)
    per_bed_frames = defaultdict(list)
    for record in frame_records:
        frame = decode_record(Topic.FRAMES, record.value, record.headers)
        assert isinstance(frame, Frame)
        assert record.key == frame.header.bed_id.encode()
        per_bed_frames[frame.header.bed_id].append(frame)
    assert set(per_bed_vitals) == set(per_bed_frames) == {"sim-01", "sim-02", "sim-03"}

    for bed_id, frames in per_bed_frames.items():
        seqs = [f.header.seq for f in frames]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert frames[0].header.camera_id == f"{bed_id}-cam"
        image = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
        # Capture times follow simulated time: seq / fps after the ward's start.
        first, last = frames[0].header, frames[-1].header
        assert last.capture_ts - first.capture_ts == timedelta(seconds=(last.seq - first.seq) / 5)
        vitals = per_bed_vitals[bed_id]
        assert vitals[0].consciousness is not None
        assert vitals[0].sbp is not None
        assert [v.ts for v in vitals] == sorted(v.ts for v in vitals)

    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [line["bed_id"] for line in lines] == ["sim-01", "sim-02", "sim-03"]
    assert [line["scenario"] for line in lines] == ["stable", "apnea", "stable"]
    apnea_events = lines[1]["events"]
    assert [e["type"] for e in apnea_events] == ["apnea", "apnea", "apnea"]
    assert apnea_events[1]["alert_expected"] is True
    assert apnea_events[0]["alert_expected"] is False


def test_ward_refuses_missing_topics_and_an_unreachable_broker(broker):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ICU_")}
    missing = subprocess.run(
        [ICU, "sim", "ward", "--bootstrap-servers", broker.bootstrap_servers, "--topic-prefix", "never-created",
         "--duration", "1"],
        capture_output=True, text=True, env=clean, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "never-created.frames, never-created.vitals do not exist; run `icu topics create`" in missing.stderr
    unreachable = subprocess.run(
        [ICU, "sim", "ward", "--duration", "1"],
        capture_output=True,
        text=True,
        env={**clean, "ICU_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "ICU_KAFKA_BOOTSTRAP_TIMEOUT_MS": "1000"},
        timeout=60,
    )
    assert unreachable.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1 (ICU_KAFKA_BOOTSTRAP_SERVERS)" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
