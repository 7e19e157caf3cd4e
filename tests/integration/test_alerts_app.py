"""`icu alerts`, the Faust worker, against the real broker: scenarios in, alert versions out,
the same as the pure core computes; malformed input dead-lettered; a crash mid-stream loses and
invents nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from fhir.resources.R4B.detectedissue import DetectedIssue

from alerts.app import worker_env
from alerts.processor import AlertProcessor, BedRecord
from alerts.scenario_feed import scenario_messages
from icu.contracts import (
    AckAction,
    Alert,
    AlertAck,
    AlertState,
    CameraState,
    CameraStatus,
    DeadLetter,
    Detection,
    Topic,
    Vitals,
    decode,
    encode,
)
from icu.kafka import close_producer, create_producer
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from simulator.scenario import load_scenario
from tests.integration.records import read_records

ICU = [sys.executable, "-m", "icu.cli"]
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
Key = tuple[str, int]


class Worker:
    def __init__(self, settings: TopicsAdminSettings, tmp: Path) -> None:
        self.env = worker_env(settings, tmp / "faust", ICU_ALERTS_TICK_S="0.5")
        self.log = tmp / "alerts.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([*ICU, "alerts"], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def worker(kafka_settings: TopicsAdminSettings, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(kafka_settings, tmp_path)
    running.start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.process.kill()
        running.process.wait(10)


def publish(settings: TopicsAdminSettings, messages: list[Vitals | Detection], speed: float = 30.0) -> None:
    """Publish in event-time order at ``speed`` x real time, like a sped-up live ward (vitals
    and detections travel on different topics: a backlog of one would reach the worker long
    before the other, which live beds never do)."""
    producer = create_producer(settings)
    began, first = time.monotonic(), messages[0].ts
    for message in sorted(messages, key=lambda m: m.ts):
        delay = began + (message.ts - first).total_seconds() / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send(message.topic.full_name(settings.topic_prefix), key=message.key(), value=encode(message))
    producer.flush()
    close_producer(producer, 10)


def expected_versions(messages: list[Vitals | Detection]) -> dict[Key, Alert]:
    """What the pure core makes of the same messages, bed by bed."""
    processor = AlertProcessor()
    records: dict[str, BedRecord] = {}
    out: dict[Key, Alert] = {}
    for message in messages:
        record = records.setdefault(message.bed_id, BedRecord.new(message.bed_id))
        for alert in processor.on_message(record, message, wall=message.ts.timestamp()):
            out[(str(alert.alert_id), alert.version)] = alert
    return out


def published_versions(settings: TopicsAdminSettings, want: set[Key], timeout_s: float) -> list[Alert]:
    deadline = time.monotonic() + timeout_s
    seen: list[Alert] = []
    while time.monotonic() < deadline:
        seen = [decode(Alert, r.value) for r in read_records(settings, Topic.ALERTS.full_name(settings.topic_prefix),
                                                             10_000, 2)]  # fmt: skip
        if want <= {(str(a.alert_id), a.version) for a in seen}:
            break
        time.sleep(1)
    return seen


def wait_ready(settings: TopicsAdminSettings, probe: str) -> None:
    """Until the worker consumes: a lost camera on a probe bed, answered by CAMERA_LOST. Data
    published before that would reach a starting worker as one backlog per topic, vitals far
    ahead of detections, which a live ward never produces."""
    status = CameraStatus(bed_id=probe, camera_id=f"{probe}-cam", ts=datetime.now(UTC), state=CameraState.LOST,
                          source="file", fps_in=0, fps_out=0, frames_dropped=0, reconnects=0)  # fmt: skip
    producer = create_producer(settings)
    producer.send(Topic.CAMERA_STATUS.full_name(settings.topic_prefix), key=status.key(), value=encode(status))
    producer.flush()
    close_producer(producer, 10)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        alerts = [decode(Alert, r.value) for r in read_records(settings, Topic.ALERTS.full_name(settings.topic_prefix),
                                                               10_000, 1)]  # fmt: skip
        if any(a.bed_id == probe and a.code == "CAMERA_LOST" for a in alerts):
            return
        time.sleep(0.5)
    raise AssertionError("the alerts worker did not start consuming within 90 s")


def publish_until_first_alert(
    settings: TopicsAdminSettings, messages: list[Vitals | Detection], expected: dict[Key, Alert]
) -> tuple[Alert, int]:
    """Publish up to just after the first alert the core expects, and wait for the worker to
    raise it; returns that alert and how many messages went out."""
    first = min((a for a in expected.values() if a.version == 1), key=lambda a: a.raised_at)
    cut = next(i for i, m in enumerate(messages) if m.ts > first.raised_at)
    wait_ready(settings, "probe-01")
    publish(settings, messages[:cut])
    published_versions(settings, {(str(first.alert_id), 1)}, timeout_s=90)
    return first, cut


def scenario(name: str, bed: str, seed: int) -> list[Vitals | Detection]:
    return list(scenario_messages(load_scenario(name), bed_id=bed, start=START, seed=seed))


def test_scenarios_through_the_worker_give_the_core_s_alerts_and_fhir(
    kafka_settings: TopicsAdminSettings, worker: Worker
) -> None:
    beds = {"icu1-01": "apnea", "icu1-02": "stable", "icu1-03": "nuisance-walk-through", "icu1-04": "seizure"}
    streams = [scenario(name, bed, seed=k) for k, (bed, name) in enumerate(beds.items())]
    messages = [m for group in zip(*streams, strict=False) for m in group]  # beds interleaved, each in order
    expected = expected_versions(messages)
    assert {a.bed_id for a in expected.values()} == {"icu1-01", "icu1-04"}  # stable and nuisance: silent
    wait_ready(kafka_settings, "probe-01")
    producer = create_producer(kafka_settings)
    vitals_topic = Topic.VITALS.full_name(kafka_settings.topic_prefix)
    producer.send(vitals_topic, key=b"icu1-02", value=b"{not json")
    producer.send(vitals_topic, key=None, value=encode(messages[0]))
    producer.flush()
    close_producer(producer, 10)
    publish(kafka_settings, messages)

    seen = published_versions(kafka_settings, set(expected), timeout_s=120)
    last_message = max(m.ts for m in messages)
    # Ticks move each bed's clock on after its last message; compare what the messages decided.
    by_key = {(str(a.alert_id), a.version): a for a in seen if a.updated_at <= last_message}
    assert set(by_key) == set(expected)
    for key, alert in expected.items():
        assert by_key[key] == alert
    assert not [a for a in seen if a.bed_id in ("icu1-02", "icu1-03")]  # no false alert
    seen = [a for a in seen if not a.bed_id.startswith("probe")]

    fhir = read_records(kafka_settings, Topic.ALERTS_FHIR.full_name(kafka_settings.topic_prefix), 10_000, 2)
    assert len(fhir) >= len(expected)
    resource = DetectedIssue.model_validate_json(fhir[0].value)
    assert resource.identifier is not None
    letters = [decode(DeadLetter, r.value) for r in read_records(
        kafka_settings, Topic.DEAD_LETTER.full_name(kafka_settings.topic_prefix), 10, 2)]  # fmt: skip
    reasons = sorted(letter.reason for letter in letters)
    assert any("not valid JSON" in r for r in reasons), reasons
    assert any("no key" in r for r in reasons), reasons
    assert all(letter.stage == "alerts" for letter in letters)
    assert worker.stop() == 0
    # What it did, as its last word on stdout (mode's Worker ends by raising SystemExit).
    summary = json.loads([line for line in worker.log.read_text().splitlines() if line.startswith("{")][-1])
    assert summary["dead_lettered"] == 2
    assert summary["messages"] >= len(messages)  # the scenarios and the readiness probes (not ticks)
    assert summary["alert_versions"] >= len(expected)


def test_a_worker_killed_mid_stream_recovers_its_state_and_loses_no_version(
    kafka_settings: TopicsAdminSettings, worker: Worker
) -> None:
    messages = scenario("apnea", "icu1-05", seed=3)
    expected = expected_versions(messages)
    _, cut = publish_until_first_alert(kafka_settings, messages, expected)  # the first apnea
    worker.kill()  # no clean shutdown: state must come back from the changelog
    worker.start()
    wait_ready(kafka_settings, "probe-02")
    publish(kafka_settings, messages[cut:])
    seen = published_versions(kafka_settings, set(expected), timeout_s=120)
    last_message = messages[-1].ts
    keys = [(str(a.alert_id), a.version) for a in seen if a.updated_at <= last_message]
    assert set(keys) == set(expected)  # nothing lost, no alert invented by the restart
    for alert in seen:
        key = (str(alert.alert_id), alert.version)
        if key not in expected:
            continue
        want = expected[key]
        assert (alert.code, alert.state, alert.priority, alert.raised_at) == (
            want.code, want.state, want.priority, want.raised_at)  # fmt: skip
        # Recovered state can lack up to ICU_ALERTS_SNAPSHOT_S (1 s) of a bed's readings, so a
        # later transition may land a reading later than an uninterrupted run's.
        assert abs((alert.updated_at - want.updated_at).total_seconds()) <= 2
    assert worker.stop() == 0


def test_an_acknowledgement_on_alert_acks_makes_an_acknowledged_version(
    kafka_settings: TopicsAdminSettings, worker: Worker
) -> None:
    messages = scenario("apnea", "icu1-06", seed=4)
    expected = expected_versions(messages)
    first, _ = publish_until_first_alert(kafka_settings, messages, expected)
    ack = AlertAck(bed_id="icu1-06", ack_id=uuid.uuid4(), alert_id=first.alert_id, user="nurse.a",
                   ts=first.raised_at + timedelta(seconds=1), action=AckAction.ACKNOWLEDGE)  # fmt: skip
    producer = create_producer(kafka_settings)
    producer.send(Topic.ALERT_ACKS.full_name(kafka_settings.topic_prefix), key=ack.key(), value=encode(ack))
    producer.flush()
    close_producer(producer, 10)
    seen = published_versions(kafka_settings, {(str(first.alert_id), 2)}, timeout_s=60)
    [version] = [a for a in seen if a.alert_id == first.alert_id and a.version == 2]
    assert version.state is AlertState.ACKNOWLEDGED
    assert version.acknowledged_by == "nurse.a"
    assert worker.stop() == 0


async def restart_under_records_in_flight(port: int, topic: str, log: Path) -> EmbeddedBroker:
    """A broker on ``port`` that acknowledged two records for ``topic`` (partition 0) without
    having the topic: they were in flight when the broker it replaced stopped, and the producer
    sent them again, to the partition leader it knew, as soon as the new one listened."""
    broker = EmbeddedBroker(port=port, log_file=log).start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 3, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"acknowledged", key=b"bed", partition=0)
            broker.stop()
            in_flight = [await producer.send(topic, b"in flight", key=b"bed", partition=0) for _ in range(2)]
            broker = EmbeddedBroker(port=port, log_file=log).start()
            await asyncio.wait_for(asyncio.gather(*in_flight), 30)
        finally:
            await producer.stop()
    except BaseException:
        broker.stop()
        raise
    return broker


async def listed_and_served(settings: TopicsAdminSettings, topic: str) -> tuple[int, int]:
    """``topic`` created as Faust creates a changelog; the end offset the broker lists for its
    partition 0, and how many records a fetch from the start gets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    config = {"cleanup.policy": "compact"}
    await admin.create_topics([NewTopic(topic, settings.topic_partitions, 1, topic_configs=config)])
    await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        listed = (await consumer.end_offsets([partition]))[partition]
        served = sum(len(records) for records in (await consumer.getmany(timeout_ms=2000)).values())
    finally:
        await consumer.stop()
    return listed, served


