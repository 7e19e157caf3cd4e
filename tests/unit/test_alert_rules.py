"""Alert rules and lifecycle on simulated patients: what fires, what stays quiet, and when."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from alerts.lifecycle import LifecycleSettings, step
from alerts.processor import AlertProcessor, BedRecord
from alerts.rules import BedState, Condition, RuleThresholds, add_detection, add_vitals, current_news2, evaluate
from alerts.scenario_feed import scenario_messages
from icu.contracts import (
    AckAction,
    Alert,
    AlertAck,
    AlertKind,
    AlertPriority,
    AlertState,
    CameraState,
    CameraStatus,
    Detection,
    Finding,
    Vitals,
)
from simulator.scenario import load_scenario
from tests import samples

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

# What each library scenario must raise (rule codes, first versions), from simulated vitals and
# 1 Hz detections (truth through a detector with seeded isolated false positives).
EXPECTED = {
    "stable": set(),
    "agitation": set(),
    "cheyne-stokes": set(),  # 15 s pauses: below the 20 s apnea rule
    "ataxic-breathing": set(),
    "nuisance-blanket": set(),
    "nuisance-camera-shake": set(),
    "nuisance-head-turn": set(),
    "nuisance-night": set(),
    "nuisance-noise": set(),
    "nuisance-walk-through": set(),
    "apnea": {"APNEA_VIDEO", "NEWS2", "DETERIORATION_TREND"},  # the SpO2 dips after the apneas
    "seizure": {"SEIZURE_VIDEO", "NEWS2", "DETERIORATION_TREND"},  # post-ictal drowsiness: V scores 3
    "myoclonus": {"JERK_CLUSTER"},
    "pain": {"PAIN_SUSTAINED"},
    "respiratory-deterioration": {"NEWS2", "DETERIORATION_TREND"},
    "sepsis": {"NEWS2", "DETERIORATION_TREND"},
}


def run(name: str, processor: AlertProcessor | None = None, seed: int = 1) -> list[Alert]:
    processor = processor or AlertProcessor()
    record = BedRecord.new("icu1-01")
    out: list[Alert] = []
    for message in scenario_messages(load_scenario(name), bed_id="icu1-01", start=START, seed=seed):
        out += processor.on_message(record, message, wall=message.ts.timestamp())
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_scenario_raises_what_it_should_and_nothing_else(name: str) -> None:
    versions = run(name)
    raised = {a.code for a in versions if a.version == 1}
    assert raised == EXPECTED[name], [(a.code, a.version, a.state.value, a.explanation) for a in versions]
    for alert in versions:
        assert alert.explanation
        assert alert.kind is AlertKind.PHYSIOLOGICAL


def test_apnea_raises_high_priority_at_20_seconds_for_each_long_apnea_only() -> None:
    scenario = load_scenario("apnea")
    apneas = [e for e in scenario.episodes if e.kind == "apnea"]
    raised = [a for a in run("apnea") if a.code == "APNEA_VIDEO" and a.version == 1]
    long_ones = [e for e in apneas if e.duration_s >= 20]
    assert len(raised) == len(long_ones) == 2  # the 12 s apnea raises nothing
    for alert, episode in zip(raised, long_ones, strict=True):
        assert alert.priority is AlertPriority.HIGH
        delay = (alert.raised_at - START).total_seconds() - episode.onset_s
        assert 20 <= delay <= 23  # 20 s of apnea seen (detections are 1 Hz, labels lag a breath)


def test_versions_are_contiguous_and_ids_are_stable_across_a_rerun() -> None:
    first, second = run("seizure"), run("seizure")
    assert [(a.alert_id, a.version, a.state) for a in first] == [(a.alert_id, a.version, a.state) for a in second]
    by_id: dict[uuid.UUID, list[int]] = {}
    for alert in first:
        by_id.setdefault(alert.alert_id, []).append(alert.version)
    for versions in by_id.values():
        assert versions == list(range(1, len(versions) + 1))


def _condition(code: str = "APNEA_VIDEO", priority: AlertPriority = AlertPriority.HIGH) -> Condition:
    return Condition(code, priority, AlertKind.PHYSIOLOGICAL, "test", {"apnea_s": 21.0})


def test_escalation_hysteresis_and_resolution_timings() -> None:
    settings = LifecycleSettings(hold_s=60, escalate_after_s={"high": 30, "medium": 120, "low": 600, "info": 3600})
    alerts: dict = {}
    t0 = START.timestamp()
    [raised] = step("b", alerts, [_condition()], t0, settings)
    assert (raised.version, raised.state) == (1, AlertState.OPEN)
    assert step("b", alerts, [_condition()], t0 + 29, settings) == []
    [escalated] = step("b", alerts, [_condition()], t0 + 30, settings)
    assert (escalated.version, escalated.state, escalated.escalation_level) == (2, AlertState.ESCALATED, 1)
    [again] = step("b", alerts, [_condition()], t0 + 60, settings)
    assert again.escalation_level == 2
    # Clear for 59 s, back for a moment: no resolution (hysteresis), the clock starts again.
    assert step("b", alerts, [], t0 + 61, settings) == []
    assert step("b", alerts, [], t0 + 119, settings) == []
    step("b", alerts, [_condition()], t0 + 120, settings)
    assert step("b", alerts, [], t0 + 125, settings) == []
    assert step("b", alerts, [], t0 + 184, settings) == []
    [resolved] = step("b", alerts, [], t0 + 185, settings)
    assert resolved.state is AlertState.RESOLVED
    assert resolved.resolved_at == datetime.fromtimestamp(t0 + 185, UTC)
    assert alerts == {}
    [recurrence] = step("b", alerts, [_condition()], t0 + 200, settings)
    assert recurrence.version == 1
    assert recurrence.alert_id != raised.alert_id  # a new episode is a new alert


def test_acknowledge_stops_escalation_and_a_capped_snooze_reopens_it() -> None:
    processor = AlertProcessor(lifecycle=LifecycleSettings(max_snooze_s=600))
    record = BedRecord.new("b")
    t0 = START.timestamp()
    [raised] = _apply(processor, record, t0, [_condition()])
    ack = AlertAck(bed_id="b", ack_id=uuid.uuid4(), alert_id=raised.alert_id, user="nurse.a",
                   ts=START + timedelta(seconds=10), action=AckAction.ACKNOWLEDGE)  # fmt: skip
    [acknowledged], problem = processor.on_ack(record, ack, wall=t0 + 10)
    assert problem is None
    assert (acknowledged.state, acknowledged.acknowledged_by, acknowledged.version) == (
        AlertState.ACKNOWLEDGED, "nurse.a", 2)  # fmt: skip
    assert _apply(processor, record, t0 + 300, [_condition()]) == []  # acknowledged: no escalation
    snooze = AlertAck(bed_id="b", ack_id=uuid.uuid4(), alert_id=raised.alert_id, user="nurse.b",
                      ts=START + timedelta(seconds=400), action=AckAction.SNOOZE, snooze_s=3600,
                      reason="family at bedside")  # fmt: skip
    [snoozed], _ = processor.on_ack(record, snooze, wall=t0 + 400)
    assert snoozed.snoozed_until == START + timedelta(seconds=400 + 600)  # capped at 10 min
    assert _apply(processor, record, t0 + 999, [_condition()]) == []
    [reopened] = _apply(processor, record, t0 + 1000, [_condition()])
    assert reopened.state is AlertState.OPEN
    assert "Snooze ended" in reopened.explanation
    unknown = ack.model_copy(update={"alert_id": uuid.uuid4(), "ack_id": uuid.uuid4()})
    assert processor.on_ack(record, unknown, wall=t0 + 1001)[0] == []


def test_a_rise_in_priority_reopens_an_acknowledged_alert() -> None:
    settings = LifecycleSettings()
    alerts: dict = {}
    t0 = START.timestamp()
    step("b", alerts, [_condition("NEWS2", AlertPriority.MEDIUM)], t0, settings)
    alerts["NEWS2"].state = AlertState.ACKNOWLEDGED.value
    assert step("b", alerts, [_condition("NEWS2", AlertPriority.MEDIUM)], t0 + 5, settings) == []
    [worse] = step("b", alerts, [_condition("NEWS2", AlertPriority.HIGH)], t0 + 10, settings)
    assert (worse.state, worse.priority, worse.version) == (AlertState.OPEN, AlertPriority.HIGH, 2)
    assert step("b", alerts, [_condition("NEWS2", AlertPriority.MEDIUM)], t0 + 15, settings) == []  # no downgrade


def _apply(processor: AlertProcessor, record: BedRecord, t: float, conditions: list[Condition]) -> list[Alert]:
    record.now = max(record.now, t)
    return step(record.rules.bed_id, record.alerts, conditions, t, processor.lifecycle)


def test_video_respiration_rate_stands_in_for_a_missing_monitor_rr() -> None:
    state = BedState("b")
    thresholds = RuleThresholds()
    vitals = Vitals(bed_id="b", ts=START, source="sim", hr=80.0, spo2=93.0)  # the monitor has no RR
    add_vitals(state, vitals, thresholds)
    detection = samples.detection(ts=START + timedelta(seconds=1)).model_copy(update={"resp_rate": 26.0})
    add_detection(state, detection)
    score = current_news2(state, thresholds, START.timestamp() + 1)
    assert score is not None
    assert score.parameters["respiration_rate"] == 3  # 25 or more, from the video's 26 breaths/min
    [news2] = [c for c in evaluate(state, START.timestamp() + 1, thresholds) if c.code == "NEWS2"]
    assert news2.evidence["rr_source"] == "video"
    assert news2.evidence["rr"] == 26.0
    assert "RR from video" in news2.explanation
    assert news2.priority is AlertPriority.MEDIUM  # 3 (RR) + 2 (SpO2 93) = 5


def test_technical_alerts_are_kept_apart_and_ticks_move_time_without_messages() -> None:
    processor = AlertProcessor()
    record = BedRecord.new("b")
    t0 = START.timestamp()
    vitals = Vitals(bed_id="b", ts=START, source="sim", hr=80, rr=16, spo2=97)
    assert processor.on_message(record, vitals, wall=t0) == []
    lost = CameraStatus.model_validate({**samples.camera_status().model_dump(), "bed_id": "b", "ts": START,
                                        "state": CameraState.LOST})  # fmt: skip
    [camera] = processor.on_message(record, lost, wall=t0)
    assert (camera.code, camera.kind, camera.priority) == ("CAMERA_LOST", AlertKind.TECHNICAL, AlertPriority.LOW)
    versions = processor.on_tick(record, wall=t0 + 301)  # five minutes of silence from the monitor
    assert [(a.code, a.kind) for a in versions if a.version == 1] == [("VITALS_STALE", AlertKind.TECHNICAL)]


def test_bed_state_survives_json_as_the_table_stores_it() -> None:
    processor = AlertProcessor()
    live, restored = BedRecord.new("icu1-01"), None
    messages = list(scenario_messages(load_scenario("apnea"), bed_id="icu1-01", start=START, seed=1))
    out_live, out_restored = [], []
    for k, message in enumerate(messages):
        out_live += processor.on_message(live, message, wall=message.ts.timestamp())
        if k == 500:
            restored = BedRecord.from_dict(json.loads(json.dumps(live.to_dict())))
        elif restored is not None:
            out_restored += processor.on_message(restored, message, wall=message.ts.timestamp())
    assert restored is not None
    tail = [a for a in out_live if a.updated_at > messages[500].ts]
    assert [(a.alert_id, a.version, a.state) for a in out_restored] == [(a.alert_id, a.version, a.state) for a in tail]
    assert out_restored  # the apneas after message 500 raised and resolved alerts


def test_vitals_and_detections_out_of_step_by_a_few_seconds_give_the_same_alerts() -> None:
    # Two topics, no order between them: within each 20 s block all vitals come before the
    # detections (each stream still in order). The reorder buffer (here allowed 30 s) restores
    # event time; without it (max_skew_s=0) the alerts differ.
    messages = list(scenario_messages(load_scenario("apnea"), bed_id="icu1-01", start=START, seed=1))
    shuffled: list[Vitals | Detection] = []
    for block in range(0, len(messages), 40):
        chunk = messages[block : block + 40]
        shuffled += [m for m in chunk if isinstance(m, Vitals)] + [m for m in chunk if isinstance(m, Detection)]

    def versions(
        stream: list[Vitals | Detection], processor: AlertProcessor
    ) -> list[tuple[uuid.UUID, int, AlertState]]:
        record = BedRecord.new("icu1-01")
        out: list[Alert] = []
        for m in stream:
            out += processor.on_message(record, m, wall=0.0)
        return [(a.alert_id, a.version, a.state) for a in out]

    buffered = AlertProcessor(max_skew_s=30.0)
    in_order = versions(messages, buffered)
    assert in_order
    assert versions(shuffled, buffered) == in_order
    assert versions(shuffled, AlertProcessor(max_skew_s=0.0, reorder_min_wait_s=0.0)) != in_order


def test_a_fast_replay_read_a_topic_ahead_gives_the_same_alerts() -> None:
    # A replay at 30x read by a busy consumer: the detections arrive 1 s of wall time (30 s of
    # event time, far past max_skew_s) after the vitals of the same instant. The wall-clock
    # floor keeps the vitals waiting; without it they are applied first and the alerts differ.
    messages = list(scenario_messages(load_scenario("apnea"), bed_id="icu1-01", start=START, seed=1))
    t0 = messages[0].ts.timestamp()
    speed, lag_s = 30.0, 1.0
    arrivals = sorted(
        ((m.ts.timestamp() - t0) / speed + (lag_s if isinstance(m, Detection) else 0.0), k, m)
        for k, m in enumerate(messages)
    )

    def versions(processor: AlertProcessor, timed: list[tuple[float, int, Vitals | Detection]]) -> list[tuple]:
        record = BedRecord.new("icu1-01")
        out: list[Alert] = []
        for wall, _, m in timed:
            out += processor.on_message(record, m, wall=wall)
        return [(a.code, a.version, a.state, a.updated_at) for a in out]

    in_order = versions(AlertProcessor(), [(float(k), k, m) for k, m in enumerate(messages)])
    assert in_order
    assert versions(AlertProcessor(), arrivals) == in_order
    assert versions(AlertProcessor(reorder_min_wait_s=0.0), arrivals) != in_order


def test_an_escalated_alert_keeps_its_own_explanation_when_other_rules_hold_too() -> None:
    settings = LifecycleSettings(escalate_after_s={"high": 30, "medium": 120, "low": 600, "info": 3600})
    alerts: dict = {}
    t0 = START.timestamp()
    apnea = _condition("APNEA_VIDEO")
    news2 = Condition("NEWS2", AlertPriority.MEDIUM, AlertKind.PHYSIOLOGICAL, "NEWS2 5", {"news2": 5}, news2=5)
    step("b", alerts, [apnea, news2], t0, settings)
    [escalated] = step("b", alerts, [apnea, news2], t0 + 30, settings)
    assert (escalated.code, escalated.state) == ("APNEA_VIDEO", AlertState.ESCALATED)
    assert escalated.explanation == apnea.explanation
    assert escalated.evidence == apnea.evidence
    assert escalated.news2 is None


def test_rule_windows_counted_from_running_totals_match_a_scan_of_the_samples() -> None:
    """The video rules count findings in a window as a difference of running totals; a scan of
    the kept samples must give the same counts, with a jerk under way at the window's first
    sample counted once, and after the state has been through JSON (totals rebuilt). Half the
    detections carry decided findings that disagree with their probabilities at random: those
    decide, the window's first sample included."""
    import random

    from alerts.rules import _count, _start

    rng = random.Random(7)
    state = BedState("icu1-01")
    base = samples.detection(bed_id="icu1-01", ts=START)
    for second in range(900):  # past VIDEO_KEEP_S, so the head of the list has been trimmed
        twitching = rng.random() < (0.6 if (second // 7) % 2 else 0.1)  # runs of jerks and gaps
        detection = base.model_copy(
            update={
                "ts": START + timedelta(seconds=second),
                "grimace": rng.random(),
                "twitch": 0.9 if twitching else 0.1,
                "degraded": rng.random() < 0.3,
                "findings": None
                if rng.random() < 0.5
                else [f for f in (Finding.GRIMACE, Finding.TWITCH) if rng.random() < 0.5],
            }
        )
        add_detection(state, detection)
    restored = BedState.from_dict(json.loads(json.dumps(state.to_dict())))
    now = state.video[-1].t
    for bed in (state, restored):
        video = bed.video
        for window_s in (1.0, 10.0, 120.0, 300.0, 599.0):
            first = _start(bed, now - window_s)
            # The sample times the start is searched in are kept beside the samples: a scan agrees.
            assert first == next(i for i, s in enumerate(video) if s.t > now - window_s)
            window = video[first:]
            flags = [s.present("twitch") for s in window]
            jerks = sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))
            assert _count(video, first, "jerk_starts") == jerks
            assert _count(video, first, "twitching") == sum(flags)
            assert _count(video, first, "grimacing") == sum(s.present("grimace") for s in window)
            assert _count(video, first, "degraded_count") == sum(s.degraded for s in window)
    assert _count(state.video, len(state.video), "twitching") == 0


