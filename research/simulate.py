"""A recording straight from the simulator, no broker: each bed one scenario of the library,
its monitor vitals and 1 Hz detections from the alerts tests' detector model (the simulator's
truth with seeded errors, :mod:`alerts.scenario_feed`), and its ground truth in the ward's
truth format. This is what scores the alert rules on the whole scenario library; it does not
exercise the video model (record a live `icu sim ward` + `icu infer` for that)."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from alerts.scenario_feed import DetectorModel, scenario_messages
from icu.contracts import Detection, Vitals
from research.manifest import TRUTH_NAME, Manifest
from research.store import RecordingWriter
from simulator.physiology import episode_events
from simulator.scenario import Scenario


def truth_line(scenario: Scenario, *, bed_id: str, start: datetime, seed: int) -> dict[str, object]:
    """The scenario as `icu sim ward --truth` writes it: events with absolute onset and end."""
    events = episode_events(scenario)
    for event in events:
        for name in ("onset", "end"):
            offset = event[f"{name}_s"]
            assert isinstance(offset, float | int)
            event[f"{name}_ts"] = (start + timedelta(seconds=offset)).isoformat()
    return {"bed_id": bed_id, "camera_id": f"{bed_id}-cam", "scenario": scenario.name, "seed": seed, "run": 1,
            "start": start.isoformat(), "events": events}  # fmt: skip


def write_simulated_recording(
    out: Path,
    scenarios: Sequence[Scenario],
    *,
    start: datetime,
    seed: int = 0,
    bed_prefix: str = "sim",
    false_rate: float = 0.005,
    duration_s: float | None = None,
) -> Manifest:
    """One bed per scenario (``<prefix>-01``...), all starting at ``start``, each cut at
    ``duration_s`` if given; records merged by time."""
    beds = [(f"{bed_prefix}-{i + 1:02d}", scenario) for i, scenario in enumerate(scenarios)]
    detector = DetectorModel(false_rate=false_rate)
    streams: list[Iterator[Vitals | Detection]] = [
        scenario_messages(scenario, bed_id=bed, start=start, seed=seed + i, detector=detector, duration_s=duration_s)
        for i, (bed, scenario) in enumerate(beds)
    ]
    source = {"kind": "simulator", "scenarios": [s.name for _, s in beds], "seed": seed,
              "detector": {"model": "truth+noise", "false_rate": false_rate}}  # fmt: skip
    writer = RecordingWriter(out, source=source)
    with writer:
        for message in heapq.merge(*streams, key=lambda m: m.ts):
            writer.add(message)
        truth = out / TRUTH_NAME
        with truth.open("w", encoding="utf-8") as handle:
            for i, (bed, scenario) in enumerate(beds):
                handle.write(json.dumps(truth_line(scenario, bed_id=bed, start=start, seed=seed + i)) + "\n")
        writer.has_truth()
        return writer.close()
