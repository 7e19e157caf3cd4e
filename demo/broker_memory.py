"""Keeps the embedded broker's memory bounded over a long demo.

Tansu (the embedded broker) ignores retention and keeps every record in RAM, so a demo ward's
camera frames would grow it without end (measured: ~2.5 GiB/hour for 8 beds at 10 fps, 160x120).
Deleting a topic does free its records (measured: 290 MiB back to 18 MiB), so when the broker's resident
memory passes a cap the guard deletes ``<prefix>.frames`` and creates it again at once, with its
planned partitions. Frames are live-only in the demo (nothing replays them), so this is what
retention would do on real Kafka, in one step. Neither frames client survives the topic being
re-created on the embedded broker (the idempotent producer gets a fatal error for its sequence
numbers; the consumer keeps positions past the new end, never answered with "offset out of
range"), so the supervisor stops the camera ingest and the inference worker, rotates, and starts
them again (:meth:`demo.supervisor.Demo._rotate_frames`). The other topics are small and kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, UnknownTopicOrPartitionError

from demo import DemoError
from icu.contracts import Topic
from infra.settings import TopicsAdminSettings
from infra.topics import planned_topics

log = logging.getLogger(__name__)


def rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def find_child(parent_pid: int, name: str) -> int | None:
    """A direct child of ``parent_pid`` whose command name is ``name`` (Linux /proc)."""
    try:
        children = Path(f"/proc/{parent_pid}/task/{parent_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == name:
                return int(child)
        except OSError:
            continue
    return None


def should_rotate(rss: float | None, cap_mib: float) -> bool:
    """Rotate the frames topic once the broker holds ``cap_mib`` MiB or more."""
    return rss is not None and rss >= cap_mib


@dataclass
class GuardStats:
    rotations: int = 0
    last_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    freed_mib: float = 0.0


class BrokerMemoryGuard:
    """Watches the broker process ``pid``; rotates ``<prefix>.frames`` once past ``cap_mib``."""

    def __init__(self, settings: TopicsAdminSettings, pid: int, cap_mib: float) -> None:
        self.settings = settings
        self.pid = pid
        self.cap_mib = cap_mib
        self.stats = GuardStats()
        self.frames_topic = Topic.FRAMES.full_name(settings.topic_prefix)

    def measure(self) -> float | None:
        """The broker's RSS now (MiB), None if it is gone."""
        rss = rss_mib(self.pid)
        if rss is not None:
            self.stats.last_rss_mib = rss
            self.stats.peak_rss_mib = max(self.stats.peak_rss_mib, rss)
        return rss

    def due(self) -> bool:
        """The last measurement reached the cap: rotate (with the frames consumers stopped)."""
        return should_rotate(self.stats.last_rss_mib, self.cap_mib)

    def rotate(self) -> float:
        """Rotate the frames topic; the RSS after it (MiB)."""
        before = self.stats.last_rss_mib
        self.rotate_frames()
        after = self.measure() or before
        self.stats.freed_mib += max(0.0, before - after)
        log.info("broker at %.0f MiB (cap %.0f): rotated %s, now %.0f MiB", before, self.cap_mib,
                 self.frames_topic, after)  # fmt: skip
        return after

    def rotate_frames(self) -> None:
        """Delete the frames topic and create it again with its planned partitions and config."""
        (planned,) = [t for t in planned_topics(self.settings) if t.name == self.frames_topic]
        admin = KafkaAdminClient(**self.settings.kafka_client_config())
        try:
            for _attempt in range(3):
                with contextlib.suppress(UnknownTopicOrPartitionError):
                    admin.delete_topics([self.frames_topic])
                # A producer's metadata request may auto-create the topic between the two calls
                # (with the broker's default partitions): then delete it again.
                deadline = time.monotonic() + 5
                while self.frames_topic in admin.list_topics() and time.monotonic() < deadline:
                    time.sleep(0.05)
                try:
                    admin.create_topics([planned])
                except KafkaError as exc:
                    log.info("re-creating %s: %s", self.frames_topic, exc)
                described = admin.describe_topics([self.frames_topic])
                partitions = len(described[0].get("partitions", [])) if described else 0
                if partitions == planned.num_partitions:
                    self.stats.rotations += 1
                    return
            raise DemoError(f"could not re-create {self.frames_topic} with {planned.num_partitions} partitions")
        finally:
            admin.close()
