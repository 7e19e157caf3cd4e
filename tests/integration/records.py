"""Reading back what a test produced: a group-less consumer from the earliest offset."""

from __future__ import annotations

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
