"""The database sink's pure parts: error classification, grouping by table, settings, CLI help."""

from dataclasses import dataclass

import psycopg
import pytest

from icu.cli import build_parser
from icu.contracts import Topic
from icu.kafka import Received
from icu.settings import ConfigError, load_settings
from infra.db.sink import (
    ROUTES,
    SINK_TOPICS,
    DatabaseSink,
    SinkSettings,
    SinkStats,
    describe,
    group_by_table,
    refused_by_database,
)
from infra.db.writer import DatabaseWriter
from tests import samples


@dataclass(frozen=True)
class Record:
    """The parts of a consumed record the sink's results refer to."""

    topic: str
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.CheckViolation("new row violates check constraint"),
        psycopg.errors.NotNullViolation("null value in column"),
        psycopg.errors.NumericValueOutOfRange("value out of range"),
        psycopg.errors.InvalidTextRepresentation("invalid input syntax"),
        psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"),
    ],
    ids=type,
)
def test_the_database_refusing_the_data_is_permanent(error):
    assert refused_by_database(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection failed: Connection refused"),  # no SQLSTATE: client side
        psycopg.InterfaceError("the connection is closed"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.CannotConnectNow("the database system is starting up"),
        psycopg.errors.DiskFull("could not extend file"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.UndefinedTable('relation "evidence" does not exist'),
    ],
    ids=type,
)
def test_an_unavailable_or_unready_database_is_retried(error):
    assert not refused_by_database(error)


def test_describe_names_the_class_and_sqlstate_on_one_line():
    assert describe(psycopg.errors.AdminShutdown("terminating connection\nDETAIL: x")) == (
        "AdminShutdown [57P01]: terminating connection"
    )
    assert describe(psycopg.OperationalError("")) == "OperationalError"


def test_a_batch_is_grouped_by_table_in_a_fixed_order_and_foreign_messages_rejected():
    received = [
        Received(samples.ack(), Record("p.alert-acks", offset=1)),
        Received(samples.vitals(), Record("p.vitals", offset=2)),
        Received(samples.alert(2), Record("p.alerts", offset=3)),
        Received(samples.frame(), Record("p.frames", offset=4)),
        Received(samples.vitals(hr=61.0), Record("p.vitals", offset=5)),
        Received(samples.evidence(), Record("p.evidence", offset=6)),
    ]
    groups, rejected = group_by_table(received)
    assert [(route.table, [item.record.offset for item in items]) for route, items in groups] == [
        ("vitals", [2, 5]),
        ("evidence", [6]),
        ("alert_versions", [3]),
        ("alert_acks", [1]),
    ]
    assert [(r.record.offset, r.error_type) for r in rejected] == [(4, "unsupported")]
    assert "does not store Frame" in rejected[0].reason


def test_every_sink_topic_has_a_table_and_fhir_is_not_read():
    assert {route.message.topic for route in ROUTES} == set(SINK_TOPICS)
    assert Topic.ALERTS_FHIR not in SINK_TOPICS
    assert all(callable(getattr(DatabaseWriter, route.write.__name__)) for route in ROUTES)


def test_summary_counts_duplicates_as_what_was_neither_stored_nor_refused():
    stats = SinkStats()
    stats.received.update({"vitals": 10, "evidence": 2})
    stats.stored.update({"vitals": 7, "evidence": 2})
    stats.refused = 1
    summary = stats.summary()
    assert (summary["received"], summary["stored"], summary["duplicates"], summary["refused"]) == (12, 9, 2, 1)
    assert summary["stored_by_table"] == {"evidence": 2, "vitals": 7}


def test_settings_defaults_and_errors_name_the_variable(monkeypatch):
    for name in ("ICU_SINK_GROUP", "ICU_SINK_MAX_BATCH", "ICU_SINK_START", "ICU_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(SinkSettings)
    assert (settings.sink_group, settings.sink_max_batch, settings.sink_start) == ("icu-sink", 2000, "earliest")
    with pytest.raises(ConfigError, match="ICU_DATABASE_URL is not set"):
        settings.require_database_url()
    monkeypatch.setenv("ICU_SINK_MAX_BATCH", "0")
    with pytest.raises(ConfigError, match="ICU_SINK_MAX_BATCH"):
        load_settings(SinkSettings)
    monkeypatch.setenv("ICU_SINK_MAX_BATCH", "500")
    monkeypatch.setenv("ICU_DATABASE_URL", "postgresql://icu@db/icu")
    settings = load_settings(SinkSettings, sink_group="from-flag")
    assert (settings.sink_group, settings.sink_max_batch) == ("from-flag", 500)
    assert settings.require_database_url() == "postgresql://icu@db/icu"


def test_sink_help_names_the_environment_variables(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["sink", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for variable in (
        "ICU_KAFKA_BOOTSTRAP_SERVERS",
        "ICU_TOPIC_PREFIX",
        "ICU_DATABASE_URL",
        "ICU_SINK_GROUP",
        "ICU_SINK_MAX_BATCH",
        "ICU_SINK_START",
    ):
        assert variable in text
    assert "alerts-fhir is not read" in text


def test_a_sink_holds_no_connection_until_the_first_batch():
    sink = DatabaseSink("postgresql://nobody@127.0.0.1:1/none")
    assert sink.handle([]) == []
    assert sink.stats.connections == 0
    sink.close()
