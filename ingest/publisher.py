"""Takes encoded frames from every camera's latest-frame slot to Kafka, and reports camera health.

One publisher thread serves all the cameras of a process. Each camera may have at most
``max_in_flight`` frames sent but not yet acknowledged by the broker; while it is at the cap its
slot is left alone, so newer frames replace older ones there (counted as drops) instead of piling
up in the producer. With the broker slow or down the memory held is therefore at most one frame
in each slot plus ``max_in_flight`` per camera, and frames the broker never acknowledges within
the delivery timeout are counted as dropped too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka.errors import KafkaError

from icu.contracts import CameraStatus, Frame, encode
from icu.kafka import Producer
from ingest.camera import CameraFeed

log = logging.getLogger(__name__)


@dataclass
class PublisherStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    frames_acked: int = 0
    frames_failed: int = 0
    statuses_sent: int = 0
    # Capture-to-broker-ack latency of recent frames, seconds (bounded reservoir).
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))


class FramePublisher:
    """Publishes frames (keyed by bed, with the contract's headers) and periodic camera status."""

    def __init__(
        self,
        producer: Producer,
        *,
        frames_topic: str,
        status_topic: str,
        status_interval_s: float = 5.0,
        max_in_flight: int = 4,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.producer = producer
        self.frames_topic = frames_topic
        self.status_topic = status_topic
        self.status_interval_s = status_interval_s
        self.max_in_flight = max_in_flight
        self.drain_timeout_s = drain_timeout_s
        self.stats = PublisherStats()
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._feeds: dict[str, CameraFeed] = {}
        self._in_flight: dict[str, int] = {}
        self._retired: list[CameraFeed] = []
        self._last_error_log = 0.0
        self.heartbeat: Callable[[], None] | None = None
        """Called every round of the publishing loop (at least every 0.1 s): it is alive."""

    # --- the camera registry --------------------------------------------------------------

    def add(self, feed: CameraFeed) -> None:
        """Start publishing ``feed``; ValueError if a camera with its id is already running."""
        with self._lock:
            if feed.camera_id in self._feeds:
                raise ValueError(f"camera {feed.camera_id} (bed {feed.bed_id}) is already running in this process")
            self._feeds[feed.camera_id] = feed
            self._in_flight.setdefault(feed.camera_id, 0)
        feed.slot.notify = self.wake

    def remove(self, feed: CameraFeed) -> None:
        """Stop publishing ``feed``; its final status still goes out on the next status round."""
        with self._lock:
            if self._feeds.get(feed.camera_id) is feed:
                del self._feeds[feed.camera_id]
                self._retired.append(feed)

    def feeds(self) -> list[CameraFeed]:
        with self._lock:
            return list(self._feeds.values())

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set, then send a last status per camera and flush."""
        next_status = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_status:
                    self.publish_statuses()
                    next_status = now + self.status_interval_s
                self.wake.wait(timeout=min(0.1, max(0.0, next_status - time.monotonic())))
                self.wake.clear()
                self.publish_ready()
                if self.heartbeat is not None:
                    self.heartbeat()
        finally:
            # Drain: acknowledgements free in-flight places, then what waits in the slots goes,
            # with a final status per camera. With the broker down this gives up after the
            # flush timeouts; what is still in flight is counted as dropped by the errbacks.
            self._flush("before the final frames")
            self.publish_ready()
            self.publish_statuses()
            self._flush("of the final frames and statuses")

    def _flush(self, what: str) -> None:
        try:
            self.producer.flush(timeout=self.drain_timeout_s)
        except KafkaError as exc:
            log.warning(
                "Kafka did not take everything %s within %.0f s (%s); stopping anyway", what, self.drain_timeout_s, exc
            )

    def publish_ready(self) -> int:
        """Send every waiting frame whose camera is under its in-flight cap; returns how many."""
        sent = 0
        for feed in self.feeds():
            with self._lock:
                if self._in_flight.get(feed.camera_id, 0) >= self.max_in_flight:
                    continue
            taken = feed.slot.take()
            if taken is None:
                continue
            self._send_frame(feed, taken[0])
            sent += 1
        return sent

    def _send_frame(self, feed: CameraFeed, frame: Frame) -> None:
        with self._lock:
            self._in_flight[feed.camera_id] = self._in_flight.get(feed.camera_id, 0) + 1
        capture = frame.header.capture_ts.timestamp()
        try:
            future = self.producer.send(
                self.frames_topic, key=frame.key(), value=frame.jpeg, headers=frame.kafka_headers()
            )
        except KafkaError as exc:
            self._failed(feed, exc)
            return
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(frame.jpeg)
        future.add_callback(self._acked, feed, capture)
        future.add_errback(self._errored, feed)

    def _acked(self, feed: CameraFeed, capture: float, _metadata: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self.stats.latencies_s.append(time.time() - capture)
            self.stats.frames_acked += 1
            self._in_flight[feed.camera_id] -= 1
        feed.note_published(now)
        self.wake.set()

    def _errored(self, feed: CameraFeed, exc: BaseException) -> None:
        self._failed(feed, exc)
        self.wake.set()

    def _failed(self, feed: CameraFeed, exc: BaseException) -> None:
        # Called from this thread (send raised) and from kafka-python's sender thread (errback).
        feed.slot.count_dropped()
        with self._lock:
            self.stats.frames_failed += 1
            self._in_flight[feed.camera_id] -= 1
        now = time.monotonic()
        if now - self._last_error_log > 10:
            # Once per 10 s, not once per frame: a broker outage at 300 frames/s would
            # otherwise bury every other line in the log.
            self._last_error_log = now
            log.warning(
                "frames are not reaching Kafka (%s: %s); dropping them and counting drops per camera",
                type(exc).__name__,
                exc,
            )

    def publish_statuses(self) -> list[CameraStatus]:
        ts = datetime.now(UTC)
        with self._lock:
            feeds = list(self._feeds.values()) + self._retired
            self._retired = []
        statuses = [feed.status(ts) for feed in feeds]
        for status in statuses:
            try:
                self.producer.send(self.status_topic, key=status.key(), value=encode(status))
                self.stats.statuses_sent += 1
            except KafkaError as exc:
                log.warning("camera status for %s not sent: %s", status.camera_id, exc)
        return statuses
