"""The alert rules: per-bed state in, the conditions that hold now out. Pure: no Kafka, no clock.

A bed's :class:`BedState` keeps what the rules need, bounded: the latest value of each vital
with its time, NEWS2 once a minute for the last hour, the last few minutes of video detections,
the current video apnea episode and the camera's state. :func:`evaluate` reads it at a given
time and returns the conditions that hold, each with its rule code, priority (IEC 60601-1-8),
kind (physiological or technical) and an explanation a nurse can read at 3 a.m. The lifecycle
(raise, escalate, acknowledge, resolve) is :mod:`alerts.lifecycle`'s job.

Rules (thresholds in :class:`RuleThresholds`, set by ``ICU_ALERT_*``):

- ``NEWS2``: aggregate 7+ high, 5-6 medium, a single parameter scoring 3 medium (RCP: urgent
  response). Vitals older than ``vitals_stale_s`` are not scored. When the monitor's RR is
  missing or stale, a recent video respiration rate of good quality stands in, marked
  ``rr_source: video``.
- ``APNEA_VIDEO``: video apnea decided present for ``apnea_s`` (20 s) running: high. Here and
  below a video finding is present when the detection lists it (``Detection.findings``, the
  model's fitted decision rules), or, from a producer without decision rules, when its
  probability is 0.5 or more.
- ``SEIZURE_VIDEO``: twitching in at least ``seizure_share`` of the last ``seizure_window_s``
  seconds (rhythmic, sustained): high.
- ``JERK_CLUSTER``: ``jerk_count`` or more separate twitch episodes in ``jerk_window_s``,
  short of the seizure pattern: medium.
- ``PAIN_SUSTAINED``: grimace in at least ``pain_share`` of the last ``pain_window_s``: low
  (pain assessment due), medium when heart rate or systolic pressure rose ``pain_rise_pct``
  over the bed's baseline at the same time.
- ``DETERIORATION_TREND``: NEWS2 up ``trend_news2_rise`` points within the hour, or the video
  respiration rate up ``trend_rr_rise`` breaths/min over ``trend_window_s``: medium.
- Technical, kept apart: ``CAMERA_LOST`` (camera lost or stopped), ``VITALS_STALE`` (no vitals
  for ``vitals_stale_s``), ``VIDEO_QUALITY_LOW`` (most detections made from windows with missing
  frames): low.
"""

from __future__ import annotations

import bisect
import functools
import operator
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alerts.news2 import News2, News2Error, score_news2
from icu.contracts import (
    AlertKind,
    AlertPriority,
    CameraState,
    CameraStatus,
    Detection,
    Finding,
    Vitals,
    finding_present,
)

VITAL_NAMES = ("hr", "rr", "spo2", "sbp", "temp_c", "on_oxygen", "consciousness")
SMOOTHED = ("hr", "rr", "spo2", "sbp")  # monitored numbers: scored as the median of the last minute
# How long a reading stands for the patient: continuous monitoring goes stale within minutes;
# cuff pressure, temperature, oxygen and ACVPU are charted every so often and last longer.
STALE_AFTER_S = {"hr": 300.0, "rr": 300.0, "spo2": 300.0, "sbp": 3600.0, "temp_c": 14400.0, "on_oxygen": 14400.0,
                 "consciousness": 14400.0}  # fmt: skip
VIDEO_KEEP_S = 600.0  # detections kept per bed: the longest rule window, with room
NEWS2_KEEP_S = 3600.0
TREND_EVERY_S = 5.0  # the video respiration-rate trend (a ten-minute median) is re-read this often


@dataclass(frozen=True)
class RuleThresholds:
    vitals_stale_s: float = 300.0
    smooth_s: float = 60.0
    video_rr_max_age_s: float = 30.0
    video_rr_min_quality: float = 0.5
    apnea_s: float = 20.0
    seizure_window_s: float = 10.0
    seizure_share: float = 0.8
    jerk_window_s: float = 300.0
    jerk_count: int = 5
    pain_window_s: float = 120.0
    pain_share: float = 0.2
    pain_min_s: float = 60.0
    pain_rise_pct: float = 15.0
    trend_news2_rise: int = 3
    trend_window_s: float = 600.0
    trend_rr_rise: float = 8.0
    quality_window_s: float = 120.0
    quality_bad_share: float = 0.8


