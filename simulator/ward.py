"""Live simulated beds: vitals to ``vitals`` and camera frames to ``frames``, with the real contracts.

Until the ingest service's camera path exists, frames go straight to the frames topic as JPEG
with the contract's headers; vitals go to the vitals topic at 1 Hz per bed. Simulated time runs
``speed`` times faster than the wall clock and message timestamps follow simulated time.

Video is latest-frame-wins: when rendering or Kafka cannot keep up, a bed skips to the newest due
frame and counts the skipped ones as dropped; nothing queues. Vitals are never skipped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import cv2
from kafka.errors import KafkaError

from icu.contracts import FrameHeader, Topic, encode, kafka_key, make_frame
from icu.kafka import GracefulStop, Producer
from simulator.bed import BedSimulation
from simulator.physiology import episode_events
from simulator.scenario import Scenario
from simulator.settings import SimWardSettings

log = logging.getLogger(__name__)

DEFAULT_MIX = (
    "stable",
    "pain",
    "respiratory-deterioration",
    "seizure",
    "sepsis",
    "apnea",
    "nuisance-walk-through",
    "nuisance-night",
)
"""The default ward: a mix of findings and nuisances, one scenario per bed, cycled."""

STATS_EVERY_S = 10.0


@dataclass
class BedStats:
    frames_sent: int = 0
    frames_dropped: int = 0
    vitals_sent: int = 0
    send_errors: int = 0
    runs: int = 0


class SimulatedBed:
    """One bed of the ward; replays its scenario (same patient, same course) when it ends."""

    def __init__(self, settings: SimWardSettings, scenario: Scenario, index: int, start: datetime) -> None:
        self.settings = settings
        self.scenario = scenario
        self.index = index
        self.bed_id = f"{settings.sim_bed_prefix}-{index + 1:02d}"
        self.camera_id = f"{self.bed_id}-cam"
        self.stats = BedStats()
        self._origin = start
        self._offset_s = 0.0  # simulated time at which the current run started
        self.sim = self._new_run()

    def _new_run(self) -> BedSimulation:
        width, height = self.settings.frame_size
        self.stats.runs += 1
        return BedSimulation(
            self.scenario,
            seed=self.settings.sim_seed,
            bed_id=self.bed_id,
            index=self.index,
            fps=self.settings.sim_fps,
            width=width,
            height=height,
            start=self._origin + timedelta(seconds=self._offset_s),
        )

    def truth_record(self) -> dict[str, Any]:
        events = episode_events(self.scenario)
        for event, episode in zip(events, self.scenario.episodes, strict=True):
            event["onset_ts"] = self.sim.timestamp(episode.onset_s).isoformat()
            event["end_ts"] = self.sim.timestamp(episode.end_s).isoformat()
        return {
            "bed_id": self.bed_id,
            "camera_id": self.camera_id,
            "scenario": self.scenario.name,
            "seed": self.settings.sim_seed,
            "index": self.index,
            "run": self.stats.runs,
            "start": self.sim.timestamp(0).isoformat(),
            "fps": self.settings.sim_fps,
            "events": events,
        }

    def next_due_s(self) -> float:
        """Simulated time (from the ward's start) of this bed's next frame."""
        return self._offset_s + self.sim.next_index / self.sim.fps

    def advance(self, now_s: float, producer: Producer, ward: Ward) -> None:
        """Publish what is due at simulated time ``now_s``: the newest frame and any vitals."""
        local = now_s - self._offset_s
        if local >= self.scenario.duration_s:
            self._offset_s += self.scenario.duration_s
            local = now_s - self._offset_s
            self.sim = self._new_run()
            ward.write_truth(self)
        due = min(int(local * self.sim.fps), self.sim.frame_count - 1)
        if due < self.sim.next_index:
            return
        self.stats.frames_dropped += due - self.sim.next_index
        frame = self.sim.frame_at(due)
        for vitals in self.sim.vitals_until(frame.t, frame.truth.resp_rate_bpm):
            ward.send(producer, self, Topic.VITALS, kafka_key(vitals), encode(vitals))
        ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.settings.sim_jpeg_quality])
        if not ok:
            self.stats.send_errors += 1
            return
        header = FrameHeader(
            bed_id=self.bed_id,
            camera_id=self.camera_id,
            capture_ts=self.sim.timestamp(frame.t),
            seq=self._seq(due),
            width=frame.image.shape[1],
            height=frame.image.shape[0],
        )
        message = make_frame(header, jpeg.tobytes())
        ward.send(producer, self, Topic.FRAMES, message.key(), message.jpeg, message.kafka_headers())

    def _seq(self, index: int) -> int:
        runs_before = self.stats.runs - 1
        return runs_before * self.sim.frame_count + index


class Ward:
    """Runs every bed in one loop on one core, at ``speed`` simulated seconds per second."""

    def __init__(
        self,
        settings: SimWardSettings,
        scenarios: Sequence[Scenario],
        *,
        truth_out: IO[str] | None = None,
        start: datetime | None = None,
    ) -> None:
        if not scenarios:
            raise ValueError("a ward needs at least one scenario")
        self.settings = settings
        self.start = start or datetime.now(UTC)
        self.beds = [
            SimulatedBed(settings, scenarios[i % len(scenarios)], i, self.start) for i in range(settings.sim_beds)
        ]
        self._truth_out = truth_out
        self.delivery_failures = 0
        self._failure_logged_at = -math.inf

    def write_truth(self, bed: SimulatedBed) -> None:
        if self._truth_out is not None:
            self._truth_out.write(json.dumps(bed.truth_record(), sort_keys=True) + "\n")
            self._truth_out.flush()

    def send(
        self,
        producer: Producer,
        bed: SimulatedBed,
        topic: Topic,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        name = topic.full_name(self.settings.topic_prefix)
        try:
            future = producer.send(name, key=key, value=value, headers=headers)
        except KafkaError as exc:
            # The producer's buffer is bounded; when Kafka is down it fills and sends time out.
            bed.stats.send_errors += 1
            log.warning("bed %s: could not queue a message for %s: %s", bed.bed_id, name, exc)
            return
        future.add_errback(self._on_error, name)
        if topic is Topic.VITALS:
            bed.stats.vitals_sent += 1
        else:
            bed.stats.frames_sent += 1

    def _on_error(self, topic: str, exc: BaseException) -> None:
        # kafka-python's sender thread calls this as f(*args, exc). Once per 10 s, not per frame.
        self.delivery_failures += 1
        now = time.monotonic()
        if now - self._failure_logged_at >= 10:
            self._failure_logged_at = now
            log.error("delivery to %s failed (%d failures so far): %s", topic, self.delivery_failures, exc)

    def run(self, producer: Producer, stop: GracefulStop, *, duration_s: float | None = None) -> list[BedStats]:
        """Publish until ``stop`` or until ``duration_s`` simulated seconds have passed."""
        for bed in self.beds:
            self.write_truth(bed)
            log.info(
                "bed %s: scenario %s (%g s), camera %s", bed.bed_id, bed.scenario.name, bed.scenario.duration_s,
                bed.camera_id,
            )  # fmt: skip
        speed = self.settings.sim_speed
        wall_start = time.monotonic()
        next_stats = wall_start + STATS_EVERY_S
        while not stop.is_set():
            now_s = (time.monotonic() - wall_start) * speed
            if duration_s is not None and now_s >= duration_s:
                break
            for bed in self.beds:
                bed.advance(now_s, producer, self)
            wall = time.monotonic()
            if wall >= next_stats:
                next_stats = wall + STATS_EVERY_S
                self._log_stats()
            next_due = min(bed.next_due_s() for bed in self.beds)
            if duration_s is not None:
                next_due = min(next_due, duration_s)
            delay = (next_due / speed) - (time.monotonic() - wall_start)
            if delay > 0:
                stop.wait(delay)
        producer.flush(timeout=30)
        self._log_stats()
        return [bed.stats for bed in self.beds]

    def _log_stats(self) -> None:
        sent = sum(b.stats.frames_sent for b in self.beds)
        dropped = sum(b.stats.frames_dropped for b in self.beds)
        vitals = sum(b.stats.vitals_sent for b in self.beds)
        errors = sum(b.stats.send_errors for b in self.beds)
        log.info("ward: frames sent %d, dropped %d (latest-frame-wins), vitals sent %d, send errors %d",
                 sent, dropped, vitals, errors)  # fmt: skip


def open_truth(path: Path | None) -> IO[str] | None:
    return path.open("a", encoding="utf-8") if path is not None else None
