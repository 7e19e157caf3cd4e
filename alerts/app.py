"""`icu alerts`: the Faust stream processor that turns vitals and video findings into alerts.

A thin adapter around the pure core (:mod:`alerts.processor`): one agent consumes ``vitals``,
``detections``, ``camera-status``, ``alert-acks`` and the app's own ``alert-ticks`` (all keyed
by bed and equally partitioned, so a bed's messages and its state meet in one worker), keeps
each bed's :class:`~alerts.processor.BedRecord` in a table (recovered from its changelog after
a restart), and publishes every alert version on ``alerts`` and as FHIR on ``alerts-fhir``.

A timer sends each local bed a tick every ``ICU_ALERTS_TICK_S``, through the ticks topic (a
Faust table can only change inside the stream, at the partition of the event being processed):
ticks move the bed's clock on between messages, for escalations, snooze ends, resolutions and
stale vitals. At-least-once (the embedded broker cannot do Faust's exactly-once): a worker
that crashes reprocesses some messages against the state it recovered; alert ids and versions
are deterministic, so consumers upserting on (alert_id, version) see each version once.

Each bed's live state stays in the worker's memory; the table gets a snapshot whenever one of
the bed's alerts changes and otherwise at most every ``ICU_ALERTS_SNAPSHOT_S`` (writing the whole
state at every message would cost more than the rules). So a crash can leave up to that much of
a bed's recent readings out of its rolling windows after recovery, never an alert change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import faust
from aiokafka.errors import IllegalStateError  # type: ignore[import-untyped]
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service
from pydantic import Field

from alerts.broker_watch import BrokerWatch
from alerts.fhir import encode_fhir
from alerts.lifecycle import LifecycleSettings
from alerts.processor import AlertProcessor, BedRecord
from alerts.rules import RuleThresholds
from icu.contracts import (
    Alert,
    AlertAck,
    CameraStatus,
    ContractError,
    DeadLetter,
    Detection,
    Topic,
    Vitals,
    decode,
    encode,
)
from icu.settings import KafkaSettings, ObservabilitySettings
from infra.ports import free_port
from infra.settings import TopicsAdminSettings, default_state_dir

log = logging.getLogger(__name__)

STAGE = "alerts"
INPUTS: dict[Topic, type[Vitals] | type[Detection] | type[CameraStatus] | type[AlertAck]] = {
    Topic.VITALS: Vitals,
    Topic.DETECTIONS: Detection,
    Topic.CAMERA_STATUS: CameraStatus,
    Topic.ALERT_ACKS: AlertAck,
}


class AlertSettings(TopicsAdminSettings, ObservabilitySettings):
    """`icu alerts`: the stream processor's identity, timings and rule thresholds."""

    alerts_app_id: str = Field(default="icu-alerts", min_length=1, description="Faust app id (consumer group).")
    alerts_web_port: int = Field(default=6066, ge=1, le=65535, description="Faust's web port on 127.0.0.1.")
    alerts_tick_s: float = Field(default=1.0, gt=0, le=60, description="How often each bed's clock is moved on.")
    alerts_snapshot_s: float = Field(
        default=1.0, ge=0, le=60, description="Most time between state snapshots per bed (also at each alert change)."
    )
    alerts_data_dir: Path = Field(
        default_factory=lambda: default_state_dir() / "alerts", description="Faust's data directory."
    )
    alert_hold_s: float = Field(default=60.0, ge=0, le=3600, description="Clear this long before resolving.")
    alert_escalate_high_s: float = Field(default=30.0, gt=0, description="Unacknowledged high alert escalates.")
    alert_escalate_medium_s: float = Field(default=120.0, gt=0, description="Unacknowledged medium alert escalates.")
    alert_escalate_low_s: float = Field(default=600.0, gt=0, description="Unacknowledged low alert escalates.")
    alert_max_escalation: int = Field(default=3, ge=0, le=100, description="Highest escalation level.")
    alert_max_snooze_s: int = Field(default=1800, ge=60, le=3600, description="Snoozes are capped at this.")
    alert_apnea_s: float = Field(default=20.0, ge=5, le=120, description="Video apnea this long raises.")
    alert_vitals_stale_s: float = Field(default=300.0, ge=30, description="No vitals this long: VITALS_STALE.")
    # Both below beat Faust's own choices (uvloop: throughput; a shorter fetch wait: latency) and
    # are the defaults since FetchCheckedRecovery ended the stall after a broker restart that
    # they made more likely (README, Benchmarks); asyncio and 1500 give Faust's behaviour back.
    alerts_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The worker's event loop: uvloop (1.15x the messages/s of asyncio's) or the standard "
        "library's asyncio.",
    )
    alerts_fetch_max_wait_ms: int = Field(
        default=300,
        ge=10,
        le=10_000,
        description="Longest a fetch that found no records waits at the broker (Faust's own is 1,500 ms; a "
        "broker that answers only when the wait ends, like the embedded one, adds up to this to each hop).",
    )

    def processor(self) -> AlertProcessor:
        return AlertProcessor(
            thresholds=RuleThresholds(apnea_s=self.alert_apnea_s, vitals_stale_s=self.alert_vitals_stale_s),
            lifecycle=LifecycleSettings(
                hold_s=self.alert_hold_s,
                escalate_after_s={
                    "high": self.alert_escalate_high_s,
                    "medium": self.alert_escalate_medium_s,
                    "low": self.alert_escalate_low_s,
                    "info": 3600.0,
                },
                max_escalation=self.alert_max_escalation,
                max_snooze_s=self.alert_max_snooze_s,
            ),
        )


