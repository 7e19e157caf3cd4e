"""Migrations, the write path, maintenance and queries on a real PostgreSQL."""

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from icu.contracts import AckAction, AlertState
from infra.db.maintenance import maintain, partition_name, refresh_rollups
from infra.db.migrate import connect, discover, migrate
from infra.db.queries import latest_vitals, vitals_series
from infra.db.writer import DatabaseWriter
from infra.errors import InfraError
from tests import samples

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url):
    report = migrate(database_url)
    with connect(database_url) as conn:
        yield conn, report.backend


def test_migrations_apply_once_and_record_checksums(database_url):
    first = migrate(database_url)
    assert first.backend == "plain"
    assert [m.version for m in first.applied] == [m.version for m in discover("plain")]
    second = migrate(database_url)
    assert second.applied == []
    assert second.current_version == first.current_version
    with connect(database_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {
            "vitals",
            "detections",
            "camera_status",
            "alerts",
            "alert_versions",
            "alert_acks",
            "beds",
            "vitals_1m_store",
            "detections_1m_store",
        } <= tables
        partitioned = conn.execute("SELECT relname FROM pg_class WHERE relkind = 'p'").fetchall()
        assert {"vitals", "detections", "camera_status"} <= {r[0] for r in partitioned}


def test_an_edited_applied_migration_is_refused(database_url):
    migrate(database_url)
    with connect(database_url) as conn:
        conn.execute("UPDATE icu_schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(InfraError, match="was changed after it was applied"):
        migrate(database_url)


def test_the_recorded_backend_cannot_be_switched(database_url):
    migrate(database_url, preference="plain")
    with pytest.raises(InfraError, match="migrated for the plain backend"):
        migrate(database_url, preference="timescale")


def test_unreachable_database_is_one_clear_error():
    with pytest.raises(InfraError, match=r"cannot connect to the database at postgresql://u:\*\*\*@127.0.0.1:1/x"):
        migrate("postgresql://u:secret@127.0.0.1:1/x")


def test_time_series_writes_are_idempotent(db):
    conn, _ = db
    writer = DatabaseWriter(conn)
    batch = [samples.vitals(ts=NOW + timedelta(seconds=i)) for i in range(100)]
    assert writer.write_vitals(batch) == 100
    assert writer.write_vitals(batch) == 0  # a redelivered batch adds nothing
    overlapping = batch[50:] + [samples.vitals(ts=NOW + timedelta(seconds=100 + i)) for i in range(10)]
    assert writer.write_vitals(overlapping) == 10  # only the new rows of a partly redelivered batch
    assert (writer.fast_batches, writer.deduplicated_batches) == (1, 2)
    assert writer.write_detections([samples.detection(ts=NOW, seq=i) for i in range(1)]) == 1
    assert writer.write_camera_status([samples.camera_status(ts=NOW)]) == 1
    count = conn.execute("SELECT count(*) FROM vitals").fetchone()[0]
    assert count == 110
    row = conn.execute("SELECT baseline_resp_rate, twitch_burst FROM detections").fetchone()
    assert row == (16.0, False)


def test_alert_history_keeps_every_version_and_current_state_follows(db):
    conn, _ = db
    writer = DatabaseWriter(conn)
    # Out of order and duplicated, as an at-least-once consumer may deliver them.
    versions = [samples.alert(2, AlertState.ACKNOWLEDGED), samples.alert(1), samples.alert(2, AlertState.ACKNOWLEDGED)]
    assert writer.write_alerts(versions) == 2
    assert conn.execute("SELECT version, state, acknowledged_by FROM alerts").fetchall() == [
        (2, "acknowledged", "nurse.a")
    ]
    writer.write_alerts([samples.alert(3, AlertState.RESOLVED)])
    assert conn.execute("SELECT version, state FROM alerts").fetchall() == [(3, "resolved")]
    assert conn.execute("SELECT count(*) FROM alert_versions").fetchone()[0] == 3
    assert writer.write_acks([samples.ack(), samples.ack(AckAction.SNOOZE)]) == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE alert_versions SET state = 'open'",
        "DELETE FROM alert_versions",
        "TRUNCATE alert_versions",
        "UPDATE alert_acks SET user_name = 'someone else'",
        "DELETE FROM alert_acks",
        "TRUNCATE alert_acks",
    ],
)
def test_the_audit_trail_cannot_be_rewritten(db, statement):
    conn, _ = db
    writer = DatabaseWriter(conn)
    writer.write_alerts([samples.alert(1)])
    writer.write_acks([samples.ack()])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM alert_versions").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM alert_acks").fetchone()[0] == 1


