import pytest

from infra.db.migrate import Migration, discover, redact, split_statements
from infra.errors import InfraError
from infra.settings import TopicsAdminSettings
from infra.topics import TOPIC_SPECS, planned_topics


def test_both_backends_get_every_version_in_order():
    plain, timescale = discover("plain"), discover("timescale")
    assert [m.version for m in plain] == [m.version for m in timescale] == sorted({m.version for m in plain})
    assert plain[0].version == 1


def test_partitioning_placeholder_is_rendered_per_backend():
    plain = {m.name: m for m in discover("plain")}["timeseries"].sql
    timescale = {m.name: m for m in discover("timescale")}["timeseries"].sql
    assert "PARTITION BY RANGE (ts)" in plain
    assert "PARTITION BY" not in timescale
    assert "@PARTITION_BY_TS@" not in plain + timescale


def test_continuous_aggregates_run_outside_a_transaction():
    by_name = {m.name: m for m in discover("timescale")}
    assert not by_name["rollups"].transactional
    assert all(m.transactional for m in discover("plain"))
    statements = split_statements(by_name["rollups"].sql)
    assert len(statements) == 4
    assert statements[0].startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m")


def test_checksum_changes_with_content():
    assert Migration(1, "a", "SELECT 1").checksum != Migration(1, "a", "SELECT 2").checksum


def test_dollar_quoted_bodies_cannot_be_split():
    with pytest.raises(InfraError):
        split_statements("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;")


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://icu:pw@db:5432/icu", "postgresql://icu:***@db:5432/icu"),
        ("postgresql://db/icu?password=pw&sslmode=require", "postgresql://db/icu?password=***&sslmode=require"),
        ("host=db password=pw dbname=icu", "host=db password=*** dbname=icu"),
        ("host=db password='p w' dbname=icu", "host=db password=*** dbname=icu"),
        ("postgresql://icu@db/icu", "postgresql://icu@db/icu"),
    ],
)
def test_redact_hides_passwords_only(dsn, expected):
    assert redact(dsn) == expected


def test_planned_topics_have_explicit_partitions_and_retention():
    settings = TopicsAdminSettings(topic_prefix="ward3", topic_partitions=12, topic_frames_retention_ms=600_000)
    planned = {t.name: t for t in planned_topics(settings)}
    assert set(planned) == {f"ward3.{topic.value}" for topic in TOPIC_SPECS}
    assert planned["ward3.frames"].topic_configs["retention.ms"] == "600000"
    assert int(planned["ward3.alerts"].topic_configs["retention.ms"]) >= 365 * 24 * 3600 * 1000
    assert planned["ward3.vitals"].num_partitions == 12
    assert planned["ward3.dead-letter"].num_partitions == 3
