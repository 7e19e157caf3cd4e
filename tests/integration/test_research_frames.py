"""`icu record` on a live simulated ward (frames, vitals, truth) and `icu replay` of its video:
the frames come back byte for byte with their headers, re-stamped by the replay's shift."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from icu.contracts import Topic, decode_frame
from infra.broker import EmbeddedBroker
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from research.replay import replay
from research.store import Recording
from tests.integration.records import read_records
from tests.integration.services import record_live_ward


def test_a_recorded_ward_replays_its_frames_unchanged(
    kafka_settings: TopicsAdminSettings, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    out, truth = tmp_path / "rec", tmp_path / "truth.jsonl"
    stdout, ward = record_live_ward(kafka_settings, out, record=["--truth", str(truth), "--topics", "frames,vitals",
                                                                 "--beds", "sim-01,sim-02"],
                                    ward=["--beds", "3", "--duration", "3", "--fps", "5", "--scenario", "stable",
                                          "--truth", str(truth)])  # fmt: skip

    rec = Recording(out)
    m = rec.manifest
    assert json.loads(stdout)["id"] == m.id
    assert [b.bed_id for b in m.beds] == ["sim-01", "sim-02"]  # sim-03 left out by --beds
    assert {c.camera_id for c in m.cameras} == {"sim-01-cam", "sim-02-cam"}
    sent = {bed: stats["frames_sent"] for bed, stats in json.loads(ward.stdout).items()}
    for camera in m.cameras:
        assert camera.frames == sent[camera.bed_id] > 0
        sidecar = (out / camera.timestamps).read_text().splitlines()
        assert len(sidecar) == camera.frames
        assert camera.width == 320
    assert {json.loads(line)["bed_id"] for line in (out / "truth.jsonl").read_text().splitlines()} == {
        "sim-01",
        "sim-02",
    }
    assert not m.faces_blurred

    # Replay the video under another prefix: same JPEG bytes, same headers but the capture time.
    target = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                                 topic_prefix=f"{kafka_settings.topic_prefix}r", topic_partitions=3)  # fmt: skip
    create_topics(target)
    result = replay(rec, target, speed=None, topics=[Topic.FRAMES])
    frames = sum(c.frames for c in m.cameras)
    assert result.published == {"frames": frames}
    back = read_records(target, Topic.FRAMES.full_name(target.topic_prefix), frames, 10)
    assert len(back) == frames
    original = {(e.message.header.camera_id, e.message.header.seq): e.message for e in rec.iter_events([Topic.FRAMES])}
    shift = timedelta(seconds=result.shift_s)
    last: dict[str, int] = {}
    for record in back:
        frame = decode_frame(record.value, record.headers)
        source = original[(frame.header.camera_id, frame.header.seq)]
        assert frame.jpeg == source.jpeg  # type: ignore[union-attr]
        assert frame.header.capture_ts == source.header.capture_ts + shift  # type: ignore[union-attr]
        assert record.key == frame.header.bed_id.encode()
        assert frame.header.seq > last.get(frame.header.camera_id, -1)  # each camera's order kept
        last[frame.header.camera_id] = frame.header.seq
