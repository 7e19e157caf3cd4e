"""Each finding changes the pixels where it should, and nuisances carry no finding labels."""

from __future__ import annotations

import itertools
from typing import Any

import cv2
import numpy as np
import pytest

from simulator.appearance import in_training_ranges, sample_appearance
from simulator.bed import BedSimulation, seed_streams
from simulator.physiology import Course
from simulator.render import Region
from simulator.scenario import library_names, load_scenario, parse_scenario


def _sim(episodes: list[dict[str, Any]], *, duration_s: float, seed: int, **baseline: float) -> BedSimulation:
    scenario = parse_scenario({"name": "t", "duration_s": duration_s, "baseline": baseline, "episodes": episodes})
    return BedSimulation(scenario, seed=seed)


def _chest_displacement(sim: BedSimulation) -> tuple[np.ndarray, list[Any]]:
    """Chest-region motion per frame (DIS optical flow), integrated and projected on its main axis."""
    ys, xs = sim.renderer.region("chest").slice()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    previous = None
    flows, truths = [], []
    for frame in sim.frames():
        grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
        if previous is not None:
            flows.append(dis.calc(previous, grey, None)[ys, xs].reshape(-1, 2).mean(axis=0))
            truths.append(frame.truth)
        previous = grey
    displacement = np.cumsum(np.array(flows), axis=0)
    centred = displacement - displacement.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    return centred @ axis, truths


def _peak_bpm(signal: np.ndarray, fps: float) -> float:
    t = np.arange(len(signal))
    detrended = signal - np.polyval(np.polyfit(t, signal, 1), t)
    n = 8 * len(signal)  # zero-padding for a finer frequency grid
    spectrum = np.abs(np.fft.rfft(detrended * np.hanning(len(signal)), n=n))
    bpm = np.fft.rfftfreq(n, d=1 / fps) * 60
    band = (bpm > 4) & (bpm < 70)
    return float(bpm[band][np.argmax(spectrum[band])])


@pytest.mark.parametrize(("rr", "seed"), [(12.0, 1), (18.0, 2), (28.0, 3)])
def test_chest_motion_spectrum_peaks_at_the_scenario_rr(rr: float, seed: int) -> None:
    sim = _sim([], duration_s=60, seed=seed, rr=rr)
    signal, truths = _chest_displacement(sim)
    assert all(t.resp_rate_bpm == pytest.approx(rr) for t in truths)
    assert _peak_bpm(signal, sim.fps) == pytest.approx(rr, abs=1.0)


def test_no_chest_motion_during_apnea() -> None:
    sim = _sim([{"kind": "apnea", "onset_s": 20, "duration_s": 25}], duration_s=60, seed=4, rr=14)
    signal, truths = _chest_displacement(sim)
    apnea = np.array([t.apnea for t in truths], dtype=bool)
    assert apnea.sum() == pytest.approx(250, abs=2)
    assert all(t.resp_rate_bpm is None for t, a in zip(truths, apnea, strict=True) if a)
    # Compare the chest's excursion in 10 s windows: breathing before, the settled apnea after.
    breathing = np.ptp(signal[50:150])
    still = np.ptp(signal[np.flatnonzero(apnea)[20:120]])
    assert still < 0.2 * breathing, (still, breathing)


def _energy(frames: list[np.ndarray], region: Region) -> np.ndarray:
    ys, xs = region.slice()
    # Blurred first, as any motion detector would, so sensor noise does not count as motion.
    crops = [
        cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (0, 0), 1.5)[ys, xs].astype(np.float32) for f in frames
    ]
    return np.array([0.0] + [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(crops)])


def test_twitch_frames_show_a_motion_burst_in_the_limb() -> None:
    episodes = [{"kind": "myoclonus", "onset_s": 2, "duration_s": 26, "jerks_per_min": 12, "intensity": 0.8,
                 "limbs": ["left_arm"]}]  # fmt: skip
    sim = _sim(episodes, duration_s=30, seed=5)
    frames, twitch = [], []
    for frame in sim.frames():
        frames.append(frame.image.copy())
        twitch.append(frame.truth.twitch)
    twitch_mask = np.array(twitch, dtype=bool)
    assert 2 <= twitch_mask.sum() <= 40
    arm = _energy(frames, sim.renderer.region("left_arm"))
    other_arm = _energy(frames, sim.renderer.region("right_arm"))
    # A jerk moves the limb out and back: the frame and the one after it differ from their neighbours.
    burst = np.maximum(arm, np.roll(arm, -1))[twitch_mask]
    quiet = arm[~(twitch_mask | np.roll(twitch_mask, 1) | np.roll(twitch_mask, -1))]
    assert np.median(burst) > 4 * np.median(quiet), (np.median(burst), np.median(quiet))
    assert np.median(other_arm[twitch_mask]) < 2 * np.median(quiet) + 0.5


