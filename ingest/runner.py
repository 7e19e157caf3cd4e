"""Runs many cameras in one process: a thread per source, one publisher for all of them.

A camera whose source fails is reported lost and logged; it never takes the others down.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import cv2

from icu.contracts import Topic
from icu.kafka import Producer, RenewingProducer, create_renewing_producer
from ingest.camera import CameraFeed, CameraState, SourceKind
from ingest.publisher import FramePublisher
from ingest.settings import IngestSettings
from ingest.sources import SourceError

if TYPE_CHECKING:
    from infra.observability import Observability, Samples

log = logging.getLogger(__name__)


class Source(Protocol):
    @property
    def kind(self) -> SourceKind: ...

    def describe(self) -> str: ...
    def run(self, feed: CameraFeed, stop: threading.Event) -> None: ...


def create_frame_producer(settings: IngestSettings) -> RenewingProducer:
    """A producer tuned for frames: bounded blocking and a short delivery timeout, since a frame
    Kafka cannot take within seconds is stale anyway (and counted as dropped). Renewed after a
    fatal error (a broker that lost its state), so frames flow again once Kafka is back."""
    return create_renewing_producer(
        settings,
        name="camera ingest",
        linger_ms=settings.ingest_linger_ms,
        # Room for many ~10-30 kB frames per request; the 16 kB default sends one frame per request.
        batch_size=512 * 1024,
        max_block_ms=1_000,
        delivery_timeout_ms=settings.ingest_delivery_timeout_ms,
        request_timeout_ms=min(settings.kafka_request_timeout_ms, settings.ingest_delivery_timeout_ms - 100),
    )


@dataclass
class Camera:
    feed: CameraFeed
    source: Source
    thread: threading.Thread
    error: str | None = None


class IngestRunner:
    """Owns the publisher thread and each camera's source thread."""

    def __init__(self, settings: IngestSettings, producer: Producer, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        # Parallelism comes from cameras (one thread each); OpenCV's own pool only adds spinning.
        cv2.setNumThreads(1)
        prefix = settings.topic_prefix
        self.publisher = FramePublisher(
            producer,
            frames_topic=Topic.FRAMES.full_name(prefix),
            status_topic=Topic.CAMERA_STATUS.full_name(prefix),
            status_interval_s=settings.ingest_status_interval_s,
            max_in_flight=settings.ingest_max_in_flight,
            # Past the delivery timeout every frame has either been acknowledged or expired.
            drain_timeout_s=settings.ingest_delivery_timeout_ms / 1000 + 1,
        )
        self.cameras: dict[str, Camera] = {}
        # The publisher stops after the sources, so its final round carries every camera's
        # final state ("stopped") and the last frames.
        self._publisher_stop = threading.Event()
        self._publisher_thread = threading.Thread(
            target=self.publisher.run, args=(self._publisher_stop,), name="frame-publisher", daemon=True
        )

    def start(self) -> IngestRunner:
        self._publisher_thread.start()
        return self

    def new_feed(self, *, bed_id: str, camera_id: str | None, source: SourceKind) -> CameraFeed:
        feed = CameraFeed(
            bed_id=bed_id,
            camera_id=camera_id or f"{bed_id}-cam",
            source=source,
            config=self.settings.feed_config(),
        )
        self.publisher.add(feed)
        return feed

    def add_camera(self, *, bed_id: str, source: Source, camera_id: str | None = None) -> CameraFeed:
        feed = self.new_feed(bed_id=bed_id, camera_id=camera_id, source=source.kind)
        thread = threading.Thread(
            target=self._run_source, args=(feed, source), name=f"camera-{feed.camera_id}", daemon=True
        )
        camera = Camera(feed, source, thread)
        self.cameras[feed.camera_id] = camera
        log.info("camera %s (bed %s): %s", feed.camera_id, bed_id, source.describe())
        thread.start()
        return feed

    def _run_source(self, feed: CameraFeed, source: Source) -> None:
        try:
            source.run(feed, self.stop)
        except SourceError as exc:
            self.cameras[feed.camera_id].error = str(exc)
            feed.mark_lost(str(exc))
            log.error("camera %s (bed %s) stopped: %s", feed.camera_id, feed.bed_id, exc)
        except Exception as exc:
            # A bug in one camera's path must not take the process (and every other bed) down.
            self.cameras[feed.camera_id].error = f"{type(exc).__name__}: {exc}"
            feed.mark_lost(f"internal error: {type(exc).__name__}")
            log.exception("camera %s (bed %s) failed", feed.camera_id, feed.bed_id)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has finished or ``stop`` is set; True if all finished."""
        while not self.stop.is_set():
            alive = [c.thread for c in self.cameras.values() if c.thread.is_alive()]
            if not alive:
                return True
            alive[0].join(timeout=0.2 if timeout is None else min(0.2, timeout))
            if timeout is not None:
                timeout -= 0.2
                if timeout <= 0:
                    return False
        return False

    def close(self) -> None:
        """Stop every source, publish what is waiting plus a final status, flush."""
        self.stop.set()
        for camera in self.cameras.values():
            camera.thread.join(timeout=15)
        self._publisher_stop.set()
        self._publisher_thread.join(timeout=2 * self.publisher.drain_timeout_s + 10)
        for feed in self.publisher.feeds():
            log.info(
                "camera %s (bed %s): %d frames decoded, %d published, %d dropped, %d reconnects",
                feed.camera_id, feed.bed_id, feed.frames_in, feed.frames_out, feed.slot.dropped, feed.reconnects,
            )  # fmt: skip


def observe(observability: Observability, runner: IngestRunner) -> None:
    """Health and Prometheus metrics of a camera ingest process, read from each camera's counters."""
    publisher = runner.publisher
    publisher.heartbeat = observability.health.tick
    labels = ("camera", "bed")

    def per_camera(read: Callable[[CameraFeed], int]) -> Callable[[], Samples]:
        return lambda: [((feed.camera_id, feed.bed_id), float(read(feed))) for feed in publisher.feeds()]

    def states() -> Samples:
        now = datetime.now(UTC)
        counts = Counter(feed.status(now).state.value for feed in publisher.feeds())
        return [((state.value,), float(counts[state.value])) for state in CameraState]

    observability.counter_from("icu_ingest_frames_in", "Frames decoded from the camera.",
                               per_camera(lambda feed: feed.frames_in), labels)  # fmt: skip
    observability.counter_from("icu_ingest_frames_out", "Frames acknowledged by Kafka.",
                               per_camera(lambda feed: feed.frames_out), labels)  # fmt: skip
    observability.counter_from("icu_ingest_frames_dropped", "Frames dropped (latest-frame-wins, or Kafka refused).",
                               per_camera(lambda feed: feed.slot.dropped), labels)  # fmt: skip
    observability.counter_from("icu_ingest_reconnects", "Camera reconnects.",
                               per_camera(lambda feed: feed.reconnects), labels)  # fmt: skip
    observability.gauge_from("icu_ingest_cameras", "Cameras by state.", states, ("state",))
    observability.counter_from("icu_ingest_frames_failed", "Frames Kafka did not take (all cameras).",
                               lambda: [((), float(publisher.stats.frames_failed))])  # fmt: skip
