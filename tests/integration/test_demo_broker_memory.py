"""The demo's broker memory guard against a real embedded broker: past the cap it rotates the
frames topic and the broker's memory comes back; the camera ingest's frames producer and the
inference worker's consumer group, stopped before the rotation and started after it as the demo
does, deliver to and read the new topic."""

from __future__ import annotations

import os
import time

import pytest
from kafka import KafkaAdminClient

from demo.broker_memory import BrokerMemoryGuard, rss_mib
from icu.contracts import Topic
from icu.kafka import close_producer, create_consumer
from infra.broker import EmbeddedBroker
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from ingest.runner import create_frame_producer
from ingest.settings import IngestSettings

FRAME = os.urandom(4_000)  # a 160x120 demo frame is ~3-5 kB


def produce(producer, topic: str, count: int, start: int = 0) -> None:
    futures = [producer.send(topic, key=f"sim-{i % 8:02d}".encode(), value=FRAME) for i in range(start, start + count)]
    producer.flush(30)
    assert all(f.succeeded() for f in futures)


def consume(consumer, count: int, timeout_s: float) -> int:
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            seen += len(records)
    return seen


def test_rotation_frees_the_broker_and_clients_carry_on(tmp_path):
    with EmbeddedBroker(port=0, log_file=tmp_path / "broker.log") as broker:
        settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="demo",
                                       topic_partitions=8)  # fmt: skip
        create_topics(settings)
        frames = Topic.FRAMES.full_name("demo")
        producer = create_frame_producer(IngestSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                                                        topic_prefix="demo"))  # fmt: skip
        # As `icu infer` subscribes: a consumer group on frames that starts at the end.
        consumer = create_consumer(settings, group_id="demo-infer", topics=[frames], auto_offset_reset="latest")
        try:
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
            assert consumer.assignment()
            pid = broker._process.pid  # type: ignore[union-attr]
            before = rss_mib(pid)
            assert before is not None
            produce(producer, frames, 40_000)  # ~160 MB of frames
            assert consume(consumer, 40_000, 60) == 40_000
            full = rss_mib(pid)
            assert full is not None
            assert full > before + 100

            # As the demo rotates: ingest and the inference worker stop (its loop commits its
            # positions), the topic is rotated, both start again (the worker in the same group).
            consumer.commit()
            consumer.close()
            close_producer(producer, 5)
            guard = BrokerMemoryGuard(settings, pid, cap_mib=full - 20)
            assert guard.measure() == pytest.approx(full, abs=10)
            assert guard.due()
            after = guard.rotate()
            assert guard.stats.rotations == 1
            assert after < before + 40, (before, full, after)
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
            try:
                (described,) = admin.describe_topics([frames])
            finally:
                admin.close()
            assert len(described["partitions"]) == 8  # as planned, not the broker's auto-create default
            consumer = create_consumer(settings, group_id="demo-infer", topics=[frames], auto_offset_reset="latest")
            deadline = time.monotonic() + 30
            while not consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
            assert consumer.assignment()
            producer = create_frame_producer(IngestSettings(kafka_bootstrap_servers=broker.bootstrap_servers,
                                                            topic_prefix="demo"))  # fmt: skip

            # The restarted ingest delivers to the new topic; the restarted worker reads it.
            delivered_after = 0
            deadline = time.monotonic() + 60
            while delivered_after < 200 and time.monotonic() < deadline:
                try:
                    produce(producer, frames, 100, start=delivered_after)
                    delivered_after += 100
                except AssertionError:
                    time.sleep(0.5)  # metadata refresh after the topic changed: retry
            assert delivered_after >= 200
            assert consume(consumer, 200, 60) >= 200
            assert guard.measure() is not None
            assert not guard.due()  # under the cap now: no second rotation
        finally:
            consumer.close()
            close_producer(producer, 5)
