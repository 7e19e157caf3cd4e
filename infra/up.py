"""`icu up`: the embedded broker and database in the foreground, ready for every service.

Starts Tansu on 127.0.0.1, uses ``ICU_DATABASE_URL`` or starts an embedded PostgreSQL,
migrates the schema, creates the topics, prints the env lines other commands need, runs
partition maintenance periodically, and stops everything on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import psycopg

from icu.kafka import GracefulStop
from infra.broker import EmbeddedBroker
from infra.db.maintenance import maintain, prepare_database
from infra.db.migrate import Backend, connect, redact
from infra.errors import InfraError
from infra.postgres import EmbeddedPostgres
from infra.settings import TopicsAdminSettings, UpSettings
from infra.topics import create_topics

log = logging.getLogger(__name__)


@dataclass
class UpTimings:
    broker_start_s: float = 0.0
    database_start_s: float = 0.0
    migrate_s: float = 0.0
    topics_s: float = 0.0


def run_up(settings: UpSettings, stop: GracefulStop, out: TextIO = sys.stdout) -> int:
    """Run until ``stop`` is set; returns the process exit code."""
    broker = EmbeddedBroker(port=settings.broker_port, log_file=settings.state_dir / "broker.log")
    postgres: EmbeddedPostgres | None = None
    timings = UpTimings()
    try:
        broker.start()
        timings.broker_start_s = broker.started_in_s or 0.0
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
            database_label = f"{redact(url)} (ICU_DATABASE_URL)"
        else:
            postgres = EmbeddedPostgres(settings.state_dir / "postgres", port=settings.postgres_port).start()
            timings.database_start_s = postgres.started_in_s or 0.0
            url = postgres.url()
            database_label = f"{url} (embedded, data in {postgres.data_dir})"

        started = time.perf_counter()
        report, _ = prepare_database(
            url, preference=settings.database_timeseries, retention_days=settings.database_retention_days
        )
        timings.migrate_s = time.perf_counter() - started

        started = time.perf_counter()
        topic_settings = TopicsAdminSettings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=settings.topic_prefix,
            topic_partitions=settings.topic_partitions,
            topic_replication_factor=settings.topic_replication_factor,
            topic_frames_retention_ms=settings.topic_frames_retention_ms,
        )
        topics = create_topics(topic_settings)
        timings.topics_s = time.perf_counter() - started

        env_lines = [
            f"export ICU_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}",
            f"export ICU_DATABASE_URL={url if postgres is not None else redact(url)}",
            f"export ICU_TOPIC_PREFIX={settings.topic_prefix}",
        ]
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        if postgres is not None:
            (settings.state_dir / "env").write_text("\n".join(env_lines) + "\n")
        lines = [
            "icu-watch infrastructure is up.",
            f"  Kafka broker (embedded Tansu, in memory): {broker.bootstrap_servers}"
            f"  [started in {timings.broker_start_s * 1000:.0f} ms]",
            f"  PostgreSQL: {database_label}",
            f"  schema version {report.current_version}, {report.backend} time series"
            f"  [migrated in {timings.migrate_s * 1000:.0f} ms]",
            f"  topics ({len(topics)}, created in {timings.topics_s * 1000:.0f} ms): "
            + ", ".join(f"{t.name}[{t.partitions}]" for t in topics),
            "",
            "In other shells (also saved to "
            + str(settings.state_dir / "env")
            + ("" if postgres else ", not saved: the database URL is yours")
            + "):",
            *env_lines,
            "",
            "Press Ctrl-C to stop.",
        ]
        out.write("\n".join(lines) + "\n")
        out.flush()
        return _serve(settings, broker, url, report.backend, stop)
    except InfraError as exc:
        log.error("%s", exc)
        return 1
    finally:
        broker.stop()
        if postgres is not None:
            postgres.stop()
        log.info("stopped")


def _serve(settings: UpSettings, broker: EmbeddedBroker, url: str, backend: Backend, stop: GracefulStop) -> int:
    next_maintenance = time.monotonic() + settings.maintenance_interval_s
    while not stop.wait(1.0):
        code = broker.poll()
        if code is not None:
            log.error("the embedded broker exited with code %s; see %s", code, broker.log_file)
            return 1
        if time.monotonic() >= next_maintenance:
            next_maintenance = time.monotonic() + settings.maintenance_interval_s
            try:
                with connect(url) as conn:
                    result = maintain(conn, backend, retention_days=settings.database_retention_days)
                log.info("maintenance: %d partitions created, %d dropped", len(result.created), len(result.dropped))
            except (InfraError, psycopg.Error) as exc:
                # The database may be restarting; the next pass catches up.
                log.warning("maintenance skipped: %s", exc)
    return 0
