"""The patient's body over time: one source of truth for video, vitals and labels.

:class:`Course` turns a :class:`~simulator.scenario.Scenario` into per-frame body states (chest
excursion, facial expression, limb jerks, nuisances) and per-frame ground truth. The same
respiration waveform drives the rendered chest and the monitor's RR, so video and vitals agree.
:class:`VitalsMonitor` samples the course at 1 Hz like a bedside monitor, with its artefacts.

Everything random comes from the ``numpy.random.Generator`` passed in: same seed, same course.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import numpy as np

from icu.contracts import Consciousness, Vitals
from simulator.scenario import (
    LIMBS,
    Agitation,
    Apnea,
    BlanketAdjustment,
    CameraShake,
    HeadTurn,
    IrregularBreathing,
    Myoclonus,
    NightMode,
    Noise,
    Oxygen,
    Pain,
    RespiratoryDeterioration,
    Scenario,
    Seizure,
    Sepsis,
    WalkThrough,
    _Episode,
)

LIMB_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(LIMBS)}

GRIMACE_LABEL_THRESHOLD: Final = 0.3
"""Expression level (0-1) from which a frame is labelled ``grimace``; bouts peak well above it."""

APNEA_LABEL_MIN_S: Final = 10.0
"""A breathing pause is labelled ``apnea`` only when it lasts at least this long (CLINICAL.md)."""

INSPIRATION_SHARE: Final = 0.4
"""Inspiration takes ~40% of a breath; expiration the rest (I:E about 1:1.5)."""

POST_ICTAL_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Jerk:
    """One twitch of one limb: out and back within ``end - start`` seconds."""

    limb: int
    start: float
    end: float
    amplitude: float  # signed, -1..1


@dataclass(frozen=True, slots=True)
class Bout:
    """One grimace bout: expression rises, holds and relaxes."""

    start: float
    end: float
    peak: float


@dataclass(slots=True)
class BodyState:
    """What the renderer draws for one frame. Unitless levels; the renderer maps them to pixels."""

    t: float
    breath: float = 0.0  # chest excursion, 1 = a normal tidal breath at its peak
    grimace: float = 0.0  # 0-1 pain expression
    eye_closure: float = 0.0  # 0-1, blinks (not pain)
    jerk: np.ndarray = field(default_factory=lambda: np.zeros(len(LIMBS)))  # per limb, -1..1
    pose: np.ndarray = field(default_factory=lambda: np.zeros(len(LIMBS)))  # slow agitation offsets, -1..1
    head_yaw: float = 0.0  # -1 (turned fully left) .. 1 (right)
    walker: float | None = None  # progress 0..1 of a person crossing the view
    walker_left_to_right: bool = True
    blanket: float = 0.0  # 0..1 blanket being pulled/tucked
    light: float = 1.0  # light level relative to day
    infrared: float = 0.0  # 0..1 blend towards the grayscale IR look
    shake: tuple[float, float] = (0.0, 0.0)  # camera displacement, pixels at 320x240
    noise_sigma: float = 0.0  # extra sensor noise, grey levels
    jpeg_quality: int | None = None  # extra compression, when set


@dataclass(frozen=True, slots=True)
class FrameTruth:
    """Ground truth for one frame, in the clip dataset's label vocabulary."""

    grimace: int
    twitch: int
    apnea: int
    resp_rate_bpm: float | None


def _breath_wave(phase: float) -> float:
    """Chest excursion over one breath (phase 0-1): quick rise, slower fall, 0 at end-expiration."""
    if phase < INSPIRATION_SHARE:
        return 0.5 - 0.5 * math.cos(math.pi * phase / INSPIRATION_SHARE)
    return 0.5 + 0.5 * math.cos(math.pi * (phase - INSPIRATION_SHARE) / (1.0 - INSPIRATION_SHARE))


