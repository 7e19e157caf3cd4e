"""The demo's simulated bedside: a bed started part-way into its scenario first reports the
monitor's values at that point (one merged reading), then frames and vitals in real time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from demo.bedside import BedTrack, merged_reading
from demo.plan import BedPlan
from icu.contracts import Consciousness, Vitals

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def test_merged_reading_keeps_the_newest_value_of_each_field() -> None:
    readings = [
        Vitals(bed_id="b", ts=T0, source="sim", hr=80, sbp=120, temp_c=37.0, consciousness=Consciousness.ALERT),
        Vitals(bed_id="b", ts=T0 + timedelta(seconds=1), source="sim", hr=90, rr=20),
        Vitals(bed_id="b", ts=T0 + timedelta(seconds=2), source="sim", hr=None, spo2=93),
    ]
    merged = merged_reading(readings)
    assert merged is not None
    assert merged.ts == T0 + timedelta(seconds=2)
    assert (merged.hr, merged.rr, merged.spo2, merged.sbp, merged.temp_c) == (90, 20, 93, 120, 37.0)
    assert merged.consciousness is Consciousness.ALERT
    assert merged_reading([]) is None


def test_a_bed_started_part_way_reports_that_point_of_its_course() -> None:
    sent: list[Vitals] = []
    bed = BedPlan(bed_id="sim-02", scenario="respiratory-deterioration", offset_s=240, index=1)
    track = BedTrack(bed, fps=10, size=(160, 120), seed=0, send_vitals=sent.append)
    # One catch-up reading: 120 s after the onset RR has climbed and SpO2 fallen, but the
    # patient breathes (a course stepped without respiration would read as an apnea).
    assert len(sent) == 1
    (catch_up,) = sent
    assert catch_up.rr is not None
    assert 18 <= catch_up.rr <= 24
    assert catch_up.spo2 is not None
    assert 90 <= catch_up.spo2 <= 96
    assert abs((catch_up.ts - datetime.now(UTC)).total_seconds()) < 5

    async def two_frames() -> list[tuple[int, int]]:
        frames = [await track.recv() for _ in range(2)]
        track.stop()
        return [(f.width, f.height) for f in frames]

    assert asyncio.run(two_frames()) == [(160, 120), (160, 120)]
    assert track.frames_sent == 2
    assert track.sim.next_index > 2400  # rendering goes on from 240 s in