def test_a_worker_recovers_past_changelog_records_the_broker_lists_but_never_serves(tmp_path: Path) -> None:
    """The embedded broker acknowledges records produced to a topic it does not have and, once
    the topic is created, counts them in its end offset but never serves them. That happens
    when it restarts under the worker: Faust's producer re-sends the changelog records the old
    broker never acknowledged before the worker has created its changelog again. Table recovery
    then waited for them for ever and the worker never consumed again (the broker-restart fault
    test's intermittent silence). It must go on once the broker's fetches show nothing there."""
    prefix = "unserved"
    changelog = f"{prefix}-icu-alerts-bed-alert-state-changelog"  # the worker's table's changelog
    broker = asyncio.run(restart_under_records_in_flight(free_port(), changelog, tmp_path / "broker.log"))
    worker: Worker | None = None
    try:
        settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix,
                                       topic_partitions=3)  # fmt: skip
        create_topics(settings)
        listed, served = asyncio.run(listed_and_served(settings, changelog))
        assert listed > served, f"the broker serves what it lists ({listed} listed, {served} served)"
        worker = Worker(settings, tmp_path)
        worker.start()
        wait_ready(settings, "probe-01")  # consuming: the recovery has ended
        assert "table recovery: the broker lists changelog" in worker.log.read_text()
        assert worker.stop() == 0
    finally:
        if worker is not None and worker.process is not None and worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)
        broker.stop()
