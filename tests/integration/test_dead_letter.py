"""Every consumer path dead-letters malformed input with a reason, and keeps going."""

import json
import threading
import uuid

import pytest

from icu.contracts import NON_CONTRACT_TOPICS, DeadLetter, Frame, Topic, Vitals, decode, encode, kafka_key
from icu.kafka import ConsumeLoop, DeadLetterPublisher, GracefulStop, Rejected, create_consumer, create_producer
from tests import samples
from tests.integration.records import read_records

VALID = {
    Topic.FRAMES: lambda: samples.frame(),
    Topic.VITALS: samples.vitals,
    Topic.DETECTIONS: samples.detection,
    Topic.EVIDENCE: samples.evidence,
    Topic.ALERTS: samples.alert,
    Topic.ALERT_ACKS: samples.ack,
    Topic.CAMERA_STATUS: samples.camera_status,
    Topic.DEAD_LETTER: samples.dead_letter,
}

MALFORMED = {
    Topic.FRAMES: [
        (b"not a jpeg", samples.frame().kafka_headers(), "not a JPEG"),
        (samples.frame().jpeg, [], "header 'icu-schema-version' is missing"),
    ],
    Topic.VITALS: [
        (b'{"schema_version": 1, "bed_id": "b1"', None, "not valid JSON"),
        (encode(samples.vitals()).replace(b'"hr":88.0', b'"hr":-1'), None, "hr"),
    ],
    Topic.DETECTIONS: [(encode(samples.detection()).replace(b'"grimace":0.1', b'"grimace":1.5'), None, "grimace")],
    Topic.EVIDENCE: [(encode(samples.evidence()).replace(b'"saliency_cols":2', b'"saliency_cols":3'), None, "grid")],
    Topic.ALERTS: [(encode(samples.alert()).replace(b'"state":"open"', b'"state":"panic"'), None, "state")],
    Topic.ALERT_ACKS: [(encode(samples.ack()).replace(b'"user":"nurse.a"', b'"user":""'), None, "user")],
    Topic.CAMERA_STATUS: [(b"\xff\xfe binary", None, "not valid JSON")],
    Topic.DEAD_LETTER: [(b'{"schema_version": 2}', None, "unsupported schema_version 2")],
}


def _produce(producer, topic_name, message_or_raw, headers=None):
    if isinstance(message_or_raw, Frame):
        producer.send(
            topic_name, key=message_or_raw.key(), value=message_or_raw.jpeg, headers=message_or_raw.kafka_headers()
        )
    elif isinstance(message_or_raw, bytes):
        producer.send(topic_name, key=b"icu1-bed01", value=message_or_raw, headers=headers or [])
    else:
        producer.send(topic_name, key=kafka_key(message_or_raw), value=encode(message_or_raw))


def _run_with_deadline(loop, stop, timeout_s=30.0):
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        return loop.run()
    finally:
        timer.cancel()


@pytest.mark.parametrize("topic", [t for t in Topic if t not in NON_CONTRACT_TOPICS], ids=lambda t: t.value)
def test_malformed_records_go_to_the_dead_letter_topic_with_reasons(kafka_settings, topic):
    prefix = kafka_settings.topic_prefix
    source = topic.full_name(prefix)
    dead_topic = Topic.DEAD_LETTER.full_name(prefix)
    if topic is Topic.DEAD_LETTER:
        # A dead-letter consumer must not feed its rejects back into its own input.
        dead_topic = f"{prefix}.dead-letter-of-dead-letter"
    producer = create_producer(kafka_settings)
    _produce(producer, source, VALID[topic]())
    for raw, headers, _ in MALFORMED[topic]:
        _produce(producer, source, raw, headers)
    _produce(producer, source, VALID[topic]())
    producer.flush()

    handled = []
    stop = GracefulStop()

    def handler(batch):
        handled.extend(item.message for item in batch)
        if len(handled) >= 2:
            stop.set()

    consumer = create_consumer(kafka_settings, group_id=f"test-{uuid.uuid4().hex[:8]}", topics=[source])
    loop = ConsumeLoop(
        consumer,
        topics={source: topic},
        handler=handler,
        dead_letters=DeadLetterPublisher(producer, dead_topic, stage="test-stage"),
        stop=stop,
    )
    stats = _run_with_deadline(loop, stop)
    assert len(handled) == 2
    assert all(type(m) is type(VALID[topic]()) for m in handled)
    assert stats.dead_lettered == len(MALFORMED[topic])

    letters = [decode(DeadLetter, r.value) for r in read_records(kafka_settings, dead_topic, len(MALFORMED[topic]))]
    assert len(letters) == len(MALFORMED[topic])
    for letter, (raw, _headers, reason) in zip(sorted(letters, key=lambda x: x.offset), MALFORMED[topic], strict=True):
        assert letter.source_topic == source
        assert letter.value == raw  # the original bytes, untouched
        assert letter.key == b"icu1-bed01"
        assert letter.error_type == "contract"
        assert letter.stage == "test-stage"
        assert reason in letter.reason
    producer.close()


