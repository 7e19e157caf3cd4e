"""Labelled clip sets in the project's dataset format (see README "Clip dataset format").

A clip set is a directory with, per clip, ``<id>.mp4`` and ``<id>.json``::

    {"fps": 10, "labels": {"grimace": [...], "twitch": [...], "apnea": [...], "resp_rate_bpm": [...]},
     "events": [...], "meta": {...}}

Every label list has exactly one entry per video frame. Missing label keys mean "not annotated".
Training, evaluation and outside datasets all use this format. Same seed, same labels, byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import cv2
import numpy as np

from icu import __version__
from simulator.appearance import Split
from simulator.bed import BedSimulation, seed_streams
from simulator.errors import SimulatorError
from simulator.physiology import episode_events
from simulator.render import REGIONS
from simulator.scenario import Scenario, parse_scenario

log = logging.getLogger(__name__)

LABEL_KEYS: Final = ("grimace", "twitch", "apnea", "resp_rate_bpm")
DATASET_FORMAT: Final = "icu-watch-clips/1"


class ClipError(SimulatorError):
    """A clip or clip set that cannot be written or read."""


@dataclass(frozen=True, slots=True)
class ClipSpec:
    """What to render for one clip."""

    clip_id: str
    scenario: Scenario
    seed: int
    split: Split
    index: int
    fps: float
    width: int
    height: int


def random_clip_scenario(rng: np.random.Generator, *, duration_s: float, name: str) -> Scenario:
    """A short training scenario: random baseline, a random mix of findings and nuisances.

    Probabilities are set so each finding appears in roughly a quarter to a third of clips and
    a good share of clips has none, which keeps frame labels from being dominated by one class.
    """
    d = duration_s

    def span(min_s: float, max_s: float) -> tuple[float, float]:
        length = float(rng.uniform(min(min_s, d), min(max_s, d)))
        onset = float(rng.uniform(0, d - length))
        return round(onset, 2), round(length, 2)

    episodes: list[dict[str, Any]] = []

    def maybe(p: float, kind: str, min_s: float, max_s: float, **extra: Any) -> None:
        # An episode whose shortest length does not fit the clip is left out (short clips).
        if rng.random() < p and min_s <= min(max_s, d):
            onset, length = span(min_s, max_s)
            intensity = round(float(rng.uniform(0.5, 1.0)), 2)
            episodes.append({"kind": kind, "onset_s": onset, "duration_s": length, "intensity": intensity, **extra})

    maybe(0.35, "pain", 6, d, bout_every_s=round(float(rng.uniform(3, 10)), 1), bout_s=[2.0, 6.0])
    maybe(0.25, "apnea", 10, min(30.0, d - 2))
    if rng.random() < 0.5:
        maybe(0.2, "irregular_breathing", 20, d, pattern="cheyne_stokes", cycle_s=25.0, pause_s=10.0)
    else:
        maybe(0.2, "irregular_breathing", 8, d, pattern="ataxic")
    maybe(0.25, "myoclonus", 5, d, jerks_per_min=round(float(rng.uniform(8, 30)), 1))
    maybe(0.15, "seizure", 3, 12, frequency_hz=round(float(rng.uniform(1, 5)), 2))
    maybe(0.15, "respiratory_deterioration", d / 2, d, rr_target=round(float(rng.uniform(26, 40)), 1), ramp_s=5.0)
    maybe(0.15, "agitation", 3, 10)
    maybe(0.12, "walk_through", 3, 8, direction=str(rng.choice(["left_to_right", "right_to_left"])))
    maybe(0.15, "night_mode", d / 2, d, light=round(float(rng.uniform(0.2, 0.5)), 2), infrared=bool(rng.random() < 0.7))
    maybe(0.10, "blanket_adjustment", 3, 8)
    maybe(0.10, "camera_shake", 2, 8, amplitude_px=round(float(rng.uniform(1, 4)), 2))
    maybe(0.12, "noise", 3, d, sigma=round(float(rng.uniform(4, 15)), 1), jpeg_quality=int(rng.integers(8, 30)))
    maybe(0.10, "head_turn", 3, 10, side=str(rng.choice(["left", "right"])))
    baseline = {
        "hr": round(float(rng.uniform(58, 105)), 1),
        "rr": round(float(rng.uniform(9, 24)), 1),
        "spo2": round(float(rng.uniform(93, 99)), 1),
        "breath_depth": round(float(rng.uniform(0.7, 1.3)), 2),
    }
    return parse_scenario(
        {"name": name, "duration_s": d, "baseline": baseline, "episodes": episodes}, source=f"random clip {name}"
    )


def plan_clip_set(
    *,
    n: int,
    seed: int,
    split: Split,
    duration_s: float,
    fps: float,
    width: int,
    height: int,
    scenarios: Sequence[Scenario] = (),
) -> list[ClipSpec]:
    """The clips a set will hold: random scenarios, or the given ones cycled over new patients."""
    if n < 1:
        raise ClipError("--n must be at least 1")
    if not 1 <= fps <= 60:
        raise ClipError(f"--fps must be within 1-60, got {fps:g}")
    if not scenarios and not 1 <= duration_s <= 24 * 3600:
        raise ClipError(f"--duration must be within 1 s - 24 h, got {duration_s:g}")
    if width % 2 or height % 2:
        raise ClipError(f"--size {width}x{height}: width and height must be even (H.264 4:2:0)")
    specs = []
    for index in range(n):
        clip_id = f"{split}-s{seed}-{index:05d}"
        if scenarios:
            scenario = scenarios[index % len(scenarios)]
            clip_id = f"{split}-s{seed}-{index:05d}-{scenario.name}"
        else:
            # Seeded from the course stream's first draw: a fresh generator, so the course itself is untouched.
            scenario_seed = seed_streams(seed, split, index).course.integers(2**63 - 1)
            scenario = random_clip_scenario(np.random.default_rng(scenario_seed), duration_s=duration_s, name=clip_id)
        specs.append(ClipSpec(clip_id, scenario, seed, split, index, fps, width, height))
    return specs


class VideoWriter:
    """H.264 (libx264, CRF 23) in MP4 through PyAV, single-threaded so the bytes are reproducible."""

    def __init__(self, path: Path, *, fps: float, width: int, height: int) -> None:
        self._container = av.open(str(path), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast", "threads": "1"}
        else:
            stream.options = {"qscale": "3"}
        self._stream = stream
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


def clip_document(spec: ClipSpec, sim: BedSimulation, labels: dict[str, list[Any]]) -> dict[str, Any]:
    regions = {}
    for name in REGIONS:
        box = sim.renderer.region(name)
        regions[name] = [box.x0, box.y0, box.x1, box.y1]
    return {
        "fps": spec.fps,
        "labels": labels,
        "events": episode_events(spec.scenario),
        "meta": {
            "format": DATASET_FORMAT,
            "generator": f"icu-watch {__version__} simulator",
            "synthetic": True,
            "clip_id": spec.clip_id,
            "split": spec.split,
            "seed": spec.seed,
            "index": spec.index,
            "width": spec.width,
            "height": spec.height,
            "frames": len(labels["grimace"]),
            "scenario": spec.scenario.model_dump(mode="json"),
            "appearance": asdict(sim.appearance),
            "regions": regions,
            "grimace_bouts": [[round(b.start, 3), round(b.end, 3)] for b in sim.course.bouts],
            "jerks": [[round(j.start, 4), round(j.end, 4)] for j in sim.course.jerks],
        },
    }


def dump_json(document: dict[str, Any]) -> str:
    """Canonical JSON: sorted keys, compact lists, so the same labels give the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_clip(spec: ClipSpec, out: Path) -> Path:
    """Render one clip to ``out/<id>.mp4`` and ``out/<id>.json``; returns the JSON path."""
    cv2.setNumThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    sim = BedSimulation(
        spec.scenario,
        seed=spec.seed,
        split=spec.split,
        index=spec.index,
        fps=spec.fps,
        width=spec.width,
        height=spec.height,
    )
    labels: dict[str, list[Any]] = {key: [] for key in LABEL_KEYS}
    video_path = out / f"{spec.clip_id}.mp4"
    partial = out / f".{spec.clip_id}.mp4.partial"
    writer = VideoWriter(partial, fps=spec.fps, width=spec.width, height=spec.height)
    try:
        for frame in sim.frames():
            writer.write(frame.image)
            truth = frame.truth
            labels["grimace"].append(truth.grimace)
            labels["twitch"].append(truth.twitch)
            labels["apnea"].append(truth.apnea)
            labels["resp_rate_bpm"].append(truth.resp_rate_bpm)
    finally:
        writer.close()
    if writer.frames != sim.frame_count:
        raise ClipError(f"{spec.clip_id}: wrote {writer.frames} frames, expected {sim.frame_count}")
    partial.replace(video_path)
    json_path = out / f"{spec.clip_id}.json"
    json_path.write_text(dump_json(clip_document(spec, sim, labels)))
    return json_path


def write_clip_set(specs: Sequence[ClipSpec], out: Path, *, workers: int = 1) -> Iterator[Path]:
    """Write every clip, yielding each clip's JSON path as it completes (in order)."""
    out.mkdir(parents=True, exist_ok=True)
    if workers <= 1 or len(specs) == 1:
        for spec in specs:
            yield write_clip(spec, out)
        return
    with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or 1, len(specs))) as pool:
        yield from pool.map(write_clip, specs, [out] * len(specs))


def read_clip_labels(json_path: Path) -> dict[str, Any]:
    """Load and check one clip's JSON: ``fps`` positive, every label list as long as the others."""
    try:
        document = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClipError(f"{json_path}: cannot read clip labels: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("fps"), int | float) or document["fps"] <= 0:
        raise ClipError(f"{json_path}: 'fps' must be a positive number")
    labels = document.get("labels")
    if not isinstance(labels, dict):
        raise ClipError(f"{json_path}: 'labels' must be an object")
    lengths = {key: len(value) for key, value in labels.items() if isinstance(value, list)}
    if len(set(lengths.values())) > 1:
        raise ClipError(f"{json_path}: label lists differ in length: {lengths}")
    return document