def _ramp(t: float, episode: _Episode, ramp_s: float | None) -> float:
    """0..1 inside the episode (ramping in over ``ramp_s``), easing back to 0 after it ends."""
    if t < episode.onset_s:
        return 0.0
    length = ramp_s or episode.duration_s
    if t <= episode.end_s:
        return min(1.0, (t - episode.onset_s) / length)
    level = min(1.0, episode.duration_s / length)
    recovery = max(60.0, min(900.0, episode.duration_s / 4))
    return max(0.0, level * (1.0 - (t - episode.end_s) / recovery))


def _within(t: float, episode: _Episode) -> bool:
    return episode.onset_s <= t < episode.end_s


def _envelope(t: float, episode: _Episode, edge_s: float) -> float:
    """1 inside the episode with smooth edges of ``edge_s`` seconds, 0 outside."""
    if not _within(t, episode):
        return 0.0
    edge = min(edge_s, episode.duration_s / 2)
    rise = (t - episode.onset_s) / edge
    fall = (episode.end_s - t) / edge
    x = min(1.0, rise, fall)
    return 0.5 - 0.5 * math.cos(math.pi * x)


def expects_alert(episode: _Episode) -> bool:
    """Whether a monitoring system should alert on this episode (the deterioration ground truth).

    Thresholds follow CLINICAL.md: apnea >= 20 s; any clonic seizure; a cluster of jerks (>= 4/min
    for >= 30 s); sustained pain (>= 60 s); respiratory deterioration or sepsis of intensity >= 0.4;
    Cheyne-Stokes with pauses >= 20 s.
    """
    if isinstance(episode, Apnea):
        return episode.duration_s >= 20
    if isinstance(episode, Seizure):
        return True
    if isinstance(episode, Myoclonus):
        return episode.jerks_per_min >= 4 and episode.duration_s >= 30
    if isinstance(episode, Pain):
        return episode.duration_s >= 60 and episode.intensity >= 0.4
    if isinstance(episode, RespiratoryDeterioration | Sepsis):
        return episode.intensity >= 0.4
    if isinstance(episode, IrregularBreathing):
        return episode.pattern == "cheyne_stokes" and episode.pause_s >= 20
    return False


def episode_events(scenario: Scenario) -> list[dict[str, object]]:
    """The scenario's episodes as ground-truth events (seconds from the start)."""
    events: list[dict[str, object]] = []
    for episode in scenario.episodes:
        detail = episode.model_dump(exclude={"kind", "onset_s", "duration_s", "intensity"}, mode="json")
        events.append(
            {
                "type": episode.kind,
                "onset_s": round(episode.onset_s, 3),
                "end_s": round(episode.end_s, 3),
                "intensity": episode.intensity,
                "finding": episode.finding,
                "alert_expected": expects_alert(episode),
                "detail": detail,
            }
        )
    return events