@dataclass(frozen=True)
class Condition:
    """A rule that holds now."""

    code: str
    priority: AlertPriority
    kind: AlertKind
    explanation: str
    evidence: dict[str, Any]
    news2: int | None = None


@dataclass
class VideoSample:
    t: float
    grimace: float
    twitch: float
    apnea: float
    resp_rate: float | None
    quality: float | None
    degraded: bool
    findings: list[str] | None = None  # decided present (Detection.findings); None: threshold the probabilities
    # Running totals over the bed's samples up to and including this one (not serialised; see
    # `_count`): a rule window's count is a difference of two totals, not a scan per evaluation.
    grimacing: int = 0
    twitching: int = 0
    jerk_starts: int = 0
    degraded_count: int = 0

    def counted_after(self, previous: VideoSample | None) -> VideoSample:
        grimace, twitch = self.present("grimace"), self.present("twitch")
        was_twitching = previous is not None and previous.present("twitch")
        self.grimacing = (previous.grimacing if previous else 0) + grimace
        self.twitching = (previous.twitching if previous else 0) + twitch
        self.jerk_starts = (previous.jerk_starts if previous else 0) + (twitch and not was_twitching)
        self.degraded_count = (previous.degraded_count if previous else 0) + self.degraded
        return self

    def present(self, finding: str) -> bool:
        """Whether the detection had ``finding`` present (see the module's rules)."""
        probability: float = getattr(self, finding)
        return finding_present(finding, self.findings, probability)


