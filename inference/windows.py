"""Per-bed frame buffers for the inference worker: ordered, gap-aware, bounded, evictable.

Frames arrive from Kafka in per-bed order most of the time, but not always (a camera's clock
jumps, a producer retries, a rebalance replays a little). Each bed keeps the last few seconds of
frames on a regular grid at the model's frame rate:

- a frame older than the newest is inserted in capture order if it is still inside the buffer,
  dropped (and counted) otherwise; a repeated capture time is a duplicate and ignored;
- a short gap (up to ``max_fill_s``) is filled by repeating the last frame, and the windows that
  contain filled frames are marked **degraded** (the detections say so rather than pretend);
- a longer gap starts the bed's buffer afresh (old context would be misleading);
- a bed that sends nothing for ``silence_s`` is evicted with its buffer (memory stays bounded by
  the beds actually streaming, and by ``capacity`` frames each).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True, slots=True)
class BufferedFrame:
    capture_s: float  # capture time, POSIX seconds
    seq: int
    data: np.ndarray  # what the worker keeps per frame (its model vector and baseline features)
    filled: bool = False  # a repeat standing in for a missing frame


@dataclass(frozen=True, slots=True)
class Window:
    bed_id: str
    data: np.ndarray  # (frames, ...) the frames' data, oldest first
    capture_s: tuple[float, ...]  # each frame's capture time, POSIX seconds
    seq: tuple[int, ...]  # each frame's sequence number (a filled-in frame repeats its source's)
    degraded: bool  # some frames were filled in for missing ones

    @property
    def last_capture_s(self) -> float:
        return self.capture_s[-1]

    @property
    def last_seq(self) -> int:
        return self.seq[-1]


@dataclass
class BufferStats:
    added: int = 0
    duplicates: int = 0
    too_late: int = 0
    filled: int = 0
    resets: int = 0


class BedBuffer:
    """The last ``capacity`` frames of one bed on a regular grid of ``1/fps`` seconds."""

    def __init__(self, *, fps: float, capacity: int, max_fill_s: float = 1.0) -> None:
        self.interval = 1.0 / fps
        self.capacity = capacity
        self.max_fill_s = max_fill_s
        self.frames: deque[BufferedFrame] = deque(maxlen=capacity)
        self.stats = BufferStats()
        self.last_arrival = 0.0

    def add(self, capture_ts: datetime, seq: int, data: np.ndarray, *, arrival: float) -> None:
        capture = capture_ts.timestamp()
        self.last_arrival = arrival
        if self.frames:
            newest = self.frames[-1].capture_s
            if capture <= newest:
                self._insert_late(BufferedFrame(capture, seq, data))
                return
            gap = capture - newest
            if gap > self.max_fill_s + self.interval / 2:
                self.frames.clear()  # too long a gap: the old context would mislead the model
                self.stats.resets += 1
            else:
                missing = round(gap / self.interval) - 1
                last = self.frames[-1]
                for k in range(1, missing + 1):
                    self.frames.append(BufferedFrame(newest + k * self.interval, last.seq, last.data, filled=True))
                self.stats.filled += max(0, missing)
        self.frames.append(BufferedFrame(capture, seq, data))
        self.stats.added += 1

    def _insert_late(self, frame: BufferedFrame) -> None:
        times = [f.capture_s for f in self.frames]
        index = bisect.bisect_left(times, frame.capture_s)
        # The grid slot may sit just either side of the exact time (float sums of the interval).
        near = [
            i for i in (index - 1, index) if 0 <= i < len(times) and abs(times[i] - frame.capture_s) < self.interval / 2
        ]
        if near:
            index = near[0]
            existing = self.frames[index]
            if existing.filled:  # the real frame arrived after its stand-in: replace it
                self.frames[index] = frame
                self.stats.added += 1
            else:
                self.stats.duplicates += 1
            return
        if len(self.frames) == self.capacity:
            if index == 0:
                self.stats.too_late += 1  # older than everything kept
                return
            self.frames.popleft()  # make room (deque.insert refuses a full deque)
            index -= 1
        self.frames.insert(index, frame)
        self.stats.added += 1

    def window(self, bed_id: str, length: int) -> Window | None:
        """The newest ``length`` frames, or None until that many are buffered."""
        if len(self.frames) < length:
            return None
        recent = list(self.frames)[-length:]
        return Window(
            bed_id=bed_id,
            data=np.stack([f.data for f in recent]),
            capture_s=tuple(f.capture_s for f in recent),
            seq=tuple(f.seq for f in recent),
            degraded=any(f.filled for f in recent),
        )


@dataclass
class WardBuffers:
    """Every streaming bed's buffer; silent beds are evicted."""

    fps: float
    capacity: int
    silence_s: float = 30.0
    max_fill_s: float = 1.0
    beds: dict[str, BedBuffer] = field(default_factory=dict)
    evicted: int = 0

    def add(self, bed_id: str, capture_ts: datetime, seq: int, data: np.ndarray, *, arrival: float) -> BedBuffer:
        buffer = self.beds.get(bed_id)
        if buffer is None:
            buffer = self.beds[bed_id] = BedBuffer(fps=self.fps, capacity=self.capacity, max_fill_s=self.max_fill_s)
        buffer.add(capture_ts, seq, data, arrival=arrival)
        return buffer

    def evict_silent(self, now: float) -> list[str]:
        """Drop the buffers of beds silent for ``silence_s``; returns their ids."""
        gone = [bed for bed, buffer in self.beds.items() if now - buffer.last_arrival >= self.silence_s]
        for bed in gone:
            del self.beds[bed]
        self.evicted += len(gone)
        return gone
