"""The worker's per-bed buffers: order, gaps, duplicates, bounds and eviction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from inference.windows import BedBuffer, WardBuffers

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def at(k: int, fps: float = 10.0) -> datetime:
    return T0 + timedelta(seconds=k / fps)


def test_in_order_frames_make_clean_windows_of_the_newest() -> None:
    buffer = BedBuffer(fps=10, capacity=8)
    for k in range(12):
        buffer.add(at(k), k, image(k), arrival=k)
    window = buffer.window("b1", 5)
    assert window is not None
    assert window.data[:, 0, 0, 0].tolist() == [7, 8, 9, 10, 11]
    assert window.last_seq == 11
    assert not window.degraded
    assert len(buffer.frames) == 8  # bounded by capacity
    assert buffer.window("b1", 9) is None  # not enough frames yet for that length


def test_a_short_gap_is_filled_and_the_window_marked_degraded() -> None:
    buffer = BedBuffer(fps=10, capacity=20, max_fill_s=1.0)
    for k in (0, 1, 2, 5, 6):  # frames 3 and 4 missing
        buffer.add(at(k), k, image(k), arrival=k)
    window = buffer.window("b1", 7)
    assert window is not None
    assert window.data[:, 0, 0, 0].tolist() == [0, 1, 2, 2, 2, 5, 6]
    assert window.degraded
    assert buffer.stats.filled == 2
    # The real frame 3 arrives late: it replaces its stand-in.
    buffer.add(at(3), 3, image(3), arrival=7)
    window = buffer.window("b1", 7)
    assert window is not None
    assert window.data[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 2, 5, 6]


def test_a_long_gap_starts_afresh() -> None:
    buffer = BedBuffer(fps=10, capacity=20, max_fill_s=1.0)
    for k in range(5):
        buffer.add(at(k), k, image(k), arrival=k)
    buffer.add(at(50), 50, image(50), arrival=50)  # 4.5 s later
    assert [f.seq for f in buffer.frames] == [50]
    assert buffer.stats.resets == 1


def test_late_duplicate_and_too_old_frames() -> None:
    buffer = BedBuffer(fps=10, capacity=4)
    for k in (0, 1, 2, 3, 4, 5):
        buffer.add(at(k), k, image(k), arrival=k)
    buffer.add(at(4), 4, image(99), arrival=6)  # a retry of frame 4
    assert buffer.stats.duplicates == 1
    assert [f.seq for f in buffer.frames] == [2, 3, 4, 5]
    buffer.add(at(0), 0, image(0), arrival=7)  # older than anything kept
    assert buffer.stats.too_late == 1
    assert [f.seq for f in buffer.frames] == [2, 3, 4, 5]


def test_silent_beds_are_evicted() -> None:
    ward = WardBuffers(fps=10, capacity=10, silence_s=30)
    ward.add("b1", at(0), 0, image(0), arrival=100.0)
    ward.add("b2", at(0), 0, image(0), arrival=125.0)
    assert ward.evict_silent(129.0) == []
    assert ward.evict_silent(131.0) == ["b1"]
    assert set(ward.beds) == {"b2"}
    assert ward.evicted == 1


def test_a_late_frame_into_a_full_buffer_goes_in_order() -> None:
    buffer = BedBuffer(fps=10, capacity=4, max_fill_s=1.0)
    for k in (0, 1, 3, 4):  # 2 missing, but the gap is one frame: filled
        buffer.add(at(k), k, image(k), arrival=k)
    assert [(f.seq, f.filled) for f in buffer.frames] == [(1, False), (1, True), (3, False), (4, False)]
    buffer.add(at(2), 2, image(2), arrival=5)
    assert [(f.seq, f.filled) for f in buffer.frames] == [(1, False), (2, False), (3, False), (4, False)]
    # A jittered late frame lands in an occupied slot: a duplicate, nothing moves.
    buffer.add(at(0) + timedelta(seconds=0.23), 99, image(9), arrival=6)
    assert [f.seq for f in buffer.frames] == [1, 2, 3, 4]
    assert buffer.stats.duplicates == 1
