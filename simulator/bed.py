"""One simulated bed: a scenario's course, its renderer and its monitor, stepped frame by frame."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np

from icu.contracts import Vitals
from simulator.appearance import Split, sample_appearance
from simulator.physiology import BodyState, Course, FrameTruth, VitalsMonitor
from simulator.render import Renderer
from simulator.scenario import Scenario

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "unseen": 3}


class PatientStreams(NamedTuple):
    """Independent random generators for the parts of one simulated patient."""

    appearance: np.random.Generator
    course: np.random.Generator
    monitor: np.random.Generator
    render: np.random.Generator


def seed_streams(seed: int, split: Split, index: int) -> PatientStreams:
    """The generators of patient ``index`` of ``split`` under ``seed``."""
    sequence = np.random.SeedSequence([seed, _SPLIT_CODE[split], index])
    return PatientStreams(*(np.random.default_rng(child) for child in sequence.spawn(4)))


def monitor_readings(scenario: Scenario, *, seed: int, bed_id: str, start: datetime) -> Iterator[Vitals]:
    """A scenario's monitor readings alone: the course is stepped once a second and nothing is drawn."""
    streams = seed_streams(scenario.seed if scenario.seed is not None else seed, "train", 0)
    course = Course(scenario, streams.course)
    monitor = VitalsMonitor(course, streams.monitor, bed_id=bed_id, start=start)
    for second in range(round(scenario.duration_s)):
        _, truth = course.step(second, second + 1)
        yield from monitor.readings_until(second, truth.resp_rate_bpm)


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One rendered frame with its exposure time (seconds from the start) and ground truth."""

    index: int
    t: float
    image: np.ndarray
    state: BodyState
    truth: FrameTruth


class BedSimulation:
    """Video frames at ``fps`` and 1 Hz vitals for one scenario, from one seed."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int,
        bed_id: str = "sim-bed",
        split: Split = "train",
        index: int = 0,
        fps: float = 10.0,
        width: int = 320,
        height: int = 240,
        start: datetime | None = None,
    ) -> None:
        if not 1.0 <= fps <= 60.0:
            raise ValueError(f"fps must be within 1-60, got {fps}")
        streams = seed_streams(scenario.seed if scenario.seed is not None else seed, split, index)
        self.scenario = scenario
        self.fps = fps
        self.start = start
        self.appearance = sample_appearance(streams.appearance, split)
        self.course = Course(scenario, streams.course)
        self.renderer = Renderer(
            self.appearance, width=width, height=height, seed=int(streams.render.integers(2**63 - 1))
        )
        self.monitor = (
            VitalsMonitor(self.course, streams.monitor, bed_id=bed_id, start=start) if start is not None else None
        )
        self.frame_count = round(scenario.duration_s * fps)
        self._next_index = 0

    @property
    def next_index(self) -> int:
        """Index of the next frame :meth:`frame_at` may render."""
        return self._next_index

    def frame_at(self, index: int) -> SimFrame:
        """Render frame ``index`` (indexes must increase; skipped frames are simply not drawn)."""
        if index < self._next_index:
            raise ValueError(f"frame {index} is behind frame {self._next_index - 1}")
        self._next_index = index + 1
        t0 = index / self.fps
        t1 = (index + 1) / self.fps
        state, truth = self.course.step(t0, t1)
        image = self.renderer.render(state)
        return SimFrame(index=index, t=t0, image=image, state=state, truth=truth)

    def frames(self) -> Iterator[SimFrame]:
        """Every frame of the scenario, in order."""
        for index in range(self._next_index, self.frame_count):
            yield self.frame_at(index)

    def vitals_until(self, t: float, resp_rate_bpm: float | None) -> list[Vitals]:
        """Monitor readings for every whole second up to ``t`` not yet sampled."""
        if self.monitor is None:
            raise ValueError("this simulation has no monitor (no start time given)")
        return self.monitor.readings_until(t, resp_rate_bpm)

    def timestamp(self, t: float) -> datetime:
        """Wall-clock time of ``t`` seconds into the scenario (needs a start time)."""
        if self.start is None:
            raise ValueError("this simulation has no start time")
        return self.start + timedelta(seconds=t)