def worker_env(settings: TopicsAdminSettings, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for an `icu alerts` subprocess on ``settings``' broker and topics, with a
    free web port and its own data directory; ``extra`` adds or overrides ``ICU_*`` variables."""
    return {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": settings.topic_prefix,
        "ICU_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "ICU_ALERTS_WEB_PORT": str(free_port()),
        "ICU_ALERTS_DATA_DIR": str(data_dir),
        **extra,
    }


def broker_credentials(settings: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """ICU_KAFKA_SECURITY_PROTOCOL, SASL and TLS settings as Faust's ``broker_credentials`` (aiokafka
    gets the same trust and identity as the kafka-python clients of :meth:`KafkaSettings.kafka_client_config`)."""
    context = settings.kafka_ssl_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # guaranteed by KafkaSettings' validation
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # SASL_SSL with a context, SASL_PLAINTEXT without
        )
    return faust.SSLCredentials(context) if context is not None else None


class AlertsStats:
    def __init__(self) -> None:
        self.messages = 0
        self.versions_by: Counter[tuple[str, str, str]] = Counter()  # (code, priority, state) -> versions
        self.dead_lettered = 0
        self.acks_ignored = 0

    @property
    def versions(self) -> int:
        return sum(self.versions_by.values())


class _WorkerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, with two additions: its transport's fetch wait (Faust
    hard-codes 1,500 ms), and the broker's last fetch answers, which FetchCheckedRecovery reads."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts its fetcher, which is after this returns.
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer

    async def fetched_to(self, tp: TP, fresh_s: float) -> tuple[int, int] | None:
        """(position, log end) of ``tp`` as the broker's last Fetch answer for it gave them, or None
        when unknown: not assigned, no position yet, or no answer in the last ``fresh_s``."""
        return cast(tuple[int, int] | None, await self.call_thread(self._fetched_to, tp, fresh_s))

    async def _fetched_to(self, tp: TP, fresh_s: float) -> tuple[int, int] | None:
        consumer = self._ensure_consumer()
        partition = faust_aiokafka.ensure_aiokafka_TP(tp)
        if partition not in consumer.assignment():
            return None
        log_end, answered_ms = consumer.highwater(partition), consumer.last_poll_timestamp(partition)
        if log_end is None or answered_ms is None or time.time() * 1000 - answered_ms > fresh_s * 1000:
            return None
        try:
            position = await asyncio.wait_for(consumer.position(partition), 1.0)
        except (TimeoutError, IllegalStateError):
            return None
        return int(position), int(log_end)


class _WorkerConsumer(faust_aiokafka.Consumer):
    _thread: _WorkerConsumerThread

    def _new_consumer_thread(self) -> _WorkerConsumerThread:
        return _WorkerConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def fetched_to(self, tp: TP, fresh_s: float) -> tuple[int, int] | None:
        return await self._thread.fetched_to(tp, fresh_s)


class FetchCheckedRecovery(Recovery):
    """Faust's table recovery, which also ends for a changelog partition whose records the broker
    listed but will not serve.

    Recovery reads each changelog partition up to the end offset the broker lists (ListOffsets)
    when the worker gets its partitions, and the streams wait until it gets there. The embedded
    broker can list records that no Fetch returns: records produced to a topic it does not have
    (Faust's producer re-sending, after an in-memory broker restarted, the changelog records the
    old broker never acknowledged, before the worker creates the changelog again) are acknowledged
    and counted in the topic's end offset once it is created, but never served. Recovery then
    waits for them for ever and the worker never processes another message.

    So when, ``after_s`` into a recovery, a partition has had no changelog record for ``after_s``
    and the broker's Fetch answers (from the last ``fresh_s``) put its log end at or below the
    consumer's position, that log end is taken as the partition's end and the recovery goes on.
    A broker whose fetches reach every offset it lists (Apache Kafka) never gets here: a
    partition with records left to read has its position below the log end its Fetch answers give.
    """

    # Faust's own recovery progress stays under "faust" (quiet unless ICU_LOG_LEVEL=DEBUG).
    logger = logging.getLogger("faust.tables.recovery.fetch_checked")
    after_s: float = 10.0
    fresh_s: float = 5.0
    check_every_s: float = 2.0

    @Service.task
    async def _end_unserved_recovery(self) -> None:
        async for _ in self.itertimer(self.check_every_s, name="Recovery.unserved"):
            if self.in_recovery:
                await self.end_unserved()

    async def end_unserved(self) -> list[TP]:
        """Take the Fetch answers' log end for every active changelog partition the broker has
        stopped serving (see the class); the partitions so ended."""
        now = time.monotonic()
        started = self._recovery_started_at
        if started is None or now - started < self.after_s:
            return []
        consumer = cast(_WorkerConsumer, self.app.consumer)  # build_faust_app installs both
        ended: list[TP] = []
        for tp, remaining in list(self.active_remaining().items()):
            last_event = self._active_events_received_at.get(tp)
            if remaining <= 0 or (last_event is not None and now - last_event < self.after_s):
                continue
            answer = await consumer.fetched_to(tp, self.fresh_s)
            if answer is None or not self.in_recovery:
                continue  # nothing known, or the recovery is over
            position, log_end = answer
            listed, offset = self.active_highwaters.get(tp), self.active_offsets.get(tp)
            if position < log_end or listed is None or offset is None or listed <= offset:
                continue  # more to fetch, or recovered (or revoked) meanwhile
            # Faust's highwater is the last offset to read, one below the log end.
            served = max(offset, log_end - 1)
            if served >= listed:
                continue  # the fetches reach what is listed: not this case
            self.active_highwaters[tp] = served
            ended.append(tp)
            log.warning("table recovery: the broker lists changelog %s[%d] up to offset %d but its fetches end at "
                        "%d, with no record for %.0f s; recovering it up to %d (records acknowledged but never "
                        "served, e.g. by an in-memory broker after a restart)",
                        tp.topic, tp.partition, listed + 1, log_end, self.after_s, log_end)  # fmt: skip
        return ended


class _TableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FetchCheckedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class FetchWaitTransport(faust_aiokafka.Transport):
    """Faust's Kafka transport whose worker consumer waits at most ``fetch_max_wait_ms`` for records."""

    Consumer = _WorkerConsumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms


