"""Topic administration: create every icu-watch topic idempotently, list what exists.

Partition counts and per-topic configuration are explicit: never rely on broker
auto-creation (the embedded broker would give 4 partitions and no retention settings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from icu.contracts import Topic
from icu.settings import KafkaSettings, TopicSettings
from infra.errors import InfraError
from infra.settings import TopicsAdminSettings

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class TopicAdminError(InfraError):
    """The cluster refused to create or describe topics."""


@dataclass(frozen=True)
class TopicSpec:
    """What a topic carries and how it is configured on the cluster."""

    topic: Topic
    description: str
    key: str
    value: str
    retention_ms: int
    bed_keyed: bool = True

    def config(self) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


TOPIC_SPECS: Mapping[Topic, TopicSpec] = {
    spec.topic: spec
    for spec in (
        TopicSpec(
            Topic.FRAMES,
            "camera frames sampled to the configured rate",
            "bed_id",
            "JPEG bytes; bed, camera, capture time, seq, width, height in headers",
            HOUR_MS,
        ),
        TopicSpec(
            Topic.VITALS,
            "vital signs from monitors (HL7 v2 / JSON) and the simulator",
            "bed_id",
            "JSON Vitals",
            7 * DAY_MS,
        ),
        TopicSpec(
            Topic.DETECTIONS,
            "frame-level video findings from inference workers",
            "bed_id",
            "JSON Detection",
            7 * DAY_MS,
        ),
        TopicSpec(
            Topic.EVIDENCE,
            "keyframe + saliency when a video finding starts",
            "bed_id",
            "JSON Evidence",
            30 * DAY_MS,
        ),
        TopicSpec(
            Topic.ALERTS,
            "every version of every alert (upsert on alert_id + version)",
            "bed_id",
            "JSON Alert",
            365 * DAY_MS,
        ),
        TopicSpec(
            Topic.ALERTS_FHIR,
            "every alert version as a FHIR R4 resource, for clinical systems",
            "bed_id",
            "FHIR R4 JSON (DetectedIssue, triggering Observations contained)",
            365 * DAY_MS,
        ),
        TopicSpec(
            Topic.ALERT_TICKS,
            "internal to `icu alerts`: a tick per bed, so timers run where the bed's state is",
            "bed_id",
            "JSON {wall}",
            HOUR_MS,
        ),
        TopicSpec(
            Topic.ALERT_ACKS,
            "clinician acknowledgements and snoozes",
            "bed_id",
            "JSON AlertAck",
            365 * DAY_MS,
        ),
        TopicSpec(Topic.CAMERA_STATUS, "camera health every few seconds", "bed_id", "JSON CameraStatus", 7 * DAY_MS),
        TopicSpec(
            Topic.DEAD_LETTER,
            "records a stage could not process, with the reason",
            "original key",
            "JSON DeadLetter",
            30 * DAY_MS,
            bed_keyed=False,
        ),
    )
}


def planned_topics(settings: TopicSettings) -> list[NewTopic]:
    """The topics this deployment needs, with partitions and configuration."""
    planned = []
    for spec in TOPIC_SPECS.values():
        config = spec.config()
        if spec.topic is Topic.FRAMES:
            config["retention.ms"] = str(settings.topic_frames_retention_ms)
        # The dead-letter topic is low-volume; a few partitions keep per-key order enough.
        partitions = settings.topic_partitions if spec.bed_keyed else min(3, settings.topic_partitions)
        planned.append(
            NewTopic(
                name=spec.topic.full_name(settings.topic_prefix),
                num_partitions=partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=config,
            )
        )
    return planned


@dataclass(frozen=True)
class TopicReport:
    name: str
    partitions: int
    created: bool


def create_topics(settings: TopicsAdminSettings) -> list[TopicReport]:
    """Create every missing topic; topics that exist are left as they are. Idempotent."""
    admin = _admin(settings)
    try:
        planned = planned_topics(settings)
        existing = set(admin.list_topics())
        missing = [t for t in planned if t.name not in existing]
        created: set[str] = set()
        for new_topic in missing:
            try:
                admin.create_topics([new_topic], raise_errors=True)
                created.add(new_topic.name)
                log.info("created topic %s (%d partitions)", new_topic.name, new_topic.num_partitions)
            except TopicAlreadyExistsError:
                # Another `icu topics create` won the race: that is the desired end state.
                log.info("topic %s already exists", new_topic.name)
            except KafkaError as exc:
                raise TopicAdminError(f"could not create topic {new_topic.name}: {exc}") from exc
        partitions = _partition_counts(admin, [t.name for t in planned])
    finally:
        admin.close()
    reports = [TopicReport(t.name, partitions.get(t.name, 0), t.name in created) for t in planned]
    for report, new_topic in zip(reports, planned, strict=True):
        if report.partitions != new_topic.num_partitions:
            log.warning(
                "topic %s has %d partitions but this deployment expects %d (ICU_TOPIC_PARTITIONS); "
                "bed-keyed joins need equal counts",
                report.name,
                report.partitions,
                new_topic.num_partitions,
            )
    return reports


def list_topics(settings: TopicsAdminSettings, *, all_topics: bool = False) -> dict[str, int]:
    """Topic name -> partition count, for this deployment's prefix (or every topic)."""
    admin = _admin(settings)
    try:
        names = sorted(admin.list_topics())
        if not all_topics:
            names = [n for n in names if n.startswith(settings.topic_prefix + ".")]
        return _partition_counts(admin, names)
    finally:
        admin.close()


def require_topics(settings: TopicsAdminSettings, topics: Iterable[Topic]) -> None:
    """Refuse to go on when a topic a service writes to is missing (a broker would auto-create it wrongly)."""
    existing = list_topics(settings)
    missing = [t.full_name(settings.topic_prefix) for t in topics if t.full_name(settings.topic_prefix) not in existing]
    if missing:
        raise TopicAdminError(f"topics {', '.join(missing)} do not exist; run `icu topics create` (or `icu up`) first")


def _admin(settings: KafkaSettings) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**settings.kafka_client_config())
    except KafkaError as exc:
        raise TopicAdminError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} (ICU_KAFKA_BOOTSTRAP_SERVERS): {exc}"
        ) from exc


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    described = admin.describe_topics(names)
    return {entry["name"]: len(entry["partitions"]) for entry in described if entry.get("error_code", 0) == 0}
