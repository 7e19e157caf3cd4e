"""The dashboard in a real browser: `icu dashboard` as a subprocess on a free port, Debian's
Chromium driven by Playwright, the embedded broker, the project's database sink and PostgreSQL.

A nurse logs in, sees the seeded beds in urgency order, acknowledges an alert from the alerts
page; the acknowledgement is on ``alert-acks`` and, once the sink has stored it, in
``alert_acks`` with the nurse's name. Screenshots go to ``$ICU_TEST_ARTEFACTS`` (default: the
test's tmp path)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from dashboard.auth import hash_password
from dashboard.seed import EXPECTED_ORDER, alert_id, seed_ward
from dashboard.serve import CHROMIUM, chromium_page, dashboard_process, log_in, ward_order
from icu.contracts import AckAction, AlertAck, Topic, decode
from icu.kafka import GracefulStop, close_producer, create_producer
from infra.db.migrate import connect, migrate
from infra.db.sink import DatabaseSink, SinkSettings, consume_loop
from tests.integration.conftest import skip_or_fail
from tests.integration.records import read_records


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ICU_TEST_ARTEFACTS", tmp_path)) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _require_browser() -> None:
    if not CHROMIUM.is_file():
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("the playwright package is not installed (pip install -e '.[dev]')")


def test_nurse_logs_in_sees_ward_by_urgency_and_acknowledges_through_the_page(
    kafka_settings, database_url, artefacts, tmp_path
):
    _require_browser()
    backend = migrate(database_url).backend
    with connect(database_url) as conn:
        seeded = seed_ward(conn, backend, beds=6, hours=1)
    by_profile = {profile: bed for bed, profile in seeded.profiles.items()}
    env = {
        "ICU_DATABASE_URL": database_url,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ICU_DEMO": "0",
        "ICU_DASHBOARD_USERS": f"nurse.a:{hash_password('night shift', iterations=100_000)}",
        # Loose enough that the seconds the test takes do not age the seeded live beds.
        "ICU_DASHBOARD_STALE_VITALS_S": "120",
        "ICU_DASHBOARD_STALE_CAMERA_S": "120",
        "ICU_DASHBOARD_STALE_VIDEO_S": "120",
    }
    sink_settings = SinkSettings(
        kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
        topic_prefix=kafka_settings.topic_prefix,
        topic_partitions=kafka_settings.topic_partitions,
        database_url=database_url,
        sink_group=f"sink-{uuid.uuid4().hex[:8]}",
    )
    producer = create_producer(sink_settings)
    sink = DatabaseSink(database_url)
    stop = GracefulStop()
    loop = consume_loop(sink_settings, sink, producer, stop)
    sink_thread = threading.Thread(target=loop.run, name="sink", daemon=True)
    sink_thread.start()
    target = alert_id(by_profile["deteriorating"], "NEWS2_HIGH")
    try:
        with dashboard_process(env, log_file=artefacts / "dashboard.log") as base, chromium_page() as page:
            log_in(page, base, user="nurse.a", password="night shift")
            order = ward_order(page, len(seeded.beds))
            page.screenshot(path=str(artefacts / "ward.png"))
            assert order == [by_profile[p] for p in EXPECTED_ORDER]
            stale_tile = page.locator(f".icu-tile[data-bed='{by_profile['stale']}']")
            assert "vitals LOST" in stale_tile.inner_text()
            assert "icu-problem" in (stale_tile.get_attribute("class") or "")

            page.locator("a").filter(has_text="Alerts").first.click()  # the top navigation: same session
            page.get_by_text("NEWS2_HIGH").first.wait_for()
            # The alerts page lists the escalated NEWS2_HIGH first; the topic check below proves it was that one.
            page.get_by_role("button", name="Acknowledge").first.click()
            page.get_by_text("acknowledged as nurse.a").wait_for()
            page.screenshot(path=str(artefacts / "alerts-acknowledged.png"))

        records = read_records(kafka_settings, Topic.ALERT_ACKS.full_name(kafka_settings.topic_prefix), 1)
        acks = [decode(AlertAck, r.value) for r in records]
        assert [(a.alert_id, a.user, a.action) for a in acks] == [(target, "nurse.a", AckAction.ACKNOWLEDGE)]
        assert records[0].key == by_profile["deteriorating"].encode()

        deadline, stored = time.monotonic() + 30, []
        while time.monotonic() < deadline and not stored:
            with connect(database_url) as conn:
                stored = conn.execute(
                    "SELECT ack_id, user_name, action FROM alert_acks WHERE alert_id = %s", (target,)
                ).fetchall()
            time.sleep(0.2)
        assert stored == [(acks[0].ack_id, "nurse.a", "acknowledge")]
    finally:
        stop.set()
        sink_thread.join(30)
        sink.close()
        close_producer(producer, 5)
