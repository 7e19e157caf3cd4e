"""Reading back what a test produced: a group-less consumer from the earliest offset."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer

from icu.settings import KafkaSettings


def read_records(settings: KafkaSettings, topic_name: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """Up to ``expected`` records of ``topic_name``; fewer only when ``timeout_s`` passes without new ones."""
    consumer = KafkaConsumer(
        topic_name,
        **settings.kafka_client_config(),
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000),
        enable_auto_commit=False,
    )
    records = []
    for record in consumer:
        records.append(record)
        if len(records) >= expected:
            break
    consumer.close()
    return records


def wait_for_record(
    settings: KafkaSettings, topic_name: str, predicate: Callable[[Any], bool], timeout_s: float = 20.0
) -> Any:
    """The first record of ``topic_name`` (from the earliest offset) that ``predicate`` accepts.

    For topics written continuously (camera status every second), where waiting for a quiet
    gap as :func:`read_records` does would never end. Raises AssertionError after ``timeout_s``.
    """
    consumer = KafkaConsumer(
        topic_name,
        **settings.kafka_client_config(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            for records in consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000)).values():
                for record in records:
                    if predicate(record):
                        return record
    finally:
        consumer.close()
    raise AssertionError(f"no matching record on {topic_name} within {timeout_s} s")