@dataclass
class BedState:
    """Everything the rules know about one bed; JSON-serialisable (it lives in a Faust table)."""

    bed_id: str
    clock: float = 0.0  # the newest event time seen, POSIX seconds
    vitals: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)  # name -> [(time, value)], last minute
    spo2_scale: int = 1
    last_vitals_t: float | None = None
    news2: list[tuple[float, int]] = field(default_factory=list)  # (time, score), ~1 per minute
    hr_history: list[tuple[float, float]] = field(default_factory=list)
    sbp_history: list[tuple[float, float]] = field(default_factory=list)
    video: list[VideoSample] = field(default_factory=list)
    apnea_since: float | None = None
    camera_state: str | None = None
    camera_t: float | None = None
    # The video respiration-rate trend, recomputed once per TREND_EVERY_S of sample time (it is a
    # median over ten minutes of samples, too dear for every message); not serialised.
    trend_bucket: int | None = None
    trend: Condition | None = None
    # Mirrors kept beside the series they index, so the rules run per message search and take
    # medians in C rather than build lists in Python: each smoothed vital's kept values in
    # sorted order, and the video samples' times. Changed only where the series change (the
    # add_* functions), rebuilt from the series on construction; not serialised.
    sorted_values: dict[str, list[Any]] = field(default_factory=dict)
    video_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sorted_values = {name: sorted(v for _, v in self.vitals[name]) for name in SMOOTHED if name in self.vitals}
        self.video_times = [sample.t for sample in self.video]

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: this runs for every snapshot of every bed, and asdict
        # deep-copies each of the hundreds of samples.
        return {
            "bed_id": self.bed_id,
            "clock": self.clock,
            "vitals": {k: [list(p) for p in series] for k, series in self.vitals.items()},
            "spo2_scale": self.spo2_scale,
            "last_vitals_t": self.last_vitals_t,
            "news2": [list(p) for p in self.news2],
            "hr_history": [list(p) for p in self.hr_history],
            "sbp_history": [list(p) for p in self.sbp_history],
            "video": [
                [v.t, v.grimace, v.twitch, v.apnea, v.resp_rate, v.quality, v.degraded, v.findings] for v in self.video
            ],
            "apnea_since": self.apnea_since,
            "camera_state": self.camera_state,
            "camera_t": self.camera_t,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BedState:
        values = dict(data)
        values["vitals"] = {k: [(float(t), v) for t, v in series] for k, series in values.get("vitals", {}).items()}
        values["news2"] = [(float(t), int(s)) for t, s in values.get("news2", [])]
        values["hr_history"] = [(float(t), float(v)) for t, v in values.get("hr_history", [])]
        values["sbp_history"] = [(float(t), float(v)) for t, v in values.get("sbp_history", [])]
        video: list[VideoSample] = []
        for v in values.get("video", []):
            video.append(VideoSample(*v).counted_after(video[-1] if video else None))
        values["video"] = video
        return cls(**values)


# --- state updates -----------------------------------------------------------------------------


def add_vitals(state: BedState, vitals: Vitals, thresholds: RuleThresholds) -> None:
    t = vitals.ts.timestamp()
    for name in VITAL_NAMES:
        value = getattr(vitals, name)
        if value is None:
            continue
        series = state.vitals.setdefault(name, [])
        if series and t < series[-1][0]:
            continue  # late reading: the series stays in time order
        value = value.value if hasattr(value, "value") else value
        series.append((t, value))
        # Keep the last minute, and always the newest reading (intermittent ones last longer).
        # The series is time-ordered: cut its head in place rather than rebuild it per reading.
        cut = min(_first_from(series, t - thresholds.smooth_s), len(series) - 1)
        if name in SMOOTHED:
            ordered = state.sorted_values.setdefault(name, [])
            bisect.insort(ordered, value)
            _drop_sorted(ordered, series[:cut])
        del series[:cut]
    state.spo2_scale = vitals.spo2_scale
    state.last_vitals_t = max(state.last_vitals_t or t, t)
    if vitals.hr is not None:
        _append_series(state.hr_history, t, vitals.hr, keep_s=NEWS2_KEEP_S, every_s=30.0)
    if vitals.sbp is not None:
        _append_series(state.sbp_history, t, vitals.sbp, keep_s=NEWS2_KEEP_S, every_s=30.0)
    state.clock = max(state.clock, t)
    if not state.news2 or t - state.news2[-1][0] >= 60.0:  # once a minute, from smoothed vitals: a trend
        score = current_news2(state, thresholds)
        if score is not None and score.complete:
            state.news2.append((t, score.score))
            del state.news2[: _first_from(state.news2, t - NEWS2_KEEP_S)]


def _drop_sorted(ordered: list[Any], readings: list[tuple[float, Any]]) -> None:
    """Take the values of ``readings`` out of ``ordered`` (sorted values that hold them)."""
    for _, value in readings:
        del ordered[bisect.bisect_left(ordered, value)]


def _first_from(series: list[tuple[float, Any]], t: float) -> int:
    """Index of the first (time, value) point at or after ``t`` in a time-ordered series. The
    probe is the 1-tuple ``(t,)``, which sorts before every point of time ``t``: the comparisons
    stay in C, where a ``key=`` function would call Python for each (the rules run per message)."""
    return bisect.bisect_left(series, (t,))


def _append_series(series: list[tuple[float, float]], t: float, value: float, *, keep_s: float, every_s: float) -> None:
    if not series or t - series[-1][0] >= every_s:
        series.append((t, value))
    del series[: _first_from(series, t - keep_s)]


def add_detection(state: BedState, detection: Detection, thresholds: RuleThresholds | None = None) -> None:
    t = detection.ts.timestamp()
    if state.video and t <= state.video[-1].t:
        return  # a redelivered or late detection: the rules read a time-ordered series
    quality = detection.baseline.resp_quality if detection.baseline else None
    decided = None if detection.findings is None else [finding.value for finding in detection.findings]
    sample = VideoSample(
        t, detection.grimace, detection.twitch, detection.apnea, detection.resp_rate, quality, detection.degraded,
        decided,
    )  # fmt: skip
    state.video.append(sample.counted_after(state.video[-1] if state.video else None))
    state.video_times.append(t)
    if state.video_times[0] < t - VIDEO_KEEP_S:
        cut = bisect.bisect_left(state.video_times, t - VIDEO_KEEP_S)
        del state.video[:cut], state.video_times[:cut]
    # The trend is re-read as the samples cross each TREND_EVERY_S of their own time: when the
    # rules are evaluated (messages, ticks) does not move it, so replays decide the same.
    bucket = int(t // TREND_EVERY_S)
    if state.trend_bucket != bucket:
        state.trend_bucket = bucket
        state.trend = _video_rr_trend(state, t, thresholds or RuleThresholds())
    if detection.has(Finding.APNEA):
        if state.apnea_since is None:
            state.apnea_since = t
    else:
        state.apnea_since = None
    state.clock = max(state.clock, t)


def add_camera_status(state: BedState, status: CameraStatus) -> None:
    t = status.ts.timestamp()
    if state.camera_t is None or t >= state.camera_t:
        state.camera_state, state.camera_t = status.state.value, t
    state.clock = max(state.clock, t)


# --- rules -------------------------------------------------------------------------------------


def _smoothed(state: BedState, name: str, series: list[tuple[float, Any]], now: float, smooth_s: float) -> float:
    """The median of the readings of the minute before ``now`` (always the newest one)."""
    first = min(_first_from(series, now - smooth_s), len(series) - 1)
    # The kept series is at most a minute older than its newest reading, so the window is all
    # of it or all but its first few readings: take those out of a copy of its sorted values.
    ordered = state.sorted_values[name]
    if first:
        ordered = ordered.copy()
        _drop_sorted(ordered, series[:first])
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return round(float(median), 1)


def video_rate(state: BedState, now: float, thresholds: RuleThresholds) -> float | None:
    """The newest learned video respiration rate, if recent and the signal is good."""
    for sample in reversed(state.video):
        if now - sample.t > thresholds.video_rr_max_age_s:
            return None
        usable = sample.resp_rate is not None and not sample.degraded and not sample.present("apnea")
        if usable and (sample.quality is None or sample.quality >= thresholds.video_rr_min_quality):
            return sample.resp_rate
    return None


def fresh_vitals(state: BedState, now: float, thresholds: RuleThresholds) -> dict[str, Any]:
    """Every vital as it stands at ``now``, None where stale or absent: the median of the last
    minute's readings for monitored numbers (a motion artefact or a probe slipping for a few
    seconds does not score), the newest reading for charted ones."""
    values: dict[str, Any] = dict.fromkeys(VITAL_NAMES)
    for name, series in state.vitals.items():
        if not series or now - series[-1][0] > STALE_AFTER_S.get(name, thresholds.vitals_stale_s):
            continue
        values[name] = _smoothed(state, name, series, now, thresholds.smooth_s) if name in SMOOTHED else series[-1][1]
    return values


def current_news2(
    state: BedState, thresholds: RuleThresholds, now: float | None = None, values: dict[str, Any] | None = None
) -> News2 | None:
    """NEWS2 of the bed's fresh vitals (video RR standing in for a missing monitor RR)."""
    at = state.clock if now is None else now
    values = fresh_vitals(state, at, thresholds) if values is None else values
    if all(v is None for v in values.values()):
        return None
    rr = values["rr"]
    if rr is None:
        rr = video_rate(state, at, thresholds)
    arguments: dict[str, Any] = {
        "rr": rr,
        "spo2": values["spo2"],
        "spo2_scale": 2 if state.spo2_scale == 2 else 1,
        "on_oxygen": values["on_oxygen"],
        "sbp": values["sbp"],
        "hr": values["hr"],
        "consciousness": values["consciousness"],
        "temp_c": values["temp_c"],
    }
    try:
        return _score_news2(**arguments)
    except News2Error:
        # SpO2 on scale 2 above 92% scores by oxygen, which the monitor did not say: leave SpO2 out.
        arguments["spo2"] = None
        return _score_news2(**arguments)


# NEWS2 is a pure function of a handful of rounded values, which stay the same from one message
# to the next far more often than not: the rules run at every message, so scores are remembered.
# (News2 is immutable; a raised News2Error is not remembered.)
_score_news2 = functools.lru_cache(maxsize=16384)(score_news2)


def evaluate(state: BedState, now: float, thresholds: RuleThresholds) -> list[Condition]:
    """The conditions that hold for the bed at ``now`` (POSIX seconds)."""
    conditions = [
        *_news2_rules(state, now, thresholds),
        *_video_rules(state, now, thresholds),
        *_technical_rules(state, now, thresholds),
    ]
    return conditions


def _news2_rules(state: BedState, now: float, thresholds: RuleThresholds) -> Iterable[Condition]:
    values = fresh_vitals(state, now, thresholds)
    score = current_news2(state, thresholds, now, values)
    if score is None:
        return
    evidence: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if values["rr"] is None and "respiration_rate" in score.parameters:
        evidence["rr"] = round(video_rate(state, now, thresholds) or 0.0, 1)
        evidence["rr_source"] = "video"
    evidence["news2"] = score.score
    evidence["news2_complete"] = score.complete
    points = ", ".join(f"{name} {p}" for name, p in score.parameters.items() if p)
    band: tuple[AlertPriority, str] | None = None
    if score.score >= 7:
        band = AlertPriority.HIGH, "high risk (7 or more): emergency response"
    elif score.score >= 5:
        band = AlertPriority.MEDIUM, "medium risk (5-6): urgent response"
    elif score.red_parameters:
        band = AlertPriority.MEDIUM, f"a single red score ({', '.join(score.red_parameters)} scores 3)"
    if band is not None:
        priority, meaning = band
        source = " RR from video." if evidence.get("rr_source") == "video" else ""
        partial = "" if score.complete else " Not every parameter is charted: the score is a lower bound."
        yield Condition(
            "NEWS2",
            priority,
            AlertKind.PHYSIOLOGICAL,
            f"NEWS2 {score.score}, {meaning}. Points: {points}.{source}{partial}",
            evidence,
            news2=score.score,
        )
    recent = state.news2[_first_from(state.news2, now - NEWS2_KEEP_S) :]
    if len(recent) >= 2:
        lowest = min(s for _, s in recent[:-1])
        latest = recent[-1][1]
        if latest - lowest >= thresholds.trend_news2_rise:
            yield Condition(
                "DETERIORATION_TREND",
                AlertPriority.MEDIUM,
                AlertKind.PHYSIOLOGICAL,
                f"NEWS2 rose from {lowest} to {latest} within the hour.",
                {"news2_from": lowest, "news2": latest},
                news2=latest,
            )
            return
    if state.trend is not None and now - state.video[-1].t <= thresholds.video_rr_max_age_s:
        yield state.trend  # while the video that showed it is current


_resp_rate = operator.attrgetter("resp_rate")


def _video_rr_trend(state: BedState, now: float, thresholds: RuleThresholds) -> Condition | None:
    """DETERIORATION_TREND when the median video rate of the window's last quarter is
    ``trend_rr_rise`` above that of its first quarter."""
    first = bisect.bisect_left(state.video_times, now - thresholds.trend_window_s)
    rates = list(filter(None, map(_resp_rate, state.video[first:])))  # in C: ten minutes of samples
    if len(rates) < 20:
        return None
    head = statistics.median(rates[: len(rates) // 4])
    tail = statistics.median(rates[-len(rates) // 4 :])
    if tail - head < thresholds.trend_rr_rise:
        return None
    return Condition(
        "DETERIORATION_TREND",
        AlertPriority.MEDIUM,
        AlertKind.PHYSIOLOGICAL,
        f"Video respiration rate climbed from {head:.0f} to {tail:.0f} breaths/min over "
        f"{thresholds.trend_window_s / 60:.0f} min.",
        {"video_rr_from": round(head, 1), "video_rr": round(tail, 1)},
    )


def _video_rules(state: BedState, now: float, thresholds: RuleThresholds) -> Iterable[Condition]:
    if not state.video or now - state.video[-1].t > thresholds.video_rr_max_age_s:
        return  # no recent video: the camera rules speak instead
    if state.apnea_since is not None and now - state.apnea_since >= thresholds.apnea_s:
        seconds = now - state.apnea_since
        yield Condition(
            "APNEA_VIDEO",
            AlertPriority.HIGH,
            AlertKind.PHYSIOLOGICAL,
            f"No breathing movement seen on video for {seconds:.0f} s.",
            {"apnea_s": round(seconds, 1), "apnea_probability": round(state.video[-1].apnea, 3)},
        )
    video = state.video
    expected = max(1, round(thresholds.seizure_window_s))
    twitching = _count(video, _start(state, now - thresholds.seizure_window_s), "twitching")
    seizure = twitching >= thresholds.seizure_share * expected
    if seizure:
        yield Condition(
            "SEIZURE_VIDEO",
            AlertPriority.HIGH,
            AlertKind.PHYSIOLOGICAL,
            f"Rhythmic twitching in {twitching} of the last {expected} s: possible seizure.",
            {"twitch_seconds": twitching, "window_s": expected},
        )
    episodes = _count(video, _start(state, now - thresholds.jerk_window_s), "jerk_starts")
    if not seizure and episodes >= thresholds.jerk_count:
        yield Condition(
            "JERK_CLUSTER",
            AlertPriority.MEDIUM,
            AlertKind.PHYSIOLOGICAL,
            f"{episodes} separate jerks in the last {thresholds.jerk_window_s / 60:.0f} min.",
            {"twitch_count": episodes, "window_s": thresholds.jerk_window_s},
        )
    first = _start(state, now - thresholds.pain_window_s)
    if first < len(video) and video[-1].t - video[first].t >= thresholds.pain_min_s:
        burden = _count(video, first, "grimacing") / (len(video) - first)
        if burden >= thresholds.pain_share:
            rise = _vital_rise(state, now, thresholds)
            priority = AlertPriority.MEDIUM if rise else AlertPriority.LOW
            extra = f" with {rise}" if rise else ""
            yield Condition(
                "PAIN_SUSTAINED",
                priority,
                AlertKind.PHYSIOLOGICAL,
                f"Grimacing {burden:.0%} of the last {thresholds.pain_window_s / 60:.0f} min{extra}: "
                "pain assessment due.",
                {"grimace_burden": round(burden, 3), **({"vital_rise": rise} if rise else {})},
            )


def _start(state: BedState, t: float) -> int:
    """Index of the first video sample after ``t`` (the samples are time-ordered)."""
    return bisect.bisect_right(state.video_times, t)


def _count(video: list[VideoSample], first: int, total: str) -> int:
    """How many samples from ``video[first]`` on count towards ``total`` (a running total of
    :class:`VideoSample`). A jerk already under way at the window's first sample counts as one
    that starts there."""
    if first >= len(video):
        return 0
    head = video[first]
    return getattr(video[-1], total) - getattr(head, total) + int(_COUNTS_AT_HEAD[total](head))


# Whether a window's first sample counts towards each running total (built once, not per call).
_COUNTS_AT_HEAD: dict[str, Callable[[VideoSample], bool]] = {
    "grimacing": lambda s: s.present("grimace"),
    "twitching": lambda s: s.present("twitch"),
    "jerk_starts": lambda s: s.present("twitch"),
    "degraded_count": lambda s: s.degraded,
}


def _vital_rise(state: BedState, now: float, thresholds: RuleThresholds) -> str | None:
    """'heart rate +20%' when HR or SBP now is ``pain_rise_pct`` over the bed's median of the
    preceding hour (before the pain window), else None."""
    for label, series in (("heart rate", state.hr_history), ("systolic pressure", state.sbp_history)):
        before = [v for t, v in series if t < now - thresholds.pain_window_s]
        recent = [v for t, v in series if t >= now - 60.0]
        if len(before) >= 3 and recent:
            baseline = statistics.median(before)
            rise = (recent[-1] - baseline) / baseline * 100 if baseline > 0 else 0.0
            if rise >= thresholds.pain_rise_pct:
                return f"{label} +{rise:.0f}%"
    return None


def _technical_rules(state: BedState, now: float, thresholds: RuleThresholds) -> Iterable[Condition]:
    if state.camera_state in (CameraState.LOST.value, CameraState.STOPPED.value):
        yield Condition(
            "CAMERA_LOST",
            AlertPriority.LOW,
            AlertKind.TECHNICAL,
            f"Camera {state.camera_state}: no video findings for this bed.",
            {"camera_state": state.camera_state},
        )
    if state.last_vitals_t is not None and now - state.last_vitals_t > thresholds.vitals_stale_s:
        age = now - state.last_vitals_t
        yield Condition(
            "VITALS_STALE",
            AlertPriority.LOW,
            AlertKind.TECHNICAL,
            f"No vital signs for {age / 60:.0f} min: NEWS2 cannot be scored.",
            {"vitals_age_s": round(age)},
        )
    first = _start(state, now - thresholds.quality_window_s)
    if len(state.video) - first >= thresholds.quality_window_s / 2:
        # Frames missing from the camera's stream; the baseline's own quality index is low too
        # often on a still patient to stand for the video as a whole.
        bad = _count(state.video, first, "degraded_count") / (len(state.video) - first)
        if bad >= thresholds.quality_bad_share:
            yield Condition(
                "VIDEO_QUALITY_LOW",
                AlertPriority.LOW,
                AlertKind.TECHNICAL,
                f"Video signal poor in {bad:.0%} of the last {thresholds.quality_window_s / 60:.0f} min: "
                "video findings are unreliable.",
                {"bad_share": round(bad, 3)},
            )
