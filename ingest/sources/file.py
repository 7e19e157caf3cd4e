"""Video files as cameras: any FFmpeg-readable file, or a directory in the clip dataset format.

Frames are paced by their presentation timestamps at ``speed`` times real time, optionally looping;
paced playback behaves like a live camera (latest-frame-wins). Unpaced (``speed=None``) playback
goes as fast as decoding and Kafka allow and waits for the publisher rather than drop frames.
Capture times follow the file's own clock from the moment playback started, so at ``speed`` 1 they
are wall-clock times and at higher speeds they run ahead, like the simulator's accelerated time.
Damaged packets are skipped, counted and logged; a file that cannot be opened at all is a
:class:`SourceError` naming the file and FFmpeg's reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import av
import av.error

from ingest.camera import CameraFeed, SourceKind
from ingest.sources import SourceError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v")


def playlist(path: Path) -> list[Path]:
    """The files to play: ``path`` itself, or a clip directory's videos in name order."""
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
        if not videos:
            raise SourceError(f"{path}: no video files in this directory (expected the clip dataset format)")
        return videos
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    return [path]


def probe(path: Path) -> None:
    """Open ``path`` and decode its first frame, or raise :class:`SourceError` saying why not."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"{path}: has no video stream")
            for _frame in container.decode(video=0):
                return
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: not a readable video ({exc.strerror or exc})") from None
    raise SourceError(f"{path}: contains no decodable video frame")


class FileSource:
    """Plays a file or clip directory into a camera feed."""

    kind: ClassVar[SourceKind] = "file"

    def __init__(self, path: Path, *, speed: float | None = 1.0, loop: bool = False) -> None:
        if speed is not None and speed <= 0:
            raise SourceError("speed must be positive (or None for as fast as possible)")
        self.path = path
        self.files = playlist(path)
        for file in self.files:
            probe(file)
        self.speed = speed
        self.loop = loop
        self.decode_errors = 0

    def describe(self) -> str:
        pace = "max speed" if self.speed is None else f"{self.speed:g}x"
        return f"file {self.path} ({len(self.files)} file(s), {pace}{', looping' if self.loop else ''})"

    def run(self, feed: CameraFeed, stop: threading.Event) -> None:
        """Play until the end (or forever when looping) or until ``stop`` is set."""
        started_wall = datetime.now(UTC)
        started = time.monotonic()
        position_s = 0.0  # stream time played so far, across files and loops
        try:
            while not stop.is_set():
                for file in self.files:
                    for pts_s in self._frames(file, feed, stop, started_wall, position_s, started):
                        position_s = pts_s
                    if stop.is_set():
                        return
                    position_s += 1e-3
                if not self.loop:
                    feed.mark_stopped("end of file")
                    return
        except SourceError as exc:
            feed.mark_lost(str(exc))
            raise
        finally:
            if stop.is_set():
                feed.mark_stopped("ingest stopped")

    def _frames(
        self,
        file: Path,
        feed: CameraFeed,
        stop: threading.Event,
        started_wall: datetime,
        offset_s: float,
        started: float,
    ) -> Iterator[float]:
        try:
            container = av.open(str(file))
        except av.error.FFmpegError as exc:
            raise SourceError(f"{file}: not a readable video ({exc.strerror or exc})") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_count = 1  # many cameras per process: one core's worth each at most
            first_pts: float | None = None
            last = 0.0
            for packet in container.demux(stream):
                if stop.is_set():
                    return
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    self.decode_errors += 1
                    if self.decode_errors in (1, 100, 10_000):  # log the first, then milestones
                        log.warning(
                            "camera %s: %s: damaged packet skipped (%d so far)",
                            feed.camera_id,
                            file,
                            self.decode_errors,
                        )
                    continue
                for frame in frames:
                    pts = frame.time if frame.time is not None else last
                    if first_pts is None:
                        first_pts = pts
                    position = offset_s + (pts - first_pts)
                    last = pts
                    if self.speed is not None:
                        due = started + position / self.speed
                        delay = due - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    # Unpaced, the file is not live video: wait for the publisher, lose nothing.
                    feed.offer(
                        frame, started_wall + timedelta(seconds=position), wait_for=stop if self.speed is None else None
                    )
                    yield position