def test_seizure_is_rhythmic_at_its_frequency() -> None:
    episodes = [{"kind": "seizure", "onset_s": 2, "duration_s": 20, "frequency_hz": 2.0, "limbs": ["right_arm"]}]
    sim = _sim(episodes, duration_s=24, seed=6)
    frames, twitch = [], []
    for frame in sim.frames():
        frames.append(frame.image.copy())
        twitch.append(frame.truth.twitch)
    assert sum(twitch) >= 50  # jerks at 2 Hz light up a large share of frames
    arm = _energy(frames, sim.renderer.region("right_arm"))[25:215]
    spectrum = np.abs(np.fft.rfft((arm - arm.mean()) * np.hanning(len(arm)), n=4096))
    hz = np.fft.rfftfreq(4096, d=1 / sim.fps)
    band = (hz > 0.5) & (hz < 4.9)
    assert hz[band][np.argmax(spectrum[band])] == pytest.approx(2.0, abs=0.15)


def test_grimace_changes_the_face_and_little_else() -> None:
    episodes = [{"kind": "pain", "onset_s": 1, "duration_s": 28, "intensity": 1.0, "bout_every_s": 4}]
    sim = _sim(episodes, duration_s=30, seed=7)
    face = sim.renderer.region("face")
    calm, pained = [], []
    for frame in sim.frames():
        if frame.state.eye_closure:
            continue  # blinks also close the eyes; compare expression only
        grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        if frame.truth.grimace and frame.state.grimace > 0.8:
            pained.append(grey)
        elif frame.state.grimace == 0:
            calm.append(grey)
    assert len(pained) >= 10
    assert len(calm) >= 10
    difference = np.abs(np.mean(pained, axis=0) - np.mean(calm, axis=0))
    inside = difference[face.slice()].mean()
    outside_mask = np.ones_like(difference, dtype=bool)
    outside_mask[face.slice()] = False
    assert inside > 8.0, inside
    assert inside > 10 * difference[outside_mask].mean()


def test_agitation_is_big_motion_without_twitch_labels() -> None:
    sim = _sim([{"kind": "agitation", "onset_s": 2, "duration_s": 15, "intensity": 1.0}], duration_s=20, seed=8)
    frames, twitch = [], []
    for frame in sim.frames():
        frames.append(frame.image.copy())
        twitch.append(frame.truth.twitch)
    assert sum(twitch) == 0
    arms = _energy(frames, sim.renderer.region("left_arm")) + _energy(frames, sim.renderer.region("right_arm"))
    assert arms[40:150].mean() > 3 * arms[1:15].mean()


@pytest.mark.parametrize("name", [n for n in library_names() if n.startswith("nuisance-")] + ["agitation", "stable"])
def test_nuisance_scenarios_carry_no_finding_labels(name: str) -> None:
    scenario = load_scenario(name)
    course = Course(scenario, seed_streams(0, "train", 0).course)
    fps = 10.0
    for index in range(int(scenario.duration_s * fps)):
        _, truth = course.step(index / fps, (index + 1) / fps)
        assert (truth.grimace, truth.twitch, truth.apnea) == (0, 0, 0), (name, index)
        assert truth.resp_rate_bpm is not None


def test_nuisances_change_the_picture() -> None:
    """A nuisance must be visible, or the model never learns to ignore it."""
    cases = {
        "night_mode": {"light": 0.3, "infrared": True},
        "walk_through": {"linger": 0.6},
        "camera_shake": {"amplitude_px": 4},
        "noise": {"sigma": 15, "jpeg_quality": 10},
        "head_turn": {"intensity": 1.0},
        "blanket_adjustment": {},
    }
    for kind, extra in cases.items():
        sim = _sim([{"kind": kind, "onset_s": 2, "duration_s": 6, **extra}], duration_s=10, seed=9)
        frames = [f.image.copy() for f in sim.frames()]
        change = np.abs(frames[50].astype(np.float32) - frames[10].astype(np.float32)).mean()
        assert change > 3.0, (kind, change)
    night = _sim([{"kind": "night_mode", "onset_s": 0, "duration_s": 10, "light": 0.3}], duration_s=10, seed=9)
    image = [f.image.copy() for f in night.frames()][60].astype(np.float32)
    assert np.abs(image[..., 0] - image[..., 2]).mean() < 2.5  # infrared: grey
    assert image.mean() < 90


def test_unseen_split_never_overlaps_training_ranges() -> None:
    for index in range(200):
        train = sample_appearance(seed_streams(1, "train", index).appearance, "train")
        unseen = sample_appearance(seed_streams(1, "unseen", index).appearance, "unseen")
        assert in_training_ranges(train)
        assert not in_training_ranges(unseen)
        assert unseen.blanket_pattern == "dots"
        assert train.blanket_pattern != "dots"
