"""A scenario as the alerts app receives it: the monitor's vitals and 1 Hz detections from the
simulator's ground truth, through a simple detector model with seeded errors.

Used by the alert tests and by `icu bench alerts`. The detector model is deliberately simple and
documented here so the tests say what they test: the rules and lifecycle, not the video model.
Per second, a finding present in the truth is reported with probability 0.9 (0.85 for twitch,
which is the highest over the second's frames), absent ones with 0.05; on top, a seeded
``false_rate`` share of seconds carries a spurious finding (0.6) of a random kind, as a real
detector's isolated false positives would. Video respiration rate is the truth plus noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from icu.contracts import BaselineFindings, Detection, Vitals
from simulator.bed import seed_streams
from simulator.physiology import Course, VitalsMonitor
from simulator.scenario import Scenario

FPS = 10


@dataclass(frozen=True)
class DetectorModel:
    false_rate: float = 0.005  # share of seconds with one spurious finding
    rr_noise_bpm: float = 0.8


def scenario_messages(
    scenario: Scenario,
    *,
    bed_id: str,
    start: datetime,
    seed: int = 0,
    detector: DetectorModel | None = None,
    duration_s: float | None = None,
) -> Iterator[Vitals | Detection]:
    """Vitals (as the simulated monitor reports them) and one detection per second, in time order."""
    detector = detector or DetectorModel()
    streams = seed_streams(scenario.seed if scenario.seed is not None else seed, "train", 0)
    course = Course(scenario, streams.course)
    monitor = VitalsMonitor(course, streams.monitor, bed_id=bed_id, start=start)
    noise = np.random.default_rng([seed, 7])
    seconds = round(duration_s if duration_s is not None else scenario.duration_s)
    for second in range(seconds):
        grimace = twitch = apnea = 0
        rate: float | None = None
        for k in range(FPS):
            _, truth = course.step(second + k / FPS, second + (k + 1) / FPS)
            grimace, apnea = truth.grimace, truth.apnea
            twitch = max(twitch, truth.twitch)
            rate = truth.resp_rate_bpm
        yield from monitor.readings_until(second, rate)
        values = {
            "grimace": 0.9 if grimace else 0.05,
            "twitch": 0.85 if twitch else 0.05,
            "apnea": 0.9 if apnea else 0.05,
        }
        if noise.random() < detector.false_rate:
            values[str(noise.choice(["grimace", "twitch", "apnea"]))] = 0.6
        video_rate = None if rate is None else max(0.0, rate + float(noise.normal(0, detector.rr_noise_bpm)))
        ts = start + timedelta(seconds=second + 1)
        yield Detection(
            bed_id=bed_id,
            camera_id=f"{bed_id}-cam",
            ts=ts,
            seq=(second + 1) * FPS,
            window_end=ts + timedelta(seconds=2),
            model="simulated-detector",
            model_version="truth+noise",
            grimace=values["grimace"],
            twitch=values["twitch"],
            apnea=values["apnea"],
            resp_rate=None if values["apnea"] >= 0.5 or video_rate is None else round(video_rate, 2),
            resp_quality=0.8,
            baseline=BaselineFindings(resp_rate=None, resp_quality=0.5, motion_energy=1.0, twitch_burst=False),
            inferred_at=ts + timedelta(seconds=2, milliseconds=100),
        )
