"""Replay determinism with inference in the loop: a recorded ward's video and vitals replayed twice,
each time through its own `icu infer` and `icu alerts`, give the same detections and the same
alert sequence. (test_research_pipeline.py replays recorded detections; here the model runs.)"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from alerts.app import worker_env
from icu.contracts import Alert, Detection, Topic, decode
from infra.broker import EmbeddedBroker
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from research.replay import replay
from research.store import Recording
from tests.integration.records import read_records
from tests.integration.services import Service, infer_env, record_live_ward, wait_alerts_consuming
from tests.integration.test_inference_worker import tiny_weights

# A patient breathing 26/min from the start: NEWS2 scores 3 for respiration (a red score), so the
# vitals raise an alert within the recording; the second bed is stable.
TACHYPNOEA = """\
name: tachypnoea
description: Breathing 26/min from the start (a NEWS2 red score), otherwise calm.
duration_s: 600
baseline: {hr: 84, rr: 26, spo2: 96}
episodes: []
"""


def test_a_recorded_ward_replayed_twice_through_inference_and_alerts_decides_the_same(
    kafka_settings: TopicsAdminSettings, broker: EmbeddedBroker, services: list[Service], tmp_path: Path
) -> None:
    scenario = tmp_path / "tachypnoea.yaml"
    scenario.write_text(TACHYPNOEA)
    out = tmp_path / "rec"
    record_live_ward(kafka_settings, out, record=["--topics", "frames,vitals"],
                     ward=["--beds", "2", "--duration", "75", "--speed", "3", "--fps", "10", "--size", "160x120",
                           "--scenario", str(scenario), "--scenario", "stable"], ward_timeout_s=120)  # fmt: skip
    rec = Recording(out)
    assert {c.bed_id for c in rec.manifest.cameras} == {"sim-01", "sim-02"}

    weights = tiny_weights(tmp_path / "model.pt")
    prefixes = []
    for k in range(2):
        prefix = f"{kafka_settings.topic_prefix}x{k}"
        settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                                       topic_partitions=3)  # fmt: skip
        create_topics(settings)
        services.append(Service(f"infer{k}", ["infer"], infer_env(settings, weights, ICU_INFER_GROUP=f"inf{k}"),
                                tmp_path))  # fmt: skip
        services.append(Service(f"alerts{k}", ["alerts"], worker_env(settings, tmp_path / f"faust{k}"), tmp_path))
        prefixes.append(settings)
    for settings in prefixes:  # both workers consuming before anything is replayed to them
        wait_alerts_consuming(settings, services)
    time.sleep(2)  # and the inference workers, which start faster, have joined their groups
    runs = []
    for k, settings in enumerate(prefixes):
        capture = tmp_path / f"capture{k}"
        # Paced: the model keeps up, so detections follow their frames as they would live.
        result = replay(rec, settings, speed=2.0, topics=[Topic.FRAMES, Topic.VITALS], capture=capture, settle_s=10)
        shift = timedelta(seconds=result.shift_s)
        # By (bed, frame time): a batch redelivered after a rebalance repeats identical detections.
        detections = {
            (d.bed_id, d.ts - shift, d.degraded): (d.grimace, d.twitch, d.apnea)
            for d in (decode(Detection, r.value)
                      for r in read_records(settings, Topic.DETECTIONS.full_name(settings.topic_prefix), 100_000, 3))
        }  # fmt: skip
        alerts = sorted(
            (a.bed_id, a.code, a.priority.value, a.version, a.state.value, a.updated_at - shift)
            for a in (e.message for e in Recording(capture).iter_topic(Topic.ALERTS))
            if isinstance(a, Alert) and a.updated_at - shift < rec.manifest.end - timedelta(seconds=10)
        )
        runs.append((detections, alerts))
        for service in services:
            assert service.alive(), service.log()[-2000:]

    (detections_one, alerts_one), (detections_two, alerts_two) = runs
    # Every second of both beds' video examined, the same way both times.
    assert {bed for bed, _, _ in detections_one} == {"sim-01", "sim-02"}
    assert len(detections_one) >= 2 * 60
    assert detections_one.keys() == detections_two.keys()
    # The same windows; beds batched together or apart may differ in the last float bits.
    assert max(abs(a - b) for key in detections_one
               for a, b in zip(detections_one[key], detections_two[key], strict=True)) < 1e-4  # fmt: skip
    assert alerts_one, "the replays raised no alert"
    assert ("sim-01", "NEWS2") in {(a[0], a[1]) for a in alerts_one}
    assert alerts_one == alerts_two