def use_event_loop(settings: AlertSettings) -> str:
    """Install the event loop ICU_ALERTS_EVENT_LOOP names for this process (before the Faust app
    and its consumer thread make their loops); returns what it installed, for the start-up log."""
    if settings.alerts_event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)
    return settings.alerts_event_loop


def build_faust_app(settings: AlertSettings) -> faust.App:
    """The Faust app with the worker's broker, consumer and table settings, and nothing on it
    (``icu bench alerts`` runs a counting agent on the same settings as Faust's own ceiling)."""
    servers = ";".join(f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",") if s.strip())
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Faust's own progress chatter (recovery tables, service starts) buries the alerts at INFO.
        for noisy in ("faust", "mode", "aiokafka"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    app = faust.App(
        # Prefixed, so deployments sharing a cluster keep apart groups and changelog topics.
        f"{settings.topic_prefix}-{settings.alerts_app_id}",
        broker=servers,
        broker_credentials=broker_credentials(settings),
        store="memory://",  # the table lives in memory and is rebuilt from its changelog
        processing_guarantee="at_least_once",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=0,
        web_enabled=True,
        web_bind="127.0.0.1",
        web_port=settings.alerts_web_port,
        broker_session_timeout=max(6.0, settings.kafka_session_timeout_ms / 1000),
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.alerts_data_dir),
        TableManager=_TableManager,  # table recovery that cannot wait for ever on unserved records
    )
    # Before anything asks for the transport (topics, tables): Faust would build its own.
    app.transport = FetchWaitTransport(
        app.conf.broker_consumer, app, fetch_max_wait_ms=settings.alerts_fetch_max_wait_ms
    )
    # Faust creates only the last level of its data directory; a fresh machine has no parents.
    settings.alerts_data_dir.mkdir(parents=True, exist_ok=True)
    return app