def test_handler_rejections_are_dead_lettered_and_transient_failures_retried(kafka_settings):
    prefix = kafka_settings.topic_prefix
    source = Topic.VITALS.full_name(prefix)
    producer = create_producer(kafka_settings)
    for i in range(3):
        _produce(producer, source, samples.vitals(hr=60.0 + i))
    producer.flush()

    attempts = []
    stop = GracefulStop()

    def handler(batch):
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise ConnectionError("database restarting")
        stop.set()
        return [
            Rejected(item.record, "hr 61 refused by test rule")
            for item in batch
            if isinstance(item.message, Vitals) and item.message.hr == 61.0
        ]

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = create_consumer(kafka_settings, group_id=group, topics=[source], fetch_max_wait_ms=100)
    loop = ConsumeLoop(
        consumer,
        topics={source: Topic.VITALS},
        handler=handler,
        max_backoff_s=0.5,
        dead_letters=DeadLetterPublisher(producer, Topic.DEAD_LETTER.full_name(prefix), stage="sink"),
        stop=stop,
    )
    stats = _run_with_deadline(loop, stop)
    assert stats.retries == 1
    assert attempts[0] == attempts[1]  # the same batch, retried whole
    assert stats.handled == sum(attempts[1:])
    letters = read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix), 1)
    letter = decode(DeadLetter, letters[0].value)
    assert letter.error_type == "rejected"
    assert json.loads(letter.value)["hr"] == 61.0

    # Offsets were committed after handling: the group starts after the handled records.
    again = create_consumer(kafka_settings, group_id=group, topics=[source])
    assert again.poll(timeout_ms=3000) == {}
    again.close()
    producer.close()


def test_a_value_too_big_for_a_dead_letter_keeps_its_size_and_hash(kafka_settings):
    import hashlib

    from icu.contracts import MAX_DEAD_LETTER_VALUE_BYTES

    prefix = kafka_settings.topic_prefix
    source = Topic.CAMERA_STATUS.full_name(prefix)
    huge = b"x" * (MAX_DEAD_LETTER_VALUE_BYTES + 100_000)
    producer = create_producer(kafka_settings)
    _produce(producer, source, huge)
    _produce(producer, source, samples.camera_status())
    producer.flush()
    stop = GracefulStop()
    loop = ConsumeLoop(
        create_consumer(kafka_settings, group_id=f"test-{uuid.uuid4().hex[:8]}", topics=[source]),
        topics={source: Topic.CAMERA_STATUS},
        handler=lambda batch: stop.set(),
        dead_letters=DeadLetterPublisher(producer, Topic.DEAD_LETTER.full_name(prefix), stage="sink"),
        stop=stop,
    )
    stats = _run_with_deadline(loop, stop)
    assert stats.dead_lettered == 1
    letter = decode(DeadLetter, read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix), 1)[0].value)
    assert letter.value is None
    assert letter.value_size == len(huge)
    assert letter.value_sha256 == hashlib.sha256(huge).hexdigest()
    assert "not valid JSON" in letter.reason
    producer.close()
