"""Simulated monitor readings: consistent with the scenario and the video's breathing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from icu.contracts import Consciousness, Vitals, decode, encode
from simulator.bed import monitor_readings
from simulator.scenario import Scenario, load_scenario, parse_scenario

START = datetime(2026, 1, 1, tzinfo=UTC)


def readings(scenario: Scenario, seed: int = 0) -> list[tuple[float, Vitals]]:
    """Every reading with its second, as `icu sim vitals` prints them."""
    return [
        ((vitals.ts - START).total_seconds(), vitals)
        for vitals in monitor_readings(scenario, seed=seed, bed_id="sim-bed", start=START)
    ]


def series(rows: list[tuple[float, Vitals]], name: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(t, getattr(v, name)) for t, v in rows if getattr(v, name) is not None]
    return np.array([p[0] for p in pairs]), np.array([float(p[1]) for p in pairs])


def test_readings_are_valid_contract_messages_on_the_monitor_schedule() -> None:
    scenario = parse_scenario({"name": "s", "duration_s": 1200, "monitor": {"nibp_interval_s": 300, "dropout": 0}})
    rows = readings(scenario)
    assert len(rows) == 1200
    for _, vitals in rows[:50]:
        assert decode(Vitals, encode(vitals)) == vitals
        assert vitals.source == "sim"
        assert vitals.bed_id == "sim-bed"
    nibp_times, _ = series(rows, "sbp")
    assert list(nibp_times) == [0, 300, 600, 900]
    assert [t for t, v in rows if v.consciousness is not None] == [0]


def test_monitor_rr_follows_the_breathing_that_drives_the_video() -> None:
    rows = readings(load_scenario("respiratory-deterioration"))
    t, rr = series(rows, "rr")
    _, spo2 = series(rows, "spo2")
    early = rr[(t > 30) & (t < 110)]
    late = rr[t > 900]
    assert np.median(early) == pytest.approx(16, abs=1.5)
    assert np.median(late) == pytest.approx(32, abs=2.0)
    ts, spo2 = series(rows, "spo2")
    assert np.median(spo2[ts < 110]) - np.median(spo2[ts > 900]) >= 6


def test_spo2_dips_after_an_apnea_with_a_circulation_delay() -> None:
    scenario = parse_scenario(
        {
            "name": "a",
            "duration_s": 240,
            "monitor": {"dropout": 0, "spo2_probe_off_per_hour": 0, "motion_artifacts": False},
            "episodes": [{"kind": "apnea", "onset_s": 100, "duration_s": 30}],
        }
    )
    t, spo2 = series(readings(scenario), "spo2")
    baseline = np.median(spo2[t < 100])
    during_first_10s = spo2[(t >= 100) & (t < 112)]
    after = spo2[(t >= 115) & (t < 170)]
    assert during_first_10s.min() >= baseline - 2  # not yet: the blood takes ~15 s to reach the finger
    assert after.min() <= baseline - 6
    assert np.median(spo2[t > 220]) >= baseline - 1.5  # recovered
    t_rr, rr = series(readings(scenario), "rr")
    assert rr[(t_rr > 120) & (t_rr < 131)].max() <= 5  # impedance RR collapses during the apnea


def test_sepsis_raises_hr_rr_and_temperature_lowers_bp_and_brings_confusion() -> None:
    rows = readings(load_scenario("sepsis"))
    for name, direction in (("hr", 1), ("rr", 1), ("temp_c", 1), ("sbp", -1)):
        t, values = series(rows, name)
        change = np.median(values[t >= 2700]) - np.median(values[t <= 300])
        assert change * direction > 0, (name, change)
    states = [(t, v.consciousness) for t, v in rows if v.consciousness is not None]
    assert states[0] == (0, Consciousness.ALERT)
    assert states[-1][1] == Consciousness.NEW_CONFUSION
    assert states[-1][0] > 300


def test_monitor_artefacts_probe_off_gaps_and_missing_values() -> None:
    scenario = parse_scenario(
        {"name": "a", "duration_s": 3600, "monitor": {"spo2_probe_off_per_hour": 6, "dropout": 0.02}}
    )
    rows = readings(scenario, seed=3)
    spo2_missing = [t for t, v in rows if v.spo2 is None]
    hr_missing = [t for t, v in rows if v.hr is None]
    assert len(spo2_missing) > len(hr_missing) > 20
    # Probe-off gaps are runs of >= 10 s, not scattered seconds.
    runs, run = [], 1
    for a, b in itertools.pairwise(spo2_missing):
        if b == a + 1:
            run += 1
        else:
            runs.append(run)
            run = 1
    assert max([*runs, run]) >= 10


def test_same_seed_same_readings() -> None:
    scenario = load_scenario("pain")
    assert [encode(v) for _, v in readings(scenario, 4)] == [encode(v) for _, v in readings(scenario, 4)]
    assert [encode(v) for _, v in readings(scenario, 4)] != [encode(v) for _, v in readings(scenario, 5)]
