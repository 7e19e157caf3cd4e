"""RTSP cameras, pulled with PyAV (FFmpeg), TCP transport by default.

The source never gives up on its own: a camera that reboots, drops off the network or answers
404/401 is retried with exponential backoff and jitter (so a ward of cameras coming back after a
switch reboot does not reconnect in lockstep), and each failure is visible in the camera's
status (stalled, then lost, with the reason). A stream that stops delivering frames for
``stall_timeout_s`` is abandoned and reopened. Credentials in the URL never reach a log line or
a status message.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import ClassVar, Literal

import av
import av.error

from ingest.camera import CameraFeed, SourceKind, StreamClock
from ingest.sources import SourceError, redact_text, redact_url

log = logging.getLogger(__name__)


def describe_error(exc: BaseException, url: str) -> str:
    """One line for an operator: what FFmpeg said, with hints for the common cases, no secrets."""
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return "camera refused the credentials (RTSP 401/403): check the user and password in the URL"
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "camera has no such stream (RTSP 404): check the path in the URL"
    if isinstance(exc, av.error.ExitError | av.error.TimeoutError):
        return "no data from the camera within the timeout"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return "connection refused: camera or RTSP server down"
    if isinstance(exc, av.error.FFmpegError):
        return redact_text(f"{type(exc).__name__}: {exc.strerror or exc}", url)
    return redact_text(f"{type(exc).__name__}: {exc}", url)


class Backoff:
    """Exponential backoff with 'equal jitter': half the delay fixed, half random."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class RtspSource:
    """Pulls one RTSP URL into a camera feed until stopped, reconnecting as needed."""

    kind: ClassVar[SourceKind] = "rtsp"

    def __init__(
        self,
        url: str,
        *,
        transport: Literal["tcp", "udp"] = "tcp",
        open_timeout_s: float = 10.0,
        stall_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if not url.lower().startswith(("rtsp://", "rtsps://")):
            raise SourceError(f"not an RTSP URL: {redact_url(url)} (expected rtsp://host[:port]/path)")
        self.url = url
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.backoff = Backoff(backoff_initial_s, backoff_max_s, rng)
        self.sessions = 0
        self._delivered = False

    def describe(self) -> str:
        return f"rtsp {redact_url(self.url)} ({self.transport})"

    def run(self, feed: CameraFeed, stop: threading.Event) -> None:
        safe_url = redact_url(self.url)
        failing_since: float | None = None
        feed.mark_connecting(f"connecting to {safe_url}")
        while not stop.is_set():
            self._delivered = False
            try:
                self._session(feed, stop)
                reason = "stream ended"
            except (av.error.FFmpegError, OSError, SourceError) as exc:
                reason = describe_error(exc, self.url)
            if stop.is_set():
                break
            now = time.monotonic()
            # A session that delivered anything (even one that then timed out) starts a new
            # outage: stalled first, lost only after lost_after_s, and the backoff starts over.
            if self._delivered or failing_since is None:
                failing_since = now
            if self._delivered:
                self.backoff.reset()
            lost = now - failing_since >= feed.config.lost_after_s
            delay = self.backoff.next_delay()
            feed.note_failure(f"{reason}; retrying in {delay:.1f} s", lost=lost)
            log.warning("camera %s (%s): %s; reconnecting in %.1f s", feed.camera_id, safe_url, reason, delay)
            stop.wait(delay)
        feed.mark_stopped("ingest stopped")

    def _session(self, feed: CameraFeed, stop: threading.Event) -> None:
        """One connection: decode until the stream ends, stalls or fails (``_delivered`` says
        whether any frame arrived, also when it then raised)."""
        clock = StreamClock()
        options: dict[str, str] = {"rtsp_transport": self.transport}
        with av.open(self.url, options=options, timeout=(self.open_timeout_s, self.stall_timeout_s)) as container:
            if not container.streams.video:
                raise SourceError("the RTSP stream has no video track")
            stream = container.streams.video[0]
            stream.thread_count = 1
            self.sessions += 1
            log.info("camera %s connected to %s", feed.camera_id, redact_url(self.url))
            for packet in container.demux(stream):
                if stop.is_set():
                    break
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet (UDP loss, keyframe not yet seen): skip it
                for frame in frames:
                    feed.offer(frame, clock.capture_ts(frame.time, datetime.now(UTC)))
                    self._delivered = True
