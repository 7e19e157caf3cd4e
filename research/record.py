"""`icu record`: capture a deployment's topics into a recording (the Kafka side; the format is
:mod:`research.store`).

A group-less consumer (it joins no consumer group, so it takes nothing from the services) is
assigned every partition of the recorded topics, from their ends (``latest``: what happens from
now) or their beginnings (``earliest``: what the broker still retains), and appends each record
as it comes, so memory stays bounded by one poll. It stops after ``duration_s`` (wall clock), on
``stop`` (SIGTERM/Ctrl-C), or after ``idle_s`` without a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from kafka import KafkaConsumer, TopicPartition

from icu.contracts import Topic
from icu.kafka import GracefulStop
from infra.settings import TopicsAdminSettings
from research import ResearchError
from research.manifest import Manifest
from research.store import Position, RecordingWriter

log = logging.getLogger(__name__)


def open_consumer(
    settings: TopicsAdminSettings, topics: Iterable[Topic], *, start: Literal["latest", "earliest"]
) -> tuple[KafkaConsumer, dict[str, Topic]]:
    """A consumer assigned every partition of ``topics``, positioned (resolved, so records
    published after this returns are recorded)."""
    names = {topic.full_name(settings.topic_prefix): topic for topic in topics}
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset=start, max_partition_fetch_bytes=2 * 1024 * 1024)  # fmt: skip
    partitions = []
    for name in names:
        found = consumer.partitions_for_topic(name)
        if not found:
            consumer.close()
            raise ResearchError(f"topic {name} does not exist; run `icu topics create` with this prefix first")
        partitions += [TopicPartition(name, p) for p in sorted(found)]
    consumer.assign(partitions)
    if start == "latest":
        consumer.seek_to_end(*partitions)
    else:
        consumer.seek_to_beginning(*partitions)
    for tp in partitions:
        consumer.position(tp)
    return consumer, names


def record(
    settings: TopicsAdminSettings,
    out: Path,
    *,
    topics: Iterable[Topic],
    beds: Iterable[str] = (),
    duration_s: float | None = None,
    idle_s: float | None = None,
    start: Literal["latest", "earliest"] = "latest",
    blur_faces: bool = False,
    truth: Path | None = None,
    stop: GracefulStop | None = None,
    on_ready: object = None,
) -> Manifest:
    """Record until ``duration_s`` (wall) passes, ``stop`` is set or ``idle_s`` passes quietly."""
    stop = stop or GracefulStop()
    source = {"kind": "kafka", "topic_prefix": settings.topic_prefix, "start": start}
    writer = RecordingWriter(out, source=source, beds=beds, blur_faces=blur_faces)
    consumer, names = open_consumer(settings, topics, start=start)
    log.info("recording %s.{%s} into %s (Ctrl-C stops)", settings.topic_prefix,
             ",".join(t.value for t in names.values()), out)  # fmt: skip
    if callable(on_ready):
        on_ready()
    began = last = time.monotonic()
    count = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if duration_s is not None and now - began >= duration_s:
                break
            if idle_s is not None and now - last >= idle_s:
                break
            polled = consumer.poll(timeout_ms=200)
            for records in polled.values():
                for r in records:
                    position = Position(partition=r.partition, offset=r.offset, timestamp_ms=r.timestamp)
                    writer.add_record(names[r.topic], key=r.key, value=r.value, headers=r.headers, position=position)
                    count += 1
            if polled:
                last = time.monotonic()
    finally:
        consumer.close()
        if truth is not None:
            writer.attach_truth(truth)
        manifest = writer.close()
    if writer.rejected:
        log.warning("%d malformed records were left out of the recording", writer.rejected)
    log.info("recorded %d records (%d frames) of %d beds", count, sum(c.frames for c in manifest.cameras),
             len(manifest.beds))  # fmt: skip
    return manifest
