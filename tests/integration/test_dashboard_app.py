"""Every dashboard page through Streamlit's AppTest against a real PostgreSQL seeded with the
known ward scenario (dashboard/seed.py), and acknowledgements on the real embedded broker."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.auth import hash_password
from dashboard.seed import EXPECTED_ORDER, SeedReport, alert_id, seed_ward
from icu.contracts import AckAction, AlertAck, Topic, decode
from infra.db.migrate import connect, migrate
from tests.integration.records import read_records

TIMEOUT = 60


@pytest.fixture
def seeded(database_url: str) -> SeedReport:
    report = migrate(database_url)
    with connect(database_url) as conn:
        return seed_ward(conn, report.backend, beds=6, hours=2)


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, database_url: str, kafka_settings) -> Iterator[None]:
    """The app's environment: this test's database and topics, demo mode, and staleness limits
    loose enough that the seconds a test takes do not age the seeded live beds into stale ones."""
    for name, value in {
        "ICU_DATABASE_URL": database_url,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ICU_DEMO": "1",
        "ICU_DASHBOARD_STALE_VITALS_S": "120",
        "ICU_DASHBOARD_LOST_VITALS_S": "300",
        "ICU_DASHBOARD_STALE_CAMERA_S": "120",
        "ICU_DASHBOARD_STALE_VIDEO_S": "120",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ICU_DASHBOARD_USERS", raising=False)
    st.cache_resource.clear()  # settings and clients are per process: rebuild them for this test
    yield
    st.cache_resource.clear()


def _app(page: str) -> AppTest:
    return AppTest.from_string(f"from dashboard.app import main\nmain(page={page!r})", default_timeout=TIMEOUT)


def _tile_order(at: AppTest) -> list[str]:
    return [m for md in at.markdown for m in re.findall(r"data-bed='([^']+)'", md.value)]


def _consume_acks(kafka_settings, expected: int) -> list[AlertAck]:
    records = read_records(kafka_settings, Topic.ALERT_ACKS.full_name(kafka_settings.topic_prefix), expected)
    return [decode(AlertAck, r.value) for r in records]


def test_ward_page_orders_seeded_beds_by_urgency_and_flags_stale_data(seeded, dashboard_env):
    at = _app("ward").run()
    assert not at.exception, at.exception
    by_profile = {profile: bed for bed, profile in seeded.profiles.items()}
    assert _tile_order(at) == [by_profile[p] for p in EXPECTED_ORDER]
    tiles = {m: md.value for md in at.markdown for m in re.findall(r"data-bed='([^']+)'", md.value)}
    assert "NEWS2 11 high" in tiles[by_profile["deteriorating"]]
    assert "escalated L1" in tiles[by_profile["deteriorating"]]
    assert "apnea" in tiles[by_profile["apnea"]]
    assert "APNEA_VIDEO" in tiles[by_profile["apnea"]]
    assert "vitals LOST" in tiles[by_profile["stale"]]
    assert "icu-problem" in tiles[by_profile["stale"]]
    assert "camera LOST" in tiles[by_profile["camera-lost"]]
    assert "icu-problem" not in tiles[by_profile["stable"]]
    assert "NEWS2 0 low" in tiles[by_profile["stable"]]
    assert "6 beds · 4 with unanswered alerts · 2 with stale or lost data" in at.caption[0].value


def test_patient_page_shows_charts_alert_history_evidence_and_timeline(seeded, dashboard_env):
    bed = next(b for b, p in seeded.profiles.items() if p == "apnea")
    at = _app("patient")
    at.session_state["bed"] = bed
    at.run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == f"Bed {bed}"
    assert any("APNEA_VIDEO" in e.label for e in at.expander)
    assert len(at.image) == 1  # the apnea alert's evidence keyframe
    assert "apnea p=0.91" in at.image[0].captions[0]
    charts = at.get("vega_lite_chart")
    assert len(charts) == 7  # five vitals with NEWS2 shading, video probabilities, respiration
    timeline = at.dataframe[-1].value
    assert "APNEA_VIDEO (high) raised" in " ".join(timeline["detail"])
    assert "apnea p=0.91" in " ".join(timeline["detail"])


def test_alerts_page_lists_open_alerts_by_priority_and_acknowledges_to_the_topic(seeded, dashboard_env, kafka_settings):
    at = _app("alerts").run()
    assert not at.exception, at.exception
    by_profile = {profile: bed for bed, profile in seeded.profiles.items()}
    rows = [md.value for md in at.markdown if "raised" in md.value]
    beds = [next(b for b in seeded.beds if f"<b>{b}</b>" in row) for row in rows]
    assert beds == [by_profile[p] for p in ("deteriorating", "apnea", "stale", "camera-lost", "medium")]
    assert "ESCALATED level 1" in rows[0]
    assert "#ffebee" in rows[0]
    target = alert_id(by_profile["apnea"], "APNEA_VIDEO")
    at.button(key=f"ack-alerts-{target}").click().run()
    assert not at.exception, at.exception
    assert any("acknowledged as demo" in s.value for s in at.success)
    acks = _consume_acks(kafka_settings, 1)
    assert [(a.alert_id, a.user, a.action, a.bed_id) for a in acks] == [
        (target, "demo", AckAction.ACKNOWLEDGE, by_profile["apnea"])
    ]


def test_snooze_needs_a_reason_and_is_capped(seeded, dashboard_env, kafka_settings, monkeypatch):
    monkeypatch.setenv("ICU_ALERT_MAX_SNOOZE_S", "600")
    st.cache_resource.clear()
    bed = next(b for b, p in seeded.profiles.items() if p == "deteriorating")
    target = alert_id(bed, "NEWS2_HIGH")
    at = _app("patient")
    at.session_state["bed"] = bed
    at.run()
    minutes = at.number_input(key=f"snooze-min-patient-{target}")
    assert minutes.max == 10  # ICU_ALERT_MAX_SNOOZE_S 600 s
    at.button(key=f"snooze-patient-{target}").click().run()
    assert any("needs a reason" in e.value for e in at.error)
    at.text_input(key=f"snooze-reason-patient-{target}").input("repositioning")
    minutes.set_value(10)
    at.button(key=f"snooze-patient-{target}").click().run()
    assert not at.exception, at.exception
    acks = _consume_acks(kafka_settings, 1)
    assert [(a.action, a.snooze_s, a.reason) for a in acks] == [(AckAction.SNOOZE, 600, "repositioning")]


def test_system_page_shows_cameras_stage_staleness_and_dead_letters(seeded, dashboard_env):
    at = _app("system").run()
    assert not at.exception, at.exception
    stages, cameras = at.dataframe[0].value, at.dataframe[1].value
    assert next(iter(stages["stage"])) == "vitals ingest → sink"
    assert list(stages["status"])[:3] == ["ok", "ok", "ok"]
    assert len(cameras) == 6
    lost_bed = next(b for b, p in seeded.profiles.items() if p == "camera-lost")
    assert cameras.set_index("bed").loc[lost_bed, "state"] == "lost"
    assert at.metric[0].value == "0"  # nothing dead-lettered on this test's fresh topics


def test_login_required_outside_demo_and_user_recorded_on_acks(seeded, dashboard_env, kafka_settings, monkeypatch):
    monkeypatch.setenv("ICU_DEMO", "0")
    monkeypatch.setenv("ICU_DASHBOARD_USERS", f"nurse.a:{hash_password('correct horse', iterations=100_000)}")
    st.cache_resource.clear()
    at = _app("alerts").run()
    assert not [md for md in at.markdown if "raised" in md.value]
    at.text_input[0].input("nurse.a")
    at.text_input[1].input("wrong")
    at.button[0].click().run()
    assert any("wrong password" in e.value for e in at.error)
    at.text_input[1].input("correct horse")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("Signed in as **nurse.a**" in c.value for c in at.sidebar.caption)
    target = alert_id(next(b for b, p in seeded.profiles.items() if p == "stale"), "VITALS_STALE")
    at.button(key=f"ack-alerts-{target}").click().run()
    acks = _consume_acks(kafka_settings, 1)
    assert [(a.alert_id, a.user) for a in acks] == [(target, "nurse.a")]


def test_no_login_configured_outside_demo_refuses(seeded, dashboard_env, monkeypatch):
    monkeypatch.setenv("ICU_DEMO", "0")
    st.cache_resource.clear()
    at = _app("ward").run()
    assert "No login is configured" in at.error[0].value
    assert not _tile_order(at)
