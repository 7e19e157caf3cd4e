"""Record -> replay -> evaluate end to end on a simulated multi-bed ward, against the real
embedded broker and real `icu alerts` workers; and replay determinism: the same recording
replayed twice (paced, under two prefixes, through two workers) raises the same alert
sequence."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.app import worker_env
from icu.contracts import Alert, AlertState, Topic
from icu.kafka import GracefulStop
from infra.broker import EmbeddedBroker
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from research.evaluate import core_alerts
from research.record import record
from research.replay import ReplayResult, replay
from research.simulate import write_simulated_recording
from research.store import Recording
from simulator.scenario import load_scenario
from tests.integration.services import ICU, Service, wait_alerts_consuming

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
WARD = ("apnea", "seizure", "nuisance-walk-through")
# Paced, at a speed the worker keeps up with: a tick stops waiting for a stream silent for 3 s
# of wall time, so a worker far behind a backlog (--speed max, a starved CPU) can release a bed's
# vitals before its detections and decide otherwise (README).
SPEED: float | None = 30.0
TAIL = timedelta(seconds=10)


def settings_for(broker: EmbeddedBroker, prefix: str) -> TopicsAdminSettings:
    settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                                   topic_partitions=3)  # fmt: skip
    create_topics(settings)
    return settings


class AlertsWorker:
    def __init__(self, settings: TopicsAdminSettings, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.service = Service("alerts", ["alerts"], worker_env(settings, tmp / "faust", ICU_ALERTS_TICK_S="0.5"), tmp)

    def wait_ready(self) -> None:
        """Until it consumes (the probe bed is not in the recording, so neither capture nor
        evaluation sees its alert)."""
        wait_alerts_consuming(self.settings, [self.service])

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def simulated(tmp_path: Path) -> Path:
    """Eight minutes of three beds straight from the simulator, with truth: the 22 s and 35 s
    apneas (and a 12 s one that expects no alert), a seizure, a nuisance."""
    out = tmp_path / "simulated"
    write_simulated_recording(out, [load_scenario(n) for n in WARD], start=START, seed=1, duration_s=480)
    return out


@pytest.fixture
def workers(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[list[AlertsWorker]]:
    started = [AlertsWorker(settings_for(broker, f"replay{k}x{tmp_path.name[-6:]}"), tmp_path / f"w{k}")
               for k in range(2)]  # fmt: skip
    yield started
    for worker in started:
        worker.stop()


def sequence(capture: Path, source: Recording) -> list[tuple[str, str, str, int, str, int]]:
    """(bed, code, priority, version, state, seconds after the recording's start) of every alert
    version the messages decided: the last TAIL_S are left out, since a bed's final seconds wait in
    its reorder buffer for a stream that has ended until a tick (wall clock) releases them."""
    rec = Recording(capture)
    assert rec.manifest.replay is not None
    shift = timedelta(seconds=rec.manifest.replay.shift_s)
    assert source.manifest.start is not None
    assert source.manifest.end is not None
    out = []
    for event in rec.iter_topic(Topic.ALERTS):
        alert = event.message
        assert isinstance(alert, Alert)
        at = alert.updated_at - shift
        if at < source.manifest.end - TAIL:
            out.append((alert.bed_id, alert.code, alert.priority.value, alert.version, alert.state.value,
                        round((at - source.manifest.start).total_seconds())))  # fmt: skip
    return sorted(out, key=lambda a: (a[5], a[0], a[1], a[3]))


def test_record_replay_evaluate_end_to_end_and_replays_are_deterministic(
    broker: EmbeddedBroker, simulated: Path, workers: list[AlertsWorker], tmp_path: Path
) -> None:
    # 1. "Live": the simulated ward goes onto a live prefix while `icu record` captures it.
    live = settings_for(broker, f"live{tmp_path.name[-6:]}")
    recorded = tmp_path / "recorded"
    stop, ready = GracefulStop(), threading.Event()
    recorder = threading.Thread(target=record, args=(live, recorded), kwargs={
        "topics": [Topic.VITALS, Topic.DETECTIONS, Topic.CAMERA_STATUS], "stop": stop, "on_ready": ready.set,
        "truth": simulated / "truth.jsonl", "beds": ["sim-01", "sim-02", "sim-03"]})  # fmt: skip
    recorder.start()
    assert ready.wait(30)
    source = Recording(simulated)
    first = replay(source, live, speed=None, keep_times=True)
    time.sleep(2)
    stop.set()
    recorder.join(30)
    rec = Recording(recorded)
    m = rec.manifest
    assert m.format_version == 1
    assert m.contract_version == 1
    assert {b.bed_id for b in m.beds} == {"sim-01", "sim-02", "sim-03"}
    assert {t.topic: t.records for t in m.topics} == {"vitals": first.published["vitals"],
                                                      "detections": first.published["detections"]}  # fmt: skip
    assert m.start == START
    assert m.models[0].model == "simulated-detector"
    assert m.truth == "truth.jsonl"
    line = json.loads((recorded / "vitals.jsonl").open().readline())
    assert line["partition"] is not None
    assert line["offset"] is not None
    assert line["key"].startswith("sim-")

    # 2. Replay the recording twice, paced, through two alerts workers.
    for worker in workers:
        worker.wait_ready()
    captures = [tmp_path / f"capture{k}" for k in range(len(workers))]
    results: list[ReplayResult] = []

    def run(worker: AlertsWorker, capture: Path) -> None:
        results.append(replay(rec, worker.settings, speed=SPEED, capture=capture, settle_s=8))

    # One after the other: two replays at once on two cores would time each other out.
    for worker, capture in zip(workers, captures, strict=True):
        run(worker, capture)
    assert len(results) == 2
    for result in results:
        assert result.records() == sum(t.records for t in m.topics)
        assert result.shift_s > 0
    one, two = (sequence(c, rec) for c in captures)
    assert one, "the replay raised no alert"
    core = sorted(((a.bed_id, a.code, a.priority.value, a.version, a.state.value,
                    round((a.updated_at - START).total_seconds())) for a in core_alerts(rec)
                   if a.updated_at < m.end - TAIL),
                  key=lambda a: (a[5], a[0], a[1], a[3]))  # fmt: skip
    assert one == two
    assert one == core  # and what the alerts core computes from the recording
    codes = {(bed, code) for bed, code, _, version, _, _ in one if version == 1}
    assert ("sim-01", "APNEA_VIDEO") in codes
    assert ("sim-02", "SEIZURE_VIDEO") in codes
    assert not [a for a in one if a[0] == "sim-03"]  # the nuisance bed stays silent
    # Relative times survive the shift: the 22 s apnea at 250 s raises 20-21 s in.
    apnea = [a for a in one if a[:2] == ("sim-01", "APNEA_VIDEO") and a[3] == 1 and a[4] == AlertState.OPEN.value]
    assert any(270 <= a[5] <= 272 for a in apnea), apnea

    # 3. Evaluate the first replay against the recording's truth.
    report = tmp_path / "eval" / "alerts.json"
    done = subprocess.run([*ICU, "eval", "alerts", "--recording", str(recorded), "--replay", str(captures[0]),
                           "--out", str(report)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["beds"] == 3
    assert summary["patient_hours"] == pytest.approx(0.4, abs=0.01)
    by_type = summary["by_type"]
    assert by_type["apnea"]["onsets"] == 2  # the 22 s and 35 s apneas; the 12 s one expects none
    assert by_type["apnea"]["detected"] == 2
    assert 19 <= by_type["apnea"]["median_time_to_alert_s"] <= 23
    assert by_type["seizure"]["detected"] == by_type["seizure"]["onsets"] >= 1
    assert summary["alerts_per_bed_per_day"] > 0
    assert "false alerts / patient-hour" in done.stderr  # the readable table
    assert report.with_suffix(".txt").is_file()
    png = report.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
