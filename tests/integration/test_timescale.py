"""The TimescaleDB path on a real TimescaleDB engine (PGlite build, one connection at a time).

The engine cannot take COPY, so time series are seeded with plain INSERTs here; the COPY
write path itself is exercised on PostgreSQL in test_database.py.
"""

from datetime import UTC, datetime, timedelta

import pytest

from icu.contracts import AlertState
from infra.db.maintenance import maintain, refresh_rollups
from infra.db.migrate import connect, migrate
from infra.db.queries import vitals_series
from infra.db.writer import VITALS, DatabaseWriter
from tests import samples

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def timescale(timescale_url):
    report = migrate(timescale_url)
    return timescale_url, report


def _insert_vitals(conn, messages):
    columns = ", ".join(VITALS.columns)
    placeholders = ", ".join(["%s"] * len(VITALS.columns))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO vitals ({columns}) VALUES ({placeholders})", [VITALS.row(m) for m in messages])


def test_auto_detection_picks_timescale_and_builds_hypertables(timescale):
    url, report = timescale
    assert report.backend == "timescale"
    assert migrate(url).applied == []  # idempotent
    with connect(url) as conn:
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert hypertables == {"vitals", "detections", "camera_status"}
        caggs = {r[0] for r in conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert caggs == {"vitals_1m", "detections_1m"}
        maintain(conn, "timescale", retention_days=21, now=NOW)
        jobs = dict(
            conn.execute(
                "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_retention'"
            ).fetchall()
        )
        assert jobs == {"vitals": "21 days", "detections": "21 days", "camera_status": "21 days"}
        compression = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        ).fetchone()[0]
        assert compression == 3


def test_same_queries_same_answers_as_plain_postgres(timescale):
    url, _ = timescale
    batch = []
    for minute in range(10):
        for second, hr in ((10, 60.0), (40, 80.0)):
            batch.append(samples.vitals(ts=NOW + timedelta(minutes=minute, seconds=second), hr=hr, spo2=90.0 + minute))
    with connect(url) as conn:
        _insert_vitals(conn, batch)
        live = vitals_series(conn, "timescale", bed_id="icu1-bed01", start=NOW, end=NOW + timedelta(minutes=10))
        refresh_rollups(conn, "timescale", NOW, NOW + timedelta(minutes=6))
        after = vitals_series(conn, "timescale", bed_id="icu1-bed01", start=NOW, end=NOW + timedelta(minutes=10))
        five = vitals_series(
            conn,
            "timescale",
            bed_id="icu1-bed01",
            start=NOW,
            end=NOW + timedelta(minutes=10),
            width=timedelta(minutes=5),
        )
    assert live == after
    assert [b.n for b in after] == [2] * 10
    assert all(b.hr_avg == pytest.approx(70.0) for b in after)
    # The same figures test_database.py asserts for plain PostgreSQL.
    assert [(b.bucket, b.n) for b in five] == [(NOW, 10), (NOW + timedelta(minutes=5), 10)]
    assert five[0].spo2_avg == pytest.approx(92.0)
    assert five[1].spo2_min == pytest.approx(95.0)


def test_alert_history_and_audit_trail_on_timescale(timescale):
    url, _ = timescale
    with connect(url) as conn:
        writer = DatabaseWriter(conn)
        writer.write_alerts([samples.alert(2, AlertState.ACKNOWLEDGED), samples.alert(1)])
        assert conn.execute("SELECT version FROM alerts").fetchall() == [(2,)]
        with pytest.raises(Exception, match="append-only"):
            conn.execute("DELETE FROM alert_versions")
