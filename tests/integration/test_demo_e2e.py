"""`icu demo` end to end, as a user runs it: a deteriorating simulated patient goes camera (WebRTC
to the WHIP endpoint) -> ingest -> inference -> alerts -> database -> dashboard, and Ctrl-C stops
everything.

Two beds: ``sim-01`` runs the library's respiratory deterioration from 240 s in (its onset is at
120 s: RR is climbing, SpO2 falling), ``sim-02`` is stable. The hard assertion is on the
vitals-driven NEWS2 alert, which is deterministic: the pure alerts core raises it 95 s after
the bed starts (335 s into the scenario, 215 s after the deterioration's onset); the test allows
180 s from the bed's start (300 s from the onset) for a loaded 2-core machine. Video-derived
alerts depend on the model's accuracy (see MODEL_CARD.md) and are reported, not asserted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from dashboard.serve import CHROMIUM, chromium_page
from icu.contracts import Alert, Topic, decode
from infra.ports import free_port
from tests.integration.conftest import skip_or_fail

DETERIORATING, STABLE = "sim-01", "sim-02"
START_S = 150.0  # from `icu demo` to the dashboard URL, at most
ALERT_WITHIN_S = 180.0  # from the deteriorating bed's start (240 s into its scenario) to NEWS2
STOP_WITHIN_S = 30.0
VITALS_CODES = {"NEWS2", "DETERIORATION_TREND", "VITALS_STALE"}


def descendants(pid: int) -> set[int]:
    """Every process whose ancestry leads to ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_until(path: Path, pattern: str, timeout_s: float, process: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"`icu demo` did not print {pattern!r} in {timeout_s:g} s:\n{path.read_text(errors='replace')}")


def alerts_from(bootstrap: str, topic: str, until: float, stop_when) -> list[Alert]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen: list[Alert] = []
        while time.monotonic() < until:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += [decode(Alert, r.value) for r in records]
            if stop_when(seen):
                break
        return seen
    finally:
        consumer.close()


def first_vitals(url: str, bed: str, timeout_s: float = 60.0) -> datetime:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT min(ts) FROM vitals WHERE bed_id = %s", (bed,)).fetchone()
        if row and row[0] is not None:
            return row[0]
        time.sleep(1)
    pytest.fail(f"no vitals of {bed} reached the database in {timeout_s:g} s")


def test_demo_deteriorating_patient_reaches_the_dashboard_and_ctrl_c_stops_everything(database_url, tmp_path):
    browser = CHROMIUM.is_file()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        browser = False
    if not browser:
        skip_or_fail(f"the dashboard check needs {CHROMIUM} and playwright")

    port = free_port()
    out = tmp_path / "demo.out"
    env = {**os.environ, "ICU_DATABASE_URL": database_url, "ICU_STATE_DIR": str(tmp_path / "state")}
    for name in ("ICU_KAFKA_BOOTSTRAP_SERVERS", "ICU_TOPIC_PREFIX", "ICU_BEDS"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "icu.cli", "demo", "--beds", "2", "--scenario", "respiratory-deterioration@240",
            "--scenario", "stable", "--port", str(port), "--broker-memory", "4096"]  # fmt: skip
    started = time.monotonic()
    with out.open("wb") as handle:
        demo = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    report: dict[str, object] = {}
    children: set[int] = set()
    try:
        banner = read_until(out, r"Kafka:\s+(\S+)", START_S, demo)
        report["start_to_url_s"] = round(time.monotonic() - started, 1)
        assert f"Dashboard:  http://127.0.0.1:{port}" in out.read_text()
        assert "icu.alerts" in out.read_text()  # the topic list
        bootstrap = banner.group(1)
        children = descendants(demo.pid)
        assert len(children) >= 7  # icu up, ingest, infer, alerts, sink, dashboard, bedside (and theirs)

        bed_start = first_vitals(database_url, DETERIORATING)
        deadline = time.monotonic() + ALERT_WITHIN_S + 10

        def news2_raised(alerts: list[Alert]) -> bool:
            return any(a.bed_id == DETERIORATING and a.code == "NEWS2" for a in alerts)

        alerts = alerts_from(bootstrap, Topic.ALERTS.full_name("icu"), deadline, news2_raised)
        news2 = [a for a in alerts if a.bed_id == DETERIORATING and a.code == "NEWS2"]
        assert news2, f"no NEWS2 alert for {DETERIORATING} on icu.alerts: {[(a.bed_id, a.code) for a in alerts]}"
        raised_after = (news2[0].raised_at - bed_start).total_seconds()
        report["news2_after_bed_start_s"] = round(raised_after, 1)
        report["news2_after_demo_start_s"] = round(time.monotonic() - started, 1)
        assert 0 <= raised_after <= ALERT_WITHIN_S, raised_after
        assert news2[0].priority.value in ("medium", "high")

        # In the database (the sink), with the detections that prove camera -> ingest -> inference ran.
        deadline = time.monotonic() + 30
        stored: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline:
            with psycopg.connect(database_url) as conn:
                stored = conn.execute("SELECT bed_id, code, kind FROM alerts ORDER BY raised_at").fetchall()
                detections = dict(conn.execute("SELECT bed_id, count(*) FROM detections GROUP BY bed_id").fetchall())
                live = "SELECT bed_id, count(*) FROM camera_status WHERE state = 'live' GROUP BY bed_id"
                cameras = dict(conn.execute(live).fetchall())
            if (DETERIORATING, "NEWS2", "physiological") in stored:
                break
            time.sleep(1)
        assert (DETERIORATING, "NEWS2", "physiological") in stored
        assert detections.get(DETERIORATING, 0) >= 30, detections  # a detection per bed per second
        assert detections.get(STABLE, 0) >= 30, detections
        assert cameras.get(DETERIORATING, 0) >= 1, cameras  # the WHIP camera was live at ingest

        # The stable patient: no vitals-driven alert, on the topic or in the database.
        stable_alerts = [(a.code, a.kind.value) for a in alerts if a.bed_id == STABLE]
        assert not [c for c, _ in stable_alerts if c in VITALS_CODES], stable_alerts
        assert not [row for row in stored if row[0] == STABLE and row[1] in VITALS_CODES], stored
        report["video_alerts"] = sorted({(bed, code) for bed, code, _ in stored if code not in VITALS_CODES})

        # On the page: the ward shows the bed's alert; the alerts page lists its NEWS2.
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}")
            tile = page.locator(f".icu-tile[data-bed='{DETERIORATING}'] .icu-alert")
            tile.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "ward.png"))
            page.locator("a").filter(has_text="Alerts").first.click()
            page.get_by_text(re.compile(rf"{DETERIORATING} · NEWS2")).first.wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "alerts.png"))
    finally:
        # Ctrl-C, as a user stops it.
        if demo.poll() is None:
            children |= descendants(demo.pid)
            stop_started = time.monotonic()
            demo.send_signal(signal.SIGINT)
            try:
                code = demo.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                demo.kill()
                pytest.fail(f"`icu demo` did not stop within {STOP_WITHIN_S:g} s of Ctrl-C:\n{out.read_text()}")
            report["stop_s"] = round(time.monotonic() - stop_started, 1)
            time.sleep(0.5)
            left = sorted(pid for pid in children if alive(pid))
            print("icu demo e2e:", json.dumps(report))  # the figures the README quotes
            assert code == 0, out.read_text()
            assert not left, f"processes left after Ctrl-C: {left}"
            assert "stopped everything" in out.read_text()
