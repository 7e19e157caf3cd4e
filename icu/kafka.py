"""Kafka clients for every stage: producer and consumer factories, the dead-letter policy,
and an at-least-once consume loop with graceful shutdown.

The defaults work on Apache Kafka and on the embedded Tansu broker alike: idempotent
producer with ``acks=all``, manual commits after a batch is fully handled, and a short
consumer-group session timeout (see ``KafkaSettings``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaConnectionError, KafkaError
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from icu.contracts import (
    Contract,
    ContractError,
    DeadLetter,
    Frame,
    Topic,
    decode_record,
    encode,
)
from icu.settings import KafkaSettings

log = logging.getLogger(__name__)


class ConsumedRecord(Protocol):
    """The parts of a kafka-python ``ConsumerRecord`` this module uses."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


def create_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent, ``acks=all`` producer. Messages bigger than 1 MiB are refused client-side,
    as real Kafka would refuse them (the embedded broker has no limit)."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": 1_048_576,
        "retries": 2**31 - 1,
        "delivery_timeout_ms": 120_000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def create_consumer(
    settings: KafkaSettings, *, group_id: str, topics: Iterable[str], **overrides: Any
) -> KafkaConsumer:
    """A consumer in ``group_id`` with manual commits (the loop commits after handling)."""
    config: dict[str, Any] = {
        **settings.kafka_client_config(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(300, settings.kafka_session_timeout_ms // 3),
        "max_poll_records": 500,
        "isolation_level": "read_committed",
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    consumer.subscribe(list(topics))
    return consumer


class Producer(Protocol):
    """What the stages use of a producer: :class:`kafka.KafkaProducer` or :class:`RenewingProducer`."""

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class RenewingProducer:
    """A producer for a long-running service that replaces itself after a fatal error.

    kafka-python's idempotent producer turns some errors into a permanent failed state in which
    every later send fails: a broker that lost its producer state (the embedded broker loses
    everything when it restarts, and refuses the epoch bump the client then asks for), a producer
    fenced, authorisation revoked. Before each send this checks for that state and, when found,
    closes the failed producer (its undelivered records fail through their callbacks, as any
    delivery failure does) and creates a new one with the same settings, saying so in the log.
    Callers already treat a failed send as a failed delivery (retry the batch, or count the drop).
    """

    def __init__(self, factory: Callable[[], KafkaProducer], *, name: str) -> None:
        self._factory = factory
        self._name = name
        self._lock = threading.Lock()
        self._producer = factory()
        self.renewals = 0

    @property
    def current(self) -> KafkaProducer:
        self._renew_if_failed()
        return self._producer

    def _renew_if_failed(self) -> None:
        failed = _fatal_error(self._producer)
        if failed is None:
            return
        with self._lock:
            if _fatal_error(self._producer) is None:
                return  # another thread renewed it
            old = self._producer
            log.warning(
                "%s: the Kafka producer failed for good (%s); replacing it with a new one (renewal %d). "
                "Records it had not delivered count as failed deliveries.",
                self._name,
                failed,
                self.renewals + 1,
            )
            self._producer = self._factory()
            self.renewals += 1
        close_producer(old, 0)
        log.info("%s: new Kafka producer ready; sending again", self._name)

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        return self.current.send(
            topic, value=value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms
        )

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        close_producer(self._producer, 30.0 if timeout is None else timeout)


def _fatal_error(producer: KafkaProducer) -> str | None:
    """The error that put ``producer`` in kafka-python's fatal state, or None when it is usable."""
    manager = getattr(producer, "_transaction_manager", None)  # None when idempotence is off
    if manager is None or not manager.has_fatal_error():
        return None
    error = manager.last_error
    return f"{type(error).__name__}: {error}" if error is not None else "fatal error"


def create_renewing_producer(settings: KafkaSettings, *, name: str, **overrides: Any) -> RenewingProducer:
    """:func:`create_producer` for a service that runs for days: renewed after a fatal error."""
    return RenewingProducer(lambda: create_producer(settings, **overrides), name=name)


def close_producer(producer: Producer, timeout_s: float) -> None:
    """Flush and close; records still undelivered after ``timeout_s`` are dropped (and logged)."""
    if isinstance(producer, RenewingProducer):
        producer.close(timeout_s)
        return
    try:
        producer.close(timeout=timeout_s)
    except KafkaError as exc:
        # kafka-python 3.0 raises from close() when records are still undelivered and leaves
        # the producer open (its __del__ then raises again). Force the I/O thread down so the
        # undelivered batches are aborted, then close for good.
        log.warning("closing the Kafka producer: records still undelivered are dropped (%s)", exc)
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(timeout_s)
        with contextlib.suppress(KafkaError):
            producer.close(timeout=0)


class GracefulStop:
    """A stop flag that SIGTERM and SIGINT set, so loops finish their batch, commit and close."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> GracefulStop:
        """Route SIGTERM/SIGINT to this flag (main thread only, as Python requires)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            # A second Ctrl-C means "now": let the default handler end the process.
            raise KeyboardInterrupt
        log.info("received %s; shutting down (again to force)", signal.Signals(signum).name)
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)


BROKER_LOST_AFTER_S = 3.0  # a consume loop says the broker is lost after this long without a coordinator
BROKER_WATCH_EVERY_S = 0.5


class DeadLetterError(Exception):
    """Dead letters could not be delivered; the batch must not be committed."""


@dataclass
class DeadLetterPublisher:
    """Sends records a stage cannot process to the dead-letter topic, whole, with the reason.

    Values too big to fit a dead letter under Kafka's 1 MiB limit (base64 grows them by a
    third) are replaced by their size and SHA-256, so one huge record cannot wedge a worker.
    """

    producer: Producer
    topic: str
    stage: str
    sent: int = 0
    _pending: list[FutureRecordMetadata] = field(default_factory=list)

    def publish(self, record: ConsumedRecord, *, reason: str, error_type: str) -> None:
        letter = DeadLetter.of(
            ts=datetime.now(UTC),
            stage=self.stage,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=list(record.headers or ()),
            reason=reason,
            error_type=error_type,
        )
        log.warning(
            "dead-lettering %s[%d]@%d (%s): %s", record.topic, record.partition, record.offset, error_type, reason
        )
        self._pending.append(self.producer.send(self.topic, key=record.key, value=encode(letter)))
        self.sent += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every letter sent so far; raise :class:`DeadLetterError` if any failed."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        self.producer.flush(timeout=timeout_s)
        failed = [future for future in pending if not future.succeeded()]
        if failed:
            raise DeadLetterError(
                f"{len(failed)} of {len(pending)} dead letters to {self.topic} were not delivered: "
                f"{failed[0].exception!r}"
            )


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message with the record it came from."""

    message: Contract | Frame
    record: ConsumedRecord


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message the handler refuses for good (not a transient failure): it is dead-lettered."""

    record: ConsumedRecord
    reason: str
    error_type: str = "rejected"


BatchHandler = Callable[[list[Received]], Iterable[Rejected] | None]


@dataclass
class ConsumeStats:
    batches: int = 0
    handled: int = 0
    dead_lettered: int = 0
    retries: int = 0


@dataclass
class ConsumeLoop:
    """At-least-once consumption with one error policy for every stage.

    Each polled batch is decoded by its topic's contract; malformed records go to the
    dead-letter topic with the reason and never reach ``handler``. The handler may return
    records it rejects for good (also dead-lettered). If it raises, the failure is treated
    as transient (a database restart, say): nothing is committed, the consumer seeks back
    to the batch's start and retries with capped exponential backoff, so nothing is lost.
    Offsets are committed only after the batch is handled and the dead letters flushed.
    """

    consumer: KafkaConsumer
    topics: Mapping[str, Topic]
    handler: BatchHandler
    dead_letters: DeadLetterPublisher
    stop: GracefulStop = field(default_factory=GracefulStop)
    poll_timeout_ms: int = 500
    max_backoff_s: float = 30.0
    stats: ConsumeStats = field(default_factory=ConsumeStats)
    heartbeat: Callable[[], None] | None = None
    """Called after every poll, also while a failing batch is retried: the loop is alive."""
    lag: dict[TopicPartition, int] = field(default_factory=dict)
    """Records behind the partition's high watermark after the last batch, per partition this
    consumer owns (from the fetch responses, so free; the broker's own figures are authoritative)."""
    broker_lost_since: float | None = None
    """Monotonic time since which the group coordinator has been unknown (broker down), or None."""
    _said_lost: bool = False

    def run(self, *, max_batches: int | None = None) -> ConsumeStats:
        # The broker's state is watched from a thread of its own: kafka-python 3's poll blocks
        # while it looks for a lost coordinator, so a loop that only checked between polls would
        # see an outage only once it was over.
        finished = threading.Event()
        watch = threading.Thread(target=self._watch_broker, args=(finished,), name="broker-watch", daemon=True)
        watch.start()
        try:
            while not self.stop.is_set():
                if max_batches is not None and self.stats.batches >= max_batches:
                    break
                try:
                    polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
                except KafkaConnectionError as exc:
                    # kafka-python 3 can raise a refused connection out of poll while it looks
                    # for a lost group coordinator: the broker is away, not the consumer broken.
                    # Poll again shortly; the broker watch logs the outage and the recovery.
                    log.debug("poll: %s; retrying", exc)
                    self._beat()
                    self.stop.wait(1.0)
                    continue
                self._beat()
                if polled:
                    self._process_batch(polled)
        finally:
            finished.set()
            try:
                self.dead_letters.flush()
            finally:
                self.consumer.close(autocommit=False)
                watch.join(timeout=2)
        return self.stats

    def _watch_broker(self, finished: threading.Event) -> None:
        while not finished.wait(BROKER_WATCH_EVERY_S):
            self._note_broker()

    def _beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat()

    def _note_broker(self) -> None:
        """Log, once each, losing the broker (no group coordinator for BROKER_LOST_AFTER_S) and
        finding it again: kafka-python reconnects by itself, but only logs each failed attempt."""
        coordinator = getattr(self.consumer, "_coordinator", None)  # kafka-python's group coordinator
        if coordinator is None:
            return
        now = time.monotonic()
        # The attribute, not coordinator_unknown(): that one may mark the coordinator dead, which
        # is the consumer's business, on the consumer's thread.
        if coordinator.coordinator_id is None:
            if self.broker_lost_since is None:
                self.broker_lost_since = now
            elif not self._said_lost and now - self.broker_lost_since >= BROKER_LOST_AFTER_S:
                self._said_lost = True
                log.warning("Kafka broker unreachable (no group coordinator for %.0f s); reconnecting, nothing is "
                            "committed meanwhile", now - self.broker_lost_since)  # fmt: skip
        elif self.broker_lost_since is not None:
            if self._said_lost:
                log.warning("Kafka broker reachable again after %.0f s: group coordinator found, consuming",
                            now - self.broker_lost_since)  # fmt: skip
            self.broker_lost_since, self._said_lost = None, False

    def _note_lag(self, polled: Mapping[TopicPartition, list[ConsumedRecord]]) -> None:
        assigned = set(self.consumer.assignment())
        for partition in [p for p in self.lag if p not in assigned]:
            del self.lag[partition]  # moved to another member in a rebalance
        for partition, records in polled.items():
            high = self.consumer.highwater(partition) if records else None  # poll returns assigned ones only
            if high is not None:
                self.lag[partition] = max(0, high - (records[-1].offset + 1))

    def _process_batch(self, polled: Mapping[TopicPartition, list[ConsumedRecord]]) -> None:
        self.stats.batches += 1
        self._note_lag(polled)
        received: list[Received] = []
        for records in polled.values():
            for record in records:
                try:
                    message = decode_record(self.topics[record.topic], record.value, record.headers)
                except ContractError as exc:
                    self.dead_letters.publish(record, reason=exc.reason, error_type="contract")
                    self.stats.dead_lettered += 1
                else:
                    received.append(Received(message, record))
        rejected = self._handle_with_retry(received)
        if rejected is None:
            return  # stopping before the batch could be handled: nothing committed
        for rejection in rejected:
            self.dead_letters.publish(rejection.record, reason=rejection.reason, error_type=rejection.error_type)
            self.stats.dead_lettered += 1
        self.stats.handled += len(received)
        self.dead_letters.flush()
        self._commit(polled)

    def _handle_with_retry(self, received: list[Received]) -> list[Rejected] | None:
        if not received:
            return []
        attempt = 0
        paused: set[TopicPartition] = set()
        try:
            while True:
                try:
                    return list(self.handler(received) or ())
                except Exception as exc:
                    attempt += 1
                    self.stats.retries += 1
                    delay = min(self.max_backoff_s, 0.5 * 2 ** min(attempt, 10))
                    log.warning(
                        "handler failed on a batch of %d (attempt %d, %s: %s); retrying in %.1fs, nothing committed",
                        len(received),
                        attempt,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    deadline = time.monotonic() + delay
                    while (remaining := deadline - time.monotonic()) > 0:
                        if self.stop.is_set():
                            return None
                        # Keep polling so the group keeps us as a member while the sink is
                        # failing, with every partition paused. A rebalance can hand us new,
                        # unpaused partitions: pause them too, and rewind anything they return
                        # so no record is skipped.
                        paused = self._pause_all()
                        polled = self.consumer.poll(timeout_ms=int(min(remaining, 0.5) * 1000))
                        self._beat()
                        for partition, records in polled.items():
                            if records:
                                self.consumer.seek(partition, records[0].offset)
        finally:
            if paused:
                still_ours = paused & set(self.consumer.assignment())
                if still_ours:
                    self.consumer.resume(*still_ours)

    def _pause_all(self) -> set[TopicPartition]:
        assigned = set(self.consumer.assignment())
        if assigned:
            self.consumer.pause(*assigned)
        return assigned

    def _commit(self, polled: Mapping[TopicPartition, list[ConsumedRecord]]) -> None:
        # Explicit offsets: exactly what this batch handled, for partitions still ours.
        assigned = set(self.consumer.assignment())
        offsets = {
            partition: OffsetAndMetadata(records[-1].offset + 1, "", -1)
            for partition, records in polled.items()
            if records and partition in assigned
        }
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced while we worked: the new owner re-reads from the last
            # commit, so the batch is processed again (at-least-once), not lost.
            log.warning("offset commit failed after a rebalance; batch will be redelivered: %s", exc)
        except KafkaError as exc:
            # The broker went away between the poll and the commit (kafka-python 3 raises its
            # connection error here): the batch stays uncommitted and is read again, not lost.
            log.warning("offset commit failed (%s: %s); the batch may be redelivered", type(exc).__name__, exc)