class Course:
    """A scenario unrolled in time. Call :meth:`step` with increasing times (the breathing integrates)."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self._rng = rng
        episodes = scenario.episodes
        self._pain = [e for e in episodes if isinstance(e, Pain)]
        self._resp = [e for e in episodes if isinstance(e, RespiratoryDeterioration)]
        self._apnea = [e for e in episodes if isinstance(e, Apnea)]
        self._irregular = [e for e in episodes if isinstance(e, IrregularBreathing)]
        self._myoclonus = [e for e in episodes if isinstance(e, Myoclonus)]
        self._seizure = [e for e in episodes if isinstance(e, Seizure)]
        self._sepsis = [e for e in episodes if isinstance(e, Sepsis)]
        self._agitation = [e for e in episodes if isinstance(e, Agitation)]
        self._oxygen = [e for e in episodes if isinstance(e, Oxygen)]
        self._walk = [e for e in episodes if isinstance(e, WalkThrough)]
        self._night = [e for e in episodes if isinstance(e, NightMode)]
        self._blanket = [e for e in episodes if isinstance(e, BlanketAdjustment)]
        self._shake = [e for e in episodes if isinstance(e, CameraShake)]
        self._noise = [e for e in episodes if isinstance(e, Noise)]
        self._head_turn = [e for e in episodes if isinstance(e, HeadTurn)]

        self.bouts = self._schedule_bouts()
        self._bout_starts = [b.start for b in self.bouts]
        self.jerks = self._schedule_jerks()
        self._jerk_starts = [j.start for j in self.jerks]
        self._longest_jerk = max((j.end - j.start for j in self.jerks), default=0.0)
        self._blinks = self._schedule_blinks()
        # Agitation: per limb, three slow sinusoids (0.15-0.6 Hz) with random phases.
        self._agitation_waves = [
            (rng.uniform(0.15, 0.6, size=(len(LIMBS), 3)), rng.uniform(0, 2 * math.pi, size=(len(LIMBS), 3)))
            for _ in self._agitation
        ]
        self._shake_waves = [
            (rng.uniform(3.0, 9.0, size=(2, 3)), rng.uniform(0, 2 * math.pi, size=(2, 3))) for _ in self._shake
        ]

        # Breathing integrator state.
        self._phase = float(rng.uniform(0, 1))
        self._depth: float | None = None
        self._breath_rate_mult = 1.0
        self._breath_depth_mult = 1.0
        self._last_t: float | None = None

    # --- schedules ------------------------------------------------------------------------

    def _schedule_bouts(self) -> list[Bout]:
        bouts: list[Bout] = []
        for episode in self._pain:
            lo, hi = episode.bout_s
            t = episode.onset_s + self._rng.uniform(0, min(3.0, episode.bout_every_s / 2))
            while t < episode.end_s:
                length = min(float(self._rng.uniform(lo, hi)), episode.end_s - t)
                if length >= 0.5:
                    peak = episode.intensity * float(self._rng.uniform(0.8, 1.0))
                    bouts.append(Bout(t, t + length, peak))
                t += length + float(self._rng.exponential(episode.bout_every_s))
        bouts.sort(key=lambda b: b.start)
        return bouts

    def _schedule_jerks(self) -> list[Jerk]:
        jerks: list[Jerk] = []
        for myoclonus in self._myoclonus:
            lo, hi = myoclonus.jerk_ms
            t = myoclonus.onset_s + float(self._rng.exponential(60.0 / myoclonus.jerks_per_min / 2))
            while t < myoclonus.end_s:
                limb = LIMB_INDEX[myoclonus.limbs[int(self._rng.integers(len(myoclonus.limbs)))]]
                length = float(self._rng.uniform(lo, hi)) / 1000.0
                sign = 1.0 if self._rng.random() < 0.5 else -1.0
                amplitude = sign * max(0.35, myoclonus.intensity) * float(self._rng.uniform(0.8, 1.0))
                jerks.append(Jerk(limb, t, min(t + length, myoclonus.end_s), amplitude))
                t += length + float(self._rng.exponential(60.0 / myoclonus.jerks_per_min))
        for seizure in self._seizure:
            period = 1.0 / seizure.frequency_hz
            limbs = [LIMB_INDEX[name] for name in seizure.limbs]
            signs = {limb: (1.0 if self._rng.random() < 0.5 else -1.0) for limb in limbs}
            t = seizure.onset_s
            while t < seizure.end_s:
                length = min(0.12, 0.45 * period)
                for limb in limbs:
                    amplitude = signs[limb] * max(0.35, seizure.intensity) * float(self._rng.uniform(0.8, 1.0))
                    jerks.append(Jerk(limb, t, min(t + length, seizure.end_s), amplitude))
                t += period * float(self._rng.uniform(0.93, 1.07))
        jerks.sort(key=lambda j: j.start)
        return jerks

    def _schedule_blinks(self) -> list[float]:
        # People blink ~15/min; a blink is a non-pain eye closure the model must not call grimace.
        blinks: list[float] = []
        t = float(self._rng.exponential(4.0))
        while t < self.scenario.duration_s:
            blinks.append(t)
            t += 0.3 + float(self._rng.exponential(4.0))
        return blinks

    # --- per-time quantities ----------------------------------------------------------------

    def grimace_level(self, t: float) -> float:
        i = bisect.bisect_right(self._bout_starts, t) - 1
        level = 0.0
        # Bouts never overlap by construction, but an eased tail may reach into the next.
        for bout in self.bouts[max(0, i - 1) : i + 1]:
            if bout.start <= t < bout.end + 0.6:
                rise = min(1.0, (t - bout.start) / 0.6)
                fall = 1.0 if t < bout.end else max(0.0, 1.0 - (t - bout.end) / 0.6)
                level = max(level, bout.peak * min(rise, fall))
        return level

    def _blink_level(self, t: float) -> float:
        i = bisect.bisect_right(self._blinks, t) - 1
        if i < 0:
            return 0.0
        dt = t - self._blinks[i]
        return max(0.0, 1.0 - abs(dt - 0.075) / 0.075) if dt < 0.15 else 0.0

    def _jerks_between(self, t0: float, t1: float) -> list[Jerk]:
        lo = bisect.bisect_left(self._jerk_starts, t0 - self._longest_jerk)
        hi = bisect.bisect_left(self._jerk_starts, t1)
        return [j for j in self.jerks[lo:hi] if j.end > t0 and j.start < t1]

    def jerk_displacement(self, t0: float, t1: float) -> np.ndarray:
        """Per-limb jerk displacement averaged over the exposure [t0, t1): a 50 ms jerk blurs into a frame."""
        out = np.zeros(len(LIMBS))
        jerks = self._jerks_between(t0, t1)
        if not jerks:
            return out
        samples = np.linspace(t0, t1, 9)[:-1] + (t1 - t0) / 16
        for jerk in jerks:
            x = (samples - jerk.start) / (jerk.end - jerk.start)
            profile = np.where((x >= 0) & (x <= 1), np.sin(np.pi * np.clip(x, 0, 1)), 0.0)
            # A short jerk the exposure only partly catches still shows as a blur of its peak.
            out[jerk.limb] += jerk.amplitude * max(float(profile.mean()), 0.6 * float(profile.max()))
        return np.clip(out, -1.0, 1.0)

    def _breathing_targets(self, t: float) -> tuple[float, float, bool, bool]:
        """(rate breaths/min, depth, paused, apnea-labelled) the breathing is heading for at ``t``."""
        base = self.scenario.baseline
        rate = base.rr
        depth = base.breath_depth
        for episode in self._resp:
            level = _ramp(t, episode, episode.ramp_s) * episode.intensity
            rate += (episode.rr_target - base.rr) * level
            depth *= 1.0 - (1.0 - episode.depth_factor) * level
        for sepsis in self._sepsis:
            rate += sepsis.rr_rise * _ramp(t, sepsis, sepsis.ramp_s) * sepsis.intensity
        for pain in self._pain:
            if _within(t, pain):
                rate += 3.0 * pain.intensity
        for agitation in self._agitation:
            rate += 5.0 * agitation.intensity * _envelope(t, agitation, 2.0)
        for seizure in self._seizure:
            if _within(t, seizure):
                rate += 6.0 * seizure.intensity
        paused = False
        apnea = False
        for apnea_episode in self._apnea:
            if _within(t, apnea_episode):
                paused = apnea = True
        for irregular in self._irregular:
            if not _within(t, irregular):
                continue
            if irregular.pattern == "cheyne_stokes":
                x = ((t - irregular.onset_s) % irregular.cycle_s) / irregular.cycle_s
                active = 1.0 - irregular.pause_s / irregular.cycle_s
                if x >= active:
                    paused = True
                    apnea = apnea or irregular.pause_s >= APNEA_LABEL_MIN_S
                else:
                    depth *= max(0.15, math.sin(math.pi * x / active)) * (0.6 + 0.8 * irregular.intensity)
                    rate *= 1.1
        return min(rate, 70.0), depth, paused, apnea

    def _ataxic(self, t: float) -> IrregularBreathing | None:
        for irregular in self._irregular:
            if irregular.pattern == "ataxic" and _within(t, irregular):
                return irregular
        return None

    def step(self, t0: float, t1: float) -> tuple[BodyState, FrameTruth]:
        """Body state and truth for a frame exposed over [t0, t1) seconds. Times must increase."""
        t = 0.5 * (t0 + t1)
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"Course.step times must increase ({t} after {self._last_t})")
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t

        rate, depth_target, paused, apnea = self._breathing_targets(t)
        if self._depth is None:
            self._depth = depth_target
        # Depth follows its target over ~0.5 s; stopping breathing is not instantaneous on video.
        self._depth += (0.0 if paused else depth_target - self._depth) * min(1.0, dt / 0.5)
        if paused:
            self._depth *= math.exp(-dt / 0.4)
        effective_rate = rate * self._breath_rate_mult
        if not paused:
            self._phase += effective_rate / 60.0 * dt
            if self._phase >= 1.0:
                self._phase %= 1.0
                ataxic = self._ataxic(t)
                if ataxic is not None:
                    spread = 0.3 + 0.5 * ataxic.intensity
                    self._breath_rate_mult = float(self._rng.uniform(1 - spread * 0.6, 1 + spread))
                    self._breath_depth_mult = float(self._rng.uniform(1 - spread * 0.7, 1 + spread * 0.5))
                else:
                    self._breath_rate_mult = self._breath_depth_mult = 1.0
        breath = self._depth * self._breath_depth_mult * _breath_wave(self._phase)

        state = BodyState(t=t, breath=breath)
        state.grimace = self.grimace_level(t)
        state.eye_closure = self._blink_level(t)
        state.jerk = self.jerk_displacement(t0, t1)
        twitch = int(bool(self._jerks_between(t0, t1)))

        for agitation, (freqs, phases) in zip(self._agitation, self._agitation_waves, strict=True):
            envelope = _envelope(t, agitation, 1.5)
            if envelope > 0:
                waves = np.sin(2 * np.pi * freqs * (t - agitation.onset_s) + phases).sum(axis=1) / 2.0
                state.pose += np.clip(waves, -1, 1) * envelope * max(0.4, agitation.intensity)
        for head_turn in self._head_turn:
            level = _envelope(t, head_turn, 1.5) * max(0.5, head_turn.intensity)
            state.head_yaw += -level if head_turn.side == "left" else level
        for walk in self._walk:
            if _within(t, walk):
                x = (t - walk.onset_s) / walk.duration_s
                move = (1.0 - walk.linger) / 2
                progress = x / move * 0.5 if x < move else 0.5 if x < 1 - move else 0.5 + (x - 1 + move) / move * 0.5
                state.walker = progress
                state.walker_left_to_right = walk.direction == "left_to_right"
        for night in self._night:
            level = _envelope(t, night, 3.0)
            state.light = min(state.light, 1.0 - (1.0 - night.light) * level)
            if night.infrared:
                state.infrared = max(state.infrared, level)
        for blanket in self._blanket:
            state.blanket = max(state.blanket, _envelope(t, blanket, blanket.duration_s / 3))
        for shake, (freqs, phases) in zip(self._shake, self._shake_waves, strict=True):
            if _within(t, shake):
                amp = shake.amplitude_px * max(0.3, shake.intensity) * _envelope(t, shake, 0.5)
                dx = amp * float(np.sin(2 * np.pi * freqs[0] * t + phases[0]).sum()) / 3
                dy = amp * float(np.sin(2 * np.pi * freqs[1] * t + phases[1]).sum()) / 3
                state.shake = (dx, dy)
        for noise in self._noise:
            if _within(t, noise):
                state.noise_sigma = max(state.noise_sigma, noise.sigma * max(0.3, noise.intensity))
                if noise.jpeg_quality is not None:
                    state.jpeg_quality = noise.jpeg_quality

        truth = FrameTruth(
            grimace=int(state.grimace >= GRIMACE_LABEL_THRESHOLD),
            twitch=twitch,
            apnea=int(apnea),
            resp_rate_bpm=None if paused else round(effective_rate, 2),
        )
        return state, truth

    # --- vitals ---------------------------------------------------------------------------

    def vital_targets(self, t: float) -> dict[str, float]:
        """Noise-free physiological values at ``t``: hr, sbp, dbp, temp_c, spo2 (before apnea debt)."""
        base = self.scenario.baseline
        hr, sbp, dbp, temp, spo2 = base.hr, base.sbp, base.dbp, base.temp_c, base.spo2
        for pain in self._pain:
            level = pain.intensity * (1.0 if _within(t, pain) else _ramp(t, pain, 30.0) * 0.5)
            hr += 18 * level
            sbp += 18 * level
            dbp += 9 * level
        for resp in self._resp:
            level = _ramp(t, resp, resp.ramp_s) * resp.intensity
            hr += 20 * level
            spo2 -= resp.spo2_drop * level
        for sepsis in self._sepsis:
            level = _ramp(t, sepsis, sepsis.ramp_s) * sepsis.intensity
            hr += sepsis.hr_rise * level
            sbp -= sepsis.sbp_drop * level
            dbp -= sepsis.sbp_drop * 0.6 * level
            temp += sepsis.temp_rise * level
            spo2 -= 3.0 * level
        for seizure in self._seizure:
            if _within(t, seizure):
                hr += seizure.hr_rise * seizure.intensity
                sbp += 15 * seizure.intensity
            elif t >= seizure.end_s:
                hr += seizure.hr_rise * seizure.intensity * math.exp(-(t - seizure.end_s) / 120.0)
        for agitation in self._agitation:
            level = _envelope(t, agitation, 5.0) * agitation.intensity
            hr += 15 * level
            sbp += 10 * level
        for oxygen in self._oxygen:
            spo2 += 4.0 * oxygen.intensity * _envelope(t, oxygen, 60.0)
        dbp = min(dbp, sbp - 15)
        return {"hr": hr, "sbp": sbp, "dbp": dbp, "temp_c": temp, "spo2": min(100.0, spo2)}

    def consciousness(self, t: float) -> Consciousness:
        levels = "ACVPU"
        level = levels.index(self.scenario.baseline.consciousness.value)
        for sepsis in self._sepsis:
            ramp = _ramp(t, sepsis, sepsis.ramp_s)
            if sepsis.intensity >= 0.3 and ramp > 0 and ramp >= sepsis.confusion_at:
                level = max(level, levels.index("C"))
        for seizure in self._seizure:
            if _within(t, seizure):
                level = max(level, levels.index("U"))
            elif seizure.end_s <= t < seizure.end_s + POST_ICTAL_S:
                level = max(level, levels.index("V"))
        return Consciousness(levels[level])

    def on_oxygen(self, t: float) -> bool:
        return self.scenario.baseline.on_oxygen or any(_within(t, e) for e in self._oxygen)

    def moving(self, t: float) -> bool:
        """Patient or carer movement that disturbs monitor probes."""
        return bool(
            any(_within(t, e) for e in (*self._agitation, *self._seizure, *self._blanket))
            or self._jerks_between(t - 1.0, t)
        )


CIRCULATION_DELAY_S: Final = 15
"""Lung-to-finger delay: SpO2 falls this long after breathing stops."""


class VitalsMonitor:
    """A bedside monitor sampling a :class:`Course` once per second.

    HR, RR and SpO2 every second; NIBP every ``nibp_interval_s``; temperature every
    ``temp_interval_s``; consciousness and oxygen when they change. SpO2 probe-off gaps, motion
    spikes and random missing values come from the scenario's ``monitor`` section.
    """

    def __init__(self, course: Course, rng: np.random.Generator, *, bed_id: str, start: datetime) -> None:
        self.course = course
        self.bed_id = bed_id
        self.start = start
        self._rng = rng
        monitor = course.scenario.monitor
        self._monitor = monitor
        self._rr = course.scenario.baseline.rr
        self._debt = 0.0  # oxygen debt, SpO2 points
        self._debt_history: deque[float] = deque([0.0] * CIRCULATION_DELAY_S, maxlen=CIRCULATION_DELAY_S)
        self._probe_off_until = -1.0
        self._next_nibp = 0.0
        self._next_temp = 0.0
        self._last_consciousness: Consciousness | None = None
        self._last_oxygen: bool | None = None
        self._second = 0

    def _maybe(self, value: float | None) -> float | None:
        if value is None or self._rng.random() < self._monitor.dropout:
            return None
        return value

    def readings_until(self, t: float, resp_rate_now: float | None) -> list[Vitals]:
        """Readings for every whole second up to ``t`` (seconds) not yet sampled, within the scenario."""
        readings = []
        while self._second <= t and self._second < self.course.scenario.duration_s:
            reading = self.sample(resp_rate_now)
            if reading is not None:
                readings.append(reading)
        return readings

    def sample(self, resp_rate_now: float | None) -> Vitals | None:
        """The reading for the next whole second; ``resp_rate_now`` is the course's truth at that time.

        Returns None when every measurement happens to be missing.
        """
        t = float(self._second)
        self._second += 1
        course, rng = self.course, self._rng
        targets = course.vital_targets(t)
        breathing = resp_rate_now is not None

        # Impedance RR: a smoothed breath rate that falls towards 0 during a pause.
        effective = resp_rate_now if resp_rate_now is not None else 0.0
        self._rr += (effective - self._rr) * (1.0 - math.exp(-1.0 / 8.0))
        rr = max(0.0, self._rr + rng.normal(0, 0.6))

        # Oxygen debt builds while not breathing and clears once breathing resumes.
        self._debt = self._debt + 0.35 if not breathing else self._debt * math.exp(-1.0 / 12.0)
        self._debt_history.append(self._debt)
        spo2 = targets["spo2"] - self._debt_history[0] + rng.normal(0, 0.5)

        phase = 2 * math.pi * t * (resp_rate_now or 0.0) / 60.0
        hr = targets["hr"] + 2.0 * math.sin(phase) + rng.normal(0, 1.2)

        moving = course.moving(t)
        if moving and self._monitor.motion_artifacts and rng.random() < 0.3:
            hr += rng.uniform(20, 60)  # ECG motion artefact counted as beats
            spo2 -= rng.uniform(3, 12)  # PPG motion artefact
        if self._probe_off_until <= t:
            per_second = self._monitor.spo2_probe_off_per_hour / 3600.0
            if rng.random() < per_second:
                self._probe_off_until = t + rng.uniform(10, 60)
        spo2_value: float | None = None if t < self._probe_off_until else float(np.clip(spo2, 50, 100))

        reading: dict[str, object] = {
            "hr": self._maybe(float(np.clip(round(hr), 20, 250))),
            "rr": self._maybe(float(round(rr))),
            "spo2": self._maybe(None if spo2_value is None else float(round(spo2_value))),
        }
        if t >= self._next_nibp:
            self._next_nibp = t + self._monitor.nibp_interval_s
            sbp = targets["sbp"] + rng.normal(0, 3)
            dbp = min(targets["dbp"] + rng.normal(0, 2), sbp - 10)
            reading.update(sbp=float(round(sbp)), dbp=float(round(dbp)), map=float(round(dbp + (sbp - dbp) / 3)))
        if t >= self._next_temp:
            self._next_temp = t + self._monitor.temp_interval_s
            reading["temp_c"] = round(targets["temp_c"] + rng.normal(0, 0.05), 1)
        consciousness = course.consciousness(t)
        if consciousness != self._last_consciousness:
            self._last_consciousness = consciousness
            reading["consciousness"] = consciousness
        oxygen = course.on_oxygen(t)
        if oxygen != self._last_oxygen:
            self._last_oxygen = oxygen
            reading["on_oxygen"] = oxygen
        if all(value is None for value in reading.values()):
            return None
        return Vitals(
            bed_id=self.bed_id,
            ts=self.start + timedelta(seconds=t),
            source="sim",
            **reading,
        )