def build_app(settings: AlertSettings) -> tuple[faust.App, AlertsStats]:
    prefix = settings.topic_prefix
    app = build_faust_app(settings)
    processor = settings.processor()
    stats = AlertsStats()
    names = {topic.full_name(prefix): topic for topic in INPUTS}
    ticks_name = Topic.ALERT_TICKS.full_name(prefix)
    source = app.topic(*names, ticks_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    ticks = app.topic(ticks_name, key_type=bytes, value_type=bytes, value_serializer="raw")
    alerts_topic = app.topic(Topic.ALERTS.full_name(prefix), key_type=bytes, value_type=bytes, value_serializer="raw")
    fhir_topic = app.topic(Topic.ALERTS_FHIR.full_name(prefix), key_type=bytes, value_type=bytes,
                           value_serializer="raw")  # fmt: skip
    dead_topic = app.topic(Topic.DEAD_LETTER.full_name(prefix), key_type=bytes, value_type=bytes,
                           value_serializer="raw")  # fmt: skip
    beds = app.Table("bed-alert-state", default=None, partitions=settings.topic_partitions)  # JSON values

    async def publish(versions: list[Alert]) -> None:
        for version in versions:
            await alerts_topic.send(key=version.key(), value=encode(version))
            await fhir_topic.send(key=version.key(), value=encode_fhir(version))
            stats.versions_by[(version.code, version.priority.value, version.state.value)] += 1
            log.log(logging.WARNING if version.version == 1 else logging.INFO,
                    "bed %s: %s %s v%d %s (%s)", version.bed_id, version.code, version.priority.value,
                    version.version, version.state.value, version.explanation)  # fmt: skip

    async def reject(event: Any, reason: str, error_type: str) -> None:
        message = event.message
        letter = DeadLetter.of(
            ts=datetime.now(UTC),
            stage=STAGE,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=event.key,
            value=event.value,
            headers=[(k, v) for k, v in (message.headers or [])],
            reason=reason,
            error_type=error_type,
        )
        await dead_topic.send(key=event.key, value=encode(letter))
        stats.dead_lettered += 1
        log.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)

    # The live state of each bed is kept here; the table (and its changelog) gets a snapshot
    # when an alert changes and otherwise at most every ICU_ALERTS_SNAPSHOT_S per bed: writing
    # the whole state at every message would cost more than the rules. A snapshot carries a
    # revision, so a bed whose partition went to another worker and came back is reloaded.
    cache: dict[str, tuple[BedRecord, int, float]] = {}  # bed -> (record, revision, last snapshot)

    def load(key: str) -> tuple[BedRecord, int, float] | None:
        stored = beds.get(key)
        revision = int(stored.get("rev", 0)) if stored is not None else 0
        cached = cache.get(key)
        if cached is not None and cached[1] == revision:
            return cached
        if stored is None:
            return None
        record = BedRecord.from_dict(stored)
        # The worker's own downtime is not the patient's silence: a bed reloaded after a restart
        # or rebalance starts as just heard from, so ticks do not jump its clock over the backlog.
        wall = time.time()
        record.arrival = wall
        record.seen = dict.fromkeys(record.seen, wall)
        return record, revision, 0.0

    def save(key: str, record: BedRecord, revision: int, snapshot_at: float, *, changed: bool) -> None:
        wall = time.monotonic()
        if changed or wall - snapshot_at >= settings.alerts_snapshot_s:
            revision += 1
            beds[key] = {**record.to_dict(), "rev": revision}
            snapshot_at = wall
        cache[key] = (record, revision, snapshot_at)

    def handle(key: str, topic_name: str, message: Any) -> list[Alert]:
        """One message (or tick, ``message`` None) for one bed: the alert versions it causes."""
        loaded = load(key)
        if topic_name == ticks_name:
            if loaded is None:
                return []  # a bed this worker no longer has
            record, revision, snapshot_at = loaded
            versions = processor.on_tick(record, wall=time.time())
        else:
            record, revision, snapshot_at = loaded if loaded is not None else (BedRecord.new(key), 0, 0.0)
            if isinstance(message, AlertAck):
                versions, problem = processor.on_ack(record, message, wall=time.time())
                if problem is not None:
                    stats.acks_ignored += 1
                    log.info("ack %s for alert %s on bed %s kept in the audit trail only: %s",
                             message.ack_id, message.alert_id, key, problem)  # fmt: skip
            else:
                versions = processor.on_message(record, message, wall=time.time())
            stats.messages += 1
        save(key, record, revision, snapshot_at, changed=bool(versions))
        return versions

    @app.agent(source)
    async def process(stream: Any) -> None:
        async for event in stream.events():
            key = event.key.decode("utf-8", "replace") if isinstance(event.key, bytes) else None
            topic_name = event.message.topic
            if key is None:
                await reject(event, "record has no key (expected the bed id)", "contract")
                continue
            message = None
            if topic_name != ticks_name:
                try:
                    message = decode(INPUTS[names[topic_name]], event.value)
                except ContractError as exc:
                    await reject(event, str(exc), "contract")
                    continue
                if message.bed_id != key:
                    await reject(event, f"key {key!r} is not the message's bed_id {message.bed_id!r}", "contract")
                    continue
            try:
                versions = handle(key, topic_name, message)
            except Exception as exc:  # a bug must not stop alerting for every other bed
                log.exception("bed %s: processing %s failed; the record is dead-lettered and the bed's state "
                              "reloaded from its last snapshot", key, topic_name)  # fmt: skip
                cache.pop(key, None)
                if message is not None:
                    await reject(event, f"processing failed: {exc}", type(exc).__name__)
                continue
            await publish(versions)

    @app.timer(settings.alerts_tick_s)
    async def tick() -> None:
        for key in list(beds.keys() | cache.keys()):
            await ticks.send(key=key.encode(), value=json.dumps({"wall": time.time()}).encode())

    # Faust's clients reconnect to a restarted broker on their own; the watch says so in the log
    # and re-creates Faust's internal topics when the broker lost them (see alerts.broker_watch).
    # (aiokafka's per-attempt errors are thinned by configure_logging's RepeatFilter.)
    outputs = (Topic.ALERTS, Topic.ALERTS_FHIR, Topic.DEAD_LETTER)
    expected = [*names, ticks_name, *(t.full_name(prefix) for t in outputs)]
    watch = BrokerWatch(app, settings.kafka_bootstrap_servers, expected=expected)

    @app.task
    async def watch_broker() -> None:
        await watch.run()

    return app, stats
