"""`icu replay`: republish a recording into Kafka under another topic prefix.

Records are read lazily and merged by event time (:class:`research.store.Recording`), so a
recording of any length replays in bounded memory; each file's order is kept, so each bed's
order per topic is the recorded one. Pacing keeps the original relative timing: a record
``t`` seconds into the recording goes out ``t / speed`` seconds after the replay started
(``speed`` None: as fast as Kafka takes them, the producer's bounded buffer pushing back).

Times: by default every timestamp of every record (``ts``, ``window_end``, ``inferred_at``,
frame capture times...) is moved by the same whole number of seconds, so the recording starts
at the replay's start: services that compare event time with the wall clock (staleness,
ticks) behave as they did live. ``keep_times`` republishes the original times instead.

With ``capture`` the replay also records the alerts the pipeline raises on the replay prefix
(a group-less consumer started before the first record goes out) into a recording whose
manifest says which recording was replayed and by how much its times were moved, which is
what ``icu eval alerts --replay`` needs. Capturing ends ``settle_s`` after the last alert once
everything is published.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from icu.contracts import Frame, Topic, encode, kafka_key
from icu.kafka import GracefulStop, close_producer, create_producer
from infra.settings import TopicsAdminSettings
from research import ResearchError
from research.manifest import Manifest, ReplayInfo
from research.record import open_consumer
from research.store import Position, Recording, RecordingWriter, shifted

log = logging.getLogger(__name__)

REPLAYED_BY_DEFAULT: tuple[Topic, ...] = (
    Topic.FRAMES,
    Topic.VITALS,
    Topic.DETECTIONS,
    Topic.EVIDENCE,
    Topic.CAMERA_STATUS,
    Topic.ALERT_ACKS,
)
"""A recording's inputs; never its alerts (the pipeline under test raises its own)."""


def parse_speed(value: str) -> float | None:
    """'1', '10', '2.5' -> that factor; 'max' -> None (unpaced)."""
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ResearchError(f"--speed must be a positive number or 'max', got {value!r}") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ResearchError(f"--speed must be a positive number or 'max', got {value!r}")
    return speed


def replay_shift(start: datetime, now: datetime) -> timedelta:
    """Whole seconds that move ``start`` to at most ``now`` (whole, so second and minute
    boundaries of the original fall where they fell)."""
    return timedelta(seconds=math.floor((now - start).total_seconds()))


@dataclass
class ReplayResult:
    published: dict[str, int] = field(default_factory=dict)
    publish_s: float = 0.0
    shift_s: float = 0.0
    capture: Manifest | None = None

    def records(self) -> int:
        return sum(self.published.values())


class _Capture:
    """Records ``<prefix>.alerts`` in a thread until told publishing is done and it settles."""

    def __init__(self, settings: TopicsAdminSettings, out: Path, recording: Recording, settle_s: float) -> None:
        self.writer = RecordingWriter(out, source={"kind": "replay-capture", "topic_prefix": settings.topic_prefix},
                                      beds=recording.manifest.bed_ids())  # fmt: skip
        self.consumer, self.names = open_consumer(settings, [Topic.ALERTS], start="earliest")
        self.settle_s = settle_s
        self.done = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="replay-capture", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = time.monotonic()  # the newest alert, or the end of publishing if later
        try:
            while not (self.done.is_set() and time.monotonic() - last >= self.settle_s):
                polled = self.consumer.poll(timeout_ms=200)
                for records in polled.values():
                    for r in records:
                        position = Position(partition=r.partition, offset=r.offset, timestamp_ms=r.timestamp)
                        self.writer.add_record(Topic.ALERTS, key=r.key, value=r.value, position=position)
                if polled or not self.done.is_set():
                    last = time.monotonic()
        except BaseException as exc:  # reported by finish()
            self.failed = exc
        finally:
            self.consumer.close()

    def finish(self, info: ReplayInfo) -> Manifest:
        self.done.set()
        self.thread.join()
        self.writer.set_replay(info)
        manifest = self.writer.close()
        if self.failed is not None:
            raise ResearchError(f"capturing the replay's alerts failed: {self.failed}") from self.failed
        return manifest


def replay(
    recording: Recording,
    settings: TopicsAdminSettings,
    *,
    speed: float | None,
    topics: Iterable[Topic] = REPLAYED_BY_DEFAULT,
    keep_times: bool = False,
    capture: Path | None = None,
    settle_s: float = 15.0,
    stop: GracefulStop | None = None,
) -> ReplayResult:
    """Republish ``recording``'s ``topics`` on ``settings.topic_prefix`` (see the module doc)."""
    manifest = recording.manifest
    if manifest.source.get("topic_prefix") == settings.topic_prefix and manifest.source.get("kind") == "kafka":
        raise ResearchError(f"the recording came from prefix {settings.topic_prefix!r}: replay it under another "
                            "--topic-prefix so it never mixes with live data")  # fmt: skip
    stop = stop or GracefulStop()
    result = ReplayResult()
    if manifest.start is None:
        return result  # an empty recording
    started_at = datetime.now(UTC)
    shift = timedelta(0) if keep_times else replay_shift(manifest.start, started_at)
    result.shift_s = shift.total_seconds()
    wanted = [t for t in topics if t in recording.topics()]
    capturer = _Capture(settings, capture, recording, settle_s) if capture is not None else None
    producer = create_producer(settings, linger_ms=20 if speed is None else 5)
    t0 = manifest.start.timestamp()
    began = time.monotonic()
    try:
        for event in recording.iter_events(wanted):
            if stop.is_set():
                break
            if speed is not None:
                delay = began + (event.t - t0) / speed - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
            message = shifted(event.message, shift)
            name = event.topic.full_name(settings.topic_prefix)
            if isinstance(message, Frame):
                producer.send(name, key=message.key(), value=message.jpeg, headers=message.kafka_headers())
            else:
                producer.send(name, key=kafka_key(message), value=encode(message))
            result.published[event.topic.value] = result.published.get(event.topic.value, 0) + 1
        producer.flush()
    finally:
        close_producer(producer, 30)
    result.publish_s = time.monotonic() - began
    log.info("replayed %d records in %.1f s onto %s.*", result.records(), result.publish_s, settings.topic_prefix)
    if capturer is not None:
        info = ReplayInfo(source_id=manifest.id, topic_prefix=settings.topic_prefix,
                          speed="max" if speed is None else f"{speed:g}", shift_s=result.shift_s,
                          started_at=started_at, published=result.published,
                          publish_s=round(result.publish_s, 3))  # fmt: skip
        result.capture = capturer.finish(info)
    return result
