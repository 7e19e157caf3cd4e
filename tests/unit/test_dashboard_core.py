"""The dashboard's pure core with hand-worked values: staleness, NEWS2 on a tile, urgency order,
acknowledgement rules, evidence for an alert, password hashes."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from dashboard.auth import AuthError, check_login, hash_password, parse_users, verify_password
from dashboard.core import (
    AckError,
    AlertRow,
    BedSnapshot,
    EvidenceRef,
    Reading,
    Thresholds,
    VideoFindings,
    build_ack,
    build_tile,
    camera_health,
    evidence_for_alert,
    format_age,
    order_alerts,
    order_tiles,
    risk_colour,
    vitals_freshness,
)
from dashboard.data import chart_width
from icu.contracts import AckAction

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
T = Thresholds(stale_vitals_s=60, lost_vitals_s=300, stale_camera_s=30, stale_video_s=30)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def alert(bed: str = "b1", priority: str = "high", state: str = "open", level: int = 0, raised_s: float = 60,
          code: str = "NEWS2_HIGH") -> AlertRow:  # fmt: skip
    return AlertRow(
        alert_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{bed}/{code}/{priority}/{state}/{level}"),
        bed_id=bed,
        code=code,
        kind="physiological",
        priority=priority,
        state=state,
        raised_at=ago(raised_s),
        updated_at=ago(raised_s / 2),
        explanation="x",
        evidence={},
        news2=None,
        escalation_level=level,
        acknowledged_by="n" if state == "acknowledged" else None,
        acknowledged_at=None,
        snoozed_until=None,
        resolved_at=ago(1) if state == "resolved" else None,
        version=1,
    )


def readings(age_s: float = 5, **values: float | str | bool) -> dict[str, Reading]:
    return {name: Reading(value, ago(age_s)) for name, value in values.items()}


NORMAL = dict(hr=72.0, rr=15.0, spo2=97.0, sbp=122.0, temp_c=36.8, on_oxygen=False, consciousness="A")


def snapshot(bed: str = "b1", *, r: dict[str, Reading] | None = None, alerts: tuple[AlertRow, ...] = (),
             camera: str | None = "live", camera_age: float = 5, video_age: float = 2, apnea: float = 0.0,
             last_vitals_age: float = 5) -> BedSnapshot:  # fmt: skip
    return BedSnapshot(
        bed_id=bed,
        ward="w",
        label=None,
        readings=r if r is not None else readings(**NORMAL),
        last_vitals_ts=ago(last_vitals_age),
        video=VideoFindings(ago(video_age), grimace=0.1, twitch=0.0, apnea=apnea, resp_rate=15, baseline_resp_rate=16),
        camera_state=camera,
        camera_status_ts=ago(camera_age) if camera else None,
        alerts=alerts,
    )


# --- staleness ------------------------------------------------------------------------------


@pytest.mark.parametrize(("age", "expected"), [(0, "live"), (60, "live"), (61, "stale"), (300, "stale"), (301, "lost")])
def test_vitals_freshness_bands(age, expected):
    assert vitals_freshness(ago(age), NOW, stale_s=60, lost_s=300) == expected


def test_vitals_never_seen_are_lost():
    assert vitals_freshness(None, NOW, stale_s=60, lost_s=300) == "lost"


@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [("live", 5, "live"), ("live", 31, "lost"), ("stalled", 5, "degraded"), ("lost", 5, "lost"), (None, 0, "unknown")],
)
def test_camera_health(state, age, expected):
    ts = ago(age) if state else None
    assert camera_health(state, ts, NOW, stale_s=30) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (4.9, "4 s"),
        (89, "89 s"),
        (90, "2 min"),
        (3599, "60 min"),
        (3900, "1 h 05 min"),
        (3 * 86400, "3 d"),
    ],
)
def test_format_age(seconds, text):
    assert format_age(seconds) == text


# --- the tile -------------------------------------------------------------------------------


def test_tile_scores_news2_from_current_readings():
    # RR 26 -> 3, SpO2 91 -> 3, air -> 0, SBP 95 -> 2, HR 125 -> 2, A -> 0, T 38.6 -> 1: 11, high.
    r = readings(hr=125.0, rr=26.0, spo2=91.0, sbp=95.0, temp_c=38.6, on_oxygen=False, consciousness="A")
    tile = build_tile(snapshot(r=r), NOW, T)
    assert tile.news2 is not None
    assert (tile.news2.score, tile.news2.risk, tile.news2.complete) == (11, "high", True)
    assert tile.news2_current
    assert tile.colour == "#c62828"
    assert not tile.data_problem
    assert tile.problems() == []


def test_stale_heart_rate_greys_the_score_but_charted_bp_of_20_minutes_does_not():
    r = {**readings(**NORMAL), "hr": Reading(72.0, ago(61)), "sbp": Reading(122.0, ago(1200))}
    tile = build_tile(snapshot(r=r), NOW, T)
    assert tile.current["sbp"] is True  # charted: current for an hour
    assert tile.current["hr"] is False
    assert not tile.news2_current
    assert tile.colour == risk_colour(None)  # grey, never a live-looking green


def test_lost_vitals_and_lost_camera_are_flagged():
    tile = build_tile(snapshot(last_vitals_age=301, camera="live", camera_age=31), NOW, T)
    assert tile.vitals == "lost"
    assert tile.camera == "lost"
    assert tile.problems() == ["vitals LOST", "camera LOST"]


def test_old_video_findings_are_not_reported_as_findings():
    assert build_tile(snapshot(apnea=0.9), NOW, T).findings == ("apnea",)
    stale = build_tile(snapshot(apnea=0.9, video_age=31), NOW, T)
    assert stale.findings == ()
    assert not stale.video_current
    assert stale.problems() == ["video findings STALE"]


def test_urgency_order():
    # Hand-ordered: an escalated high alert, a plain high alert, a medium alert, then an
    # acknowledged high alert, then no alert by NEWS2 (medium before low), then a quiet bed with
    # lost vitals before an equally quiet watched one.
    beds = [
        snapshot("quiet"),
        snapshot("quiet-lost", last_vitals_age=400),
        snapshot("news2-medium", r=readings(**{**NORMAL, "hr": 112.0, "rr": 22.0, "temp_c": 38.2})),
        snapshot("acked-high", alerts=(alert("acked-high", state="acknowledged"),)),
        snapshot("medium", alerts=(alert("medium", priority="medium"),)),
        snapshot("high", alerts=(alert("high"),)),
        snapshot("escalated", alerts=(alert("escalated", state="escalated", level=2), alert("escalated", "low"))),
    ]
    order = [t.bed_id for t in order_tiles(build_tile(b, NOW, T) for b in beds)]
    assert order == ["escalated", "high", "medium", "acked-high", "news2-medium", "quiet-lost", "quiet"]


def test_resolved_alerts_do_not_count():
    tile = build_tile(snapshot(alerts=(alert(state="resolved"),)), NOW, T)
    assert tile.top_alert is None
    assert tile.open_alerts == 0


def test_alert_list_orders_unanswered_by_priority_then_age():
    old_medium = alert("a", priority="medium", raised_s=600)
    new_medium = alert("b", priority="medium", raised_s=60)
    high = alert("c", priority="high", raised_s=10)
    acked = alert("d", priority="high", state="acknowledged")
    assert [a.bed_id for a in order_alerts([acked, new_medium, high, old_medium])] == ["c", "a", "b", "d"]


# --- acknowledgements -------------------------------------------------------------------------


def test_acknowledge_builds_a_valid_contract_message_with_the_user():
    a = alert()
    ack = build_ack(a, user=" nurse.a ", now=NOW, action=AckAction.ACKNOWLEDGE, snooze_s=600)
    assert (ack.alert_id, ack.bed_id, ack.user, ack.ts, ack.snooze_s) == (a.alert_id, "b1", "nurse.a", NOW, None)


def test_snooze_is_capped_and_needs_a_reason():
    a = alert()
    with pytest.raises(AckError, match="reason"):
        build_ack(a, user="n", now=NOW, action=AckAction.SNOOZE, snooze_s=600, reason="  ")
    with pytest.raises(AckError, match="capped at 30 min"):
        build_ack(a, user="n", now=NOW, action=AckAction.SNOOZE, snooze_s=1801, reason="wash", max_snooze_s=1800)
    ack = build_ack(a, user="n", now=NOW, action=AckAction.SNOOZE, snooze_s=1800, reason="wash", max_snooze_s=1800)
    assert (ack.snooze_s, ack.reason) == (1800, "wash")


def test_no_ack_without_a_user_or_for_a_resolved_alert():
    with pytest.raises(AckError, match="user"):
        build_ack(alert(), user=" ", now=NOW, action=AckAction.ACKNOWLEDGE)
    with pytest.raises(AckError, match="resolved"):
        build_ack(alert(state="resolved"), user="n", now=NOW, action=AckAction.ACKNOWLEDGE)


# --- evidence and charts ------------------------------------------------------------------------


def test_evidence_for_a_video_alert_is_its_finding_nearest_the_raise():
    a = alert(code="APNEA_VIDEO", raised_s=100)
    candidates = [
        EvidenceRef(ago(130), "apnea", 0.8),  # 30 s before the raise
        EvidenceRef(ago(95), "apnea", 0.9),  # 5 s after: nearest
        EvidenceRef(ago(100), "grimace", 0.9),  # other finding
        EvidenceRef(ago(10), "apnea", 0.9),  # after the alert's last update (50 s ago)
    ]
    assert evidence_for_alert(a, candidates) == candidates[1]
    assert evidence_for_alert(alert(code="NEWS2_HIGH"), candidates) is None


@pytest.mark.parametrize(("hours", "minutes"), [(1, 1), (6, 2), (24, 10)])
def test_chart_width_keeps_about_150_points(hours, minutes):
    assert chart_width(timedelta(hours=hours)) == timedelta(minutes=minutes)


# --- passwords ----------------------------------------------------------------------------------


def test_password_hash_round_trip_and_user_list():
    encoded = hash_password("night shift", iterations=100_000, salt=bytes(range(16)))
    assert encoded.startswith("pbkdf2_sha256$100000$000102030405060708090a0b0c0d0e0f$")
    assert verify_password("night shift", encoded)
    assert not verify_password("day shift", encoded)
    users = parse_users(f"nurse.a:{encoded}, nurse.b:{encoded}")
    assert sorted(users) == ["nurse.a", "nurse.b"]
    assert check_login(users, "nurse.a", "night shift")
    assert not check_login(users, "nurse.c", "night shift")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nurse.a", "expected name:hash"),
        ("nurse.a:plain", "not a pbkdf2_sha256 hash"),
        ("a:pbkdf2_sha256$1000$00112233445566778899aabbccddeeff$" + "00" * 32, "weak"),
    ],
)
def test_malformed_user_lists_are_refused(text, message):
    with pytest.raises(AuthError, match=message):
        parse_users(text)


def test_the_tile_shows_the_decided_findings_where_the_detection_has_them():
    # The model's decision rule held apnea through a dip of the probability, and decided a
    # high twitch probability absent: the tile follows the decision, not the 0.5 threshold.
    base = snapshot(apnea=0.3)
    assert build_tile(base, NOW, T).findings == ()
    assert base.video is not None
    decided = dataclasses.replace(base, video=dataclasses.replace(base.video, twitch=0.9, findings=("apnea",)))
    assert build_tile(decided, NOW, T).findings == ("apnea",)
