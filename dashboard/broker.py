"""The dashboard's Kafka side: publishing acknowledgements, and the broker's view of health
(dead letters, consumer-group lag). One producer and one metadata consumer per server process
(the Streamlit layer caches this object as a resource)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from icu.contracts import AlertAck, Topic, encode, kafka_key
from icu.kafka import RenewingProducer, close_producer, create_renewing_producer
from icu.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


class PublishError(Exception):
    """The broker did not take the acknowledgement; the nurse must be told it was not sent."""


@dataclass(frozen=True)
class GroupLag:
    group: str
    lag: int | None
    """Records on the group's topics not yet committed by it; None when the group has no offsets."""


class DashboardBroker:
    """Lazily connected clients; thread-safe for the dashboard's use (one lock per client)."""

    def __init__(self, settings: KafkaSettings, topics: TopicSettings) -> None:
        self.settings = settings
        self.prefix = topics.topic_prefix
        self._lock = threading.Lock()
        self._producer: RenewingProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None

    def _get_producer(self) -> RenewingProducer:
        if self._producer is None:
            self._producer = create_renewing_producer(self.settings, name="dashboard acks", linger_ms=0)
        return self._producer

    def publish_ack(self, ack: AlertAck, *, timeout_s: float = 10.0) -> None:
        """Send ``ack`` to ``<prefix>.alert-acks`` keyed by bed and wait for the broker's ack."""
        try:
            with self._lock:
                producer = self._get_producer()
            future = producer.send(Topic.ALERT_ACKS.full_name(self.prefix), key=kafka_key(ack), value=encode(ack))
            future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"the acknowledgement was not sent: {exc}") from exc

    def _get_consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            # No group: this consumer only asks for offsets.
            self._consumer = KafkaConsumer(**self.settings.kafka_client_config(), enable_auto_commit=False)
        return self._consumer

    def _end_minus_begin(self, topic: str) -> int:
        consumer = self._get_consumer()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return 0
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        return sum(max(0, ends[tp] - begins[tp]) for tp in tps)

    def dead_letters(self) -> int | None:
        """Records on ``<prefix>.dead-letter`` still retained; None when the broker cannot be asked."""
        try:
            with self._lock:
                return self._end_minus_begin(Topic.DEAD_LETTER.full_name(self.prefix))
        except KafkaError as exc:
            log.warning("dead-letter count unavailable: %s", exc)
            return None

    def group_lag(self, group: str) -> GroupLag:
        """How far ``group`` is behind the end of the partitions it has committed offsets on."""
        try:
            with self._lock:
                if self._admin is None:
                    self._admin = KafkaAdminClient(**self.settings.kafka_client_config())
                committed = self._admin.list_group_offsets({group: None}).get(group, {})
                committed = {tp: meta for tp, meta in committed.items() if meta.offset >= 0}
                if not committed:
                    return GroupLag(group, None)
                ends = self._get_consumer().end_offsets(list(committed))
            return GroupLag(group, sum(max(0, ends[tp] - meta.offset) for tp, meta in committed.items()))
        except (KafkaError, AttributeError) as exc:  # AttributeError: a client without the admin call
            log.warning("lag of %s unavailable: %s", group, exc)
            return GroupLag(group, None)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                close_producer(self._producer, 5)
            for client in (self._consumer, self._admin):
                if client is not None:
                    client.close()
            self._producer = self._consumer = self._admin = None