def test_sorted_medians_and_remembered_scores_match_a_fresh_computation() -> None:
    """The rules take each smoothed vital's median from its values kept sorted as readings come
    and go, and remember NEWS2 scores by their inputs. Over an irregular course (gaps, bursts,
    readings at the same instant, late ones dropped, time moving on between readings, a trip
    through JSON) they must equal the median and score computed from scratch every time."""
    import random
    import statistics

    from alerts.news2 import score_news2
    from alerts.rules import SMOOTHED, fresh_vitals

    rng = random.Random(11)
    thresholds = RuleThresholds()
    state = BedState("icu1-01")
    base = samples.vitals(bed_id="icu1-01", ts=START)
    t = 0.0
    checked = 0
    for step_no in range(1500):
        t += rng.choice([0.0, 0.4, 1.0, 1.0, 1.0, 3.0, 45.0]) if step_no % 200 else 400.0  # and a stale gap
        ts = START + timedelta(seconds=t - (5.0 if rng.random() < 0.05 else 0.0))  # now and then a late one
        add_vitals(state, base.model_copy(update={"ts": ts, "hr": rng.randint(40, 160), "rr": rng.randint(6, 35),
                                                   "spo2": rng.randint(85, 100)}), thresholds)  # fmt: skip
        if step_no == 750:
            state = BedState.from_dict(json.loads(json.dumps(state.to_dict())))
        for now in (START.timestamp() + t, START.timestamp() + t + rng.uniform(0, 70)):
            for name in SMOOTHED:
                series = state.vitals.get(name, [])
                recent = [v for ts_, v in series if ts_ >= now - thresholds.smooth_s] or [series[-1][1]]
                fresh = now - series[-1][0] <= 300.0 if name != "sbp" else now - series[-1][0] <= 3600.0
                expected = round(float(statistics.median(recent)), 1) if fresh else None
                assert fresh_vitals(state, now, thresholds)[name] == expected, (step_no, name)
                checked += expected is not None
            score = current_news2(state, thresholds, now)
            values = fresh_vitals(state, now, thresholds)
            if any(v is not None for v in values.values()):
                assert score == score_news2(rr=values["rr"], spo2=values["spo2"], on_oxygen=values["on_oxygen"],
                                            sbp=values["sbp"], hr=values["hr"], consciousness=values["consciousness"],
                                            temp_c=values["temp_c"])  # fmt: skip
    assert checked > 3000