def test_partition_maintenance_moves_stray_rows_and_applies_retention(db):
    conn, backend = db
    writer = DatabaseWriter(conn)
    old = NOW - timedelta(days=40)
    writer.write_vitals([samples.vitals(ts=NOW), samples.vitals(ts=old)])
    # No partitions yet: both rows wait in the default partition, nothing is refused.
    assert conn.execute("SELECT count(*) FROM vitals_default").fetchone()[0] == 2

    report = maintain(conn, backend, retention_days=30, now=NOW)
    assert partition_name("vitals", NOW.date()) in report.created
    assert partition_name("vitals", (NOW + timedelta(days=3)).date()) in report.created
    assert report.rows_moved == 2
    assert partition_name("vitals", old.date()) in report.dropped
    assert conn.execute("SELECT count(*) FROM vitals_default").fetchone()[0] == 0
    assert conn.execute("SELECT ts FROM vitals").fetchall() == [(NOW,)]
    again = maintain(conn, backend, retention_days=30, now=NOW)
    assert again.created == []
    assert again.dropped == []
    assert again.rows_moved == 0


def test_rollups_are_live_before_and_after_refresh_and_queries_rebin(db):
    conn, backend = db
    maintain(conn, backend, retention_days=30, now=NOW)
    writer = DatabaseWriter(conn)
    # Two readings per minute for 10 minutes: HR 60 then 80 -> minute average 70.
    batch = []
    for minute in range(10):
        for second, hr in ((10, 60.0), (40, 80.0)):
            batch.append(samples.vitals(ts=NOW + timedelta(minutes=minute, seconds=second), hr=hr, spo2=90.0 + minute))
    writer.write_vitals(batch)

    before = vitals_series(conn, backend, bed_id="icu1-bed01", start=NOW, end=NOW + timedelta(minutes=10))
    refresh_rollups(conn, backend, NOW, NOW + timedelta(minutes=6))
    after = vitals_series(conn, backend, bed_id="icu1-bed01", start=NOW, end=NOW + timedelta(minutes=10))
    assert before == after
    assert [b.n for b in after] == [2] * 10
    assert all(b.hr_avg == pytest.approx(70.0) for b in after)
    assert conn.execute("SELECT count(*) FROM vitals_1m_store").fetchone()[0] == 6

    five = vitals_series(
        conn, backend, bed_id="icu1-bed01", start=NOW, end=NOW + timedelta(minutes=10), width=timedelta(minutes=5)
    )
    assert [(b.bucket, b.n) for b in five] == [(NOW, 10), (NOW + timedelta(minutes=5), 10)]
    assert five[0].spo2_avg == pytest.approx(92.0)
    assert five[1].spo2_min == pytest.approx(95.0)
    # Coarse averages weight minutes by readings of that measurement, not by rows: 59 rows
    # without HR and one with HR 100, then one row with HR 60, average to 80.
    later = NOW + timedelta(hours=1)
    sparse = [samples.vitals(bed_id="bed-sparse", ts=later + timedelta(seconds=i), hr=None) for i in range(59)]
    sparse.append(samples.vitals(bed_id="bed-sparse", ts=later + timedelta(seconds=59), hr=100.0))
    sparse.append(samples.vitals(bed_id="bed-sparse", ts=later + timedelta(minutes=1), hr=60.0))
    writer.write_vitals(sparse)
    coarse = vitals_series(
        conn, backend, bed_id="bed-sparse", start=later, end=later + timedelta(minutes=5), width=timedelta(minutes=5)
    )
    assert [(b.n, b.hr_avg) for b in coarse] == [(61, pytest.approx(80.0))]

    latest = latest_vitals(conn, ["icu1-bed01", "nobody"])
    assert list(latest) == ["icu1-bed01"]
    assert latest["icu1-bed01"]["ts"] == NOW + timedelta(minutes=9, seconds=40)