def test_decided_findings_overrule_the_probability_threshold_and_survive_the_table() -> None:
    # A detection that lists its decided findings is read by them; one without (an older
    # producer, a recording) by the 0.5 threshold. A stored state of either kind reads back.
    thresholds = RuleThresholds()
    decided, plain = BedState("decided"), BedState("plain")
    for second in range(30):
        ts = START + timedelta(seconds=second)
        # The model's apnea probability dips under 0.5 now and then; its decision rule held it.
        probability = 0.45 if second % 4 == 0 else 0.8
        detection = samples.detection(ts=ts, seq=second).model_copy(update={"apnea": probability, "resp_rate": None})
        add_detection(decided, detection.model_copy(update={"findings": [Finding.APNEA]}), thresholds)
        add_detection(plain, detection, thresholds)
    now = (START + timedelta(seconds=29)).timestamp()
    assert "APNEA_VIDEO" in {c.code for c in evaluate(decided, now, thresholds)}
    assert "APNEA_VIDEO" not in {c.code for c in evaluate(plain, now, thresholds)}  # never 20 s running

    # Decided absent overrules a high twitch probability: no seizure pattern from it.
    calm = BedState("calm")
    for second in range(12):
        detection = samples.detection(ts=START + timedelta(seconds=second), seq=second)
        add_detection(calm, detection.model_copy(update={"twitch": 0.9, "findings": []}), thresholds)
    assert "SEIZURE_VIDEO" not in {c.code for c in evaluate(calm, START.timestamp() + 11, thresholds)}

    restored = BedState.from_dict(json.loads(json.dumps(decided.to_dict())))
    assert [v.findings for v in restored.video] == [["apnea"]] * 30
    assert restored.apnea_since == decided.apnea_since
    # A state stored before detections carried decisions: seven values per sample.
    old = decided.to_dict()
    old["video"] = [row[:7] for row in old["video"]]
    assert [v.present("apnea") for v in BedState.from_dict(old).video] == [second % 4 != 0 for second in range(30)]
