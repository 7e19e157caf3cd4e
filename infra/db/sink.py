"""`icu sink`: the database sink, a Kafka consumer group writing every stored topic to PostgreSQL.

It consumes ``vitals``, ``detections``, ``evidence``, ``camera-status``, ``alerts`` and
``alert-acks`` (never ``alerts-fhir``, which is for clinical systems) and writes each polled
batch in **one transaction**: the batch's offsets are committed as one unit after the handler
returns, so committing tables separately would gain nothing (a failure in one table still
redelivers the whole batch) and would cost a commit, and so a WAL flush, per table instead of
one per batch. Inside it each table is a savepoint, so a row the database refuses is found and
dead-lettered without losing the rest.

Every write is idempotent (unique indexes; duplicates are skipped, see ``infra/db/writer.py``),
which is what makes at-least-once consumption safe: a batch redelivered after a crash, a
rebalance or a commit whose outcome was lost inserts nothing twice.

When the database is unreachable or restarting, :meth:`DatabaseSink.handle` raises
:class:`DatabaseUnavailable`; the consume loop then pauses its partitions, backs off, commits
nothing and hands the same batch back, and the sink opens a new connection for it. Nothing is
lost and nothing is skipped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import psycopg
from pydantic import Field

from icu.contracts import Alert, AlertAck, CameraStatus, Contract, Detection, Evidence, Topic, Vitals
from icu.kafka import ConsumeLoop, DeadLetterPublisher, GracefulStop, Producer, Received, Rejected, create_consumer
from icu.settings import DatabaseSettings, ObservabilitySettings
from infra.db.migrate import connect, discover, redact
from infra.db.writer import DatabaseWriter
from infra.errors import InfraError
from infra.settings import TopicsAdminSettings

if TYPE_CHECKING:
    from infra.observability import Observability

log = logging.getLogger(__name__)

STAGE: Final = "db-sink"

SINK_TOPICS: Final = (
    Topic.VITALS,
    Topic.DETECTIONS,
    Topic.EVIDENCE,
    Topic.CAMERA_STATUS,
    Topic.ALERTS,
    Topic.ALERT_ACKS,
)
"""What the sink stores. ``alerts-fhir`` carries FHIR resources for other systems, not a contract."""


class SinkSettings(TopicsAdminSettings, DatabaseSettings, ObservabilitySettings):
    """`icu sink`: where to read, where to write, how big a transaction is, how to ride out outages."""

    sink_group: str = Field(default="icu-sink", min_length=1, description="Kafka consumer group.")
    sink_max_batch: int = Field(
        default=2000, ge=1, le=100_000, description="Most records written per transaction (records per poll)."
    )
    sink_start: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a new group starts: earliest (store everything still on the topics) or latest.",
    )
    sink_max_backoff_s: float = Field(
        default=10.0, ge=0.1, le=300, description="Longest wait between retries while the database is down."
    )
    sink_db_timeout_s: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="Connect timeout, and how long unacknowledged writes may hang before the connection is "
        "given up (TCP user timeout), seconds.",
    )


class DatabaseUnavailable(Exception):
    """The database could not take the batch now (unreachable, restarting, out of space, schema
    missing): the consume loop retries the same batch with backoff and commits nothing."""


# SQLSTATE classes in which the database refuses the data itself (22 data exception, 23 integrity
# constraint violation, 54 program limit exceeded): the same rows would fail on every retry.
_REFUSED_CLASSES: Final = frozenset({"22", "23", "54"})


def refused_by_database(exc: psycopg.Error) -> bool:
    """True when ``exc`` says the database refuses the rows themselves (a value out of range, a
    constraint): they are dead-lettered. Anything else (connection lost, server shutting down,
    disk full, a table missing) is not the messages' fault and may pass later: retried."""
    sqlstate = exc.sqlstate
    return sqlstate is not None and sqlstate[:2] in _REFUSED_CLASSES


def describe(exc: BaseException) -> str:
    """One line: the error class, SQLSTATE when there is one, and the first line of the message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    sqlstate = getattr(exc, "sqlstate", None)
    code = f" [{sqlstate}]" if sqlstate else ""
    return f"{type(exc).__name__}{code}: {first}" if first else f"{type(exc).__name__}{code}"


Write = Callable[[DatabaseWriter, Sequence[Any]], int]


@dataclass(frozen=True)
class TableRoute:
    """Which messages go to which table through which writer method."""

    message: type[Contract]
    table: str
    write: Write


ROUTES: Final[tuple[TableRoute, ...]] = (
    TableRoute(Vitals, "vitals", DatabaseWriter.write_vitals),
    TableRoute(Detection, "detections", DatabaseWriter.write_detections),
    TableRoute(Evidence, "evidence", DatabaseWriter.write_evidence),
    TableRoute(CameraStatus, "camera_status", DatabaseWriter.write_camera_status),
    # Alert versions before acknowledgements: an ack and the alert version it produced often
    # share a batch, and readers of the audit trail see the version first.
    TableRoute(Alert, "alert_versions", DatabaseWriter.write_alerts),
    TableRoute(AlertAck, "alert_acks", DatabaseWriter.write_acks),
)
_ROUTE_OF: Final[dict[type, TableRoute]] = {route.message: route for route in ROUTES}


def group_by_table(received: Sequence[Received]) -> tuple[list[tuple[TableRoute, list[Received]]], list[Rejected]]:
    """Split a batch into one group per table (in :data:`ROUTES` order, messages in arrival order)
    and the messages no table stores (rejected for good)."""
    groups: dict[TableRoute, list[Received]] = {}
    rejected: list[Rejected] = []
    for item in received:
        route = _ROUTE_OF.get(type(item.message))
        if route is None:
            kind = type(item.message).__name__
            rejected.append(Rejected(item.record, f"the database sink does not store {kind} messages", "unsupported"))
            continue
        groups.setdefault(route, []).append(item)
    return [(route, groups[route]) for route in ROUTES if route in groups], rejected


@dataclass
class SinkStats:
    received: Counter[str] = field(default_factory=Counter)  # messages handed to the sink, per table
    stored: Counter[str] = field(default_factory=Counter)  # new rows, per table (the rest were duplicates)
    refused: int = 0  # messages the database refused, dead-lettered
    connections: int = 0  # connections opened (more than one: reconnected after an outage)
    outages: int = 0  # periods during which the database could not take a batch
    failed_attempts: int = 0  # batch attempts that failed on an unavailable database

    def summary(self) -> dict[str, Any]:
        received, stored = sum(self.received.values()), sum(self.stored.values())
        return {
            "received": received,
            "stored": stored,
            "duplicates": received - stored - self.refused,
            "refused": self.refused,
            "stored_by_table": dict(sorted(self.stored.items())),
            "outages": self.outages,
            "failed_attempts": self.failed_attempts,
            "connections": self.connections,
        }


class DatabaseSink:
    """The consume loop's handler: stores each batch in one transaction on one connection,
    reconnecting after the connection broke. Not thread-safe."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, application_name: str = "icu-sink") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.application_name = application_name
        self.stats = SinkStats()
        self._conn: psycopg.Connection | None = None
        self._writer: DatabaseWriter | None = None
        self._down_since: float | None = None
        self._failed_in_outage = 0

    # -- the handler ------------------------------------------------------------------------

    def handle(self, received: list[Received]) -> list[Rejected]:
        """Store a batch; return the messages refused for good. Raises :class:`DatabaseUnavailable`
        when the batch must be retried: its transaction was rolled back, or, when the connection
        broke during the commit, may have gone through, in which case the retry's rows are all
        duplicates and skipped."""
        groups, rejected = group_by_table(received)
        if not groups:
            return rejected
        try:
            refused, stored = self._store_reconnecting(groups)
        except DatabaseUnavailable as exc:
            self._note_failure(exc, len(received))
            raise
        for route, items in groups:
            self.stats.received[route.table] += len(items)
        self.stats.stored.update(stored)
        self.stats.refused += len(refused)
        self._note_recovery(len(received))
        return rejected + refused

    def _store_reconnecting(
        self, groups: list[tuple[TableRoute, list[Received]]]
    ) -> tuple[list[Rejected], Counter[str]]:
        reused = self._usable(self._conn)
        writer = self._connection()
        try:
            return self._store(writer, groups)
        except psycopg.Error as exc:
            if refused_by_database(exc) or not (reused and writer.conn.broken):
                raise self._unavailable(exc) from exc
            # The connection broke (most often while idle: a database restart between batches, a
            # proxy that dropped it): one immediate try on a new connection before backing off.
            log.info("the database connection broke (%s); trying the batch once more on a new connection",
                     describe(exc))  # fmt: skip
        writer = self._connection()
        try:
            return self._store(writer, groups)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    def _store(
        self, writer: DatabaseWriter, groups: list[tuple[TableRoute, list[Received]]]
    ) -> tuple[list[Rejected], Counter[str]]:
        refused: list[Rejected] = []
        stored: Counter[str] = Counter()
        # One transaction per batch; the writer's own transactions nest in it as savepoints.
        with writer.conn.transaction():
            for route, items in groups:
                stored[route.table] += self._store_group(writer, route, items, refused)
        return refused, stored

    @staticmethod
    def _store_group(writer: DatabaseWriter, route: TableRoute, items: list[Received], refused: list[Rejected]) -> int:
        try:
            return route.write(writer, [item.message for item in items])
        except psycopg.Error as exc:
            if not refused_by_database(exc):
                raise
            log.warning("%s refused a batch of %d (%s); finding the rows it refuses", route.table, len(items),
                        describe(exc))  # fmt: skip
        # Rare (contracts validate everything the schema checks): one savepoint per message
        # finds the rows the database refuses, and stores the others.
        stored = 0
        for item in items:
            try:
                stored += route.write(writer, [item.message])
            except psycopg.Error as exc:
                if not refused_by_database(exc):
                    raise
                refused.append(Rejected(item.record, f"{route.table}: the database refused the row: {describe(exc)}",
                                        "database"))  # fmt: skip
        return stored

    # -- connections --------------------------------------------------------------------------

    @staticmethod
    def _usable(conn: psycopg.Connection | None) -> bool:
        return conn is not None and not conn.closed and not conn.broken

    def _connection(self) -> DatabaseWriter:
        if self._writer is not None and self._usable(self._conn):
            return self._writer
        self.close()
        timeout = max(1, round(self.timeout_s))
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=timeout,
                application_name=self.application_name,
                # A database that vanished without closing the connection (host down, network cut)
                # fails the write after the timeout instead of hanging the sink.
                keepalives=1,
                keepalives_idle=max(1, timeout // 2),
                keepalives_interval=max(1, timeout // 4),
                keepalives_count=3,
                tcp_user_timeout=timeout * 1000,
            )
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc
        self.stats.connections += 1
        if self.stats.connections > 1:
            log.info("reconnected to the database at %s", redact(self.url))
        self._conn = conn
        self._writer = DatabaseWriter(conn)
        return self._writer

    def _unavailable(self, exc: psycopg.Error) -> DatabaseUnavailable:
        if refused_by_database(exc):
            # Only reached when a refusal escapes per-row isolation (the commit itself refused,
            # e.g. a deferred constraint): not one message's fault, so hold the batch.
            return DatabaseUnavailable(f"the database refused the batch as a whole: {describe(exc)}")
        return DatabaseUnavailable(f"database at {redact(self.url)} unavailable: {describe(exc)}")

    def _note_failure(self, exc: DatabaseUnavailable, records: int) -> None:
        self.stats.failed_attempts += 1
        self._failed_in_outage += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.stats.outages += 1
            log.warning(
                "%s. Holding a batch of %d records: consuming is paused and the batch will be retried with "
                "backoff on a new connection; no offsets are committed until it is stored",
                exc,
                records,
            )

    def _note_recovery(self, records: int) -> None:
        if self._down_since is None:
            return
        log.warning(
            "database available again after %.1f s and %d failed attempts: the held batch of %d records is "
            "stored, consuming resumes",
            time.monotonic() - self._down_since,
            self._failed_in_outage,
            records,
        )
        self._down_since = None
        self._failed_in_outage = 0

    @property
    def database_down(self) -> bool:
        """True from a failed batch until one is stored again."""
        return self._down_since is not None

    def close(self) -> None:
        conn, self._conn, self._writer = self._conn, None, None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error as exc:
                log.debug("closing a broken database connection: %s", exc)

    # -- start-up -----------------------------------------------------------------------------

    def require_schema(self) -> int:
        """Refuse to start unless the database is reachable and migrated to this build's schema
        (the sink never migrates: `icu db migrate` or `icu up` does). Returns the schema version."""
        needed = max(m.version for m in discover("plain"))
        with connect(self.url) as conn:
            exists = conn.execute("SELECT to_regclass('icu_schema_migrations') IS NOT NULL").fetchone()
            has_table = exists is not None and bool(exists[0])
            row = conn.execute("SELECT max(version) FROM icu_schema_migrations").fetchone() if has_table else None
        current = int(row[0]) if row and row[0] is not None else 0
        if current < needed:
            raise InfraError(
                f"the database at {redact(self.url)} has schema version {current}; the sink needs {needed}: "
                "run `icu db migrate` first"
            )
        return current


def consume_loop(settings: SinkSettings, sink: DatabaseSink, producer: Producer, stop: GracefulStop) -> ConsumeLoop:
    """The sink's consume loop: every stored topic in ``settings.sink_group``, malformed records
    and rows the database refuses dead-lettered, database outages retried with backoff."""
    topics = {topic.full_name(settings.topic_prefix): topic for topic in SINK_TOPICS}
    consumer = create_consumer(
        settings,
        group_id=settings.sink_group,
        topics=list(topics),
        auto_offset_reset=settings.sink_start,
        max_poll_records=settings.sink_max_batch,
    )
    dead_letters = DeadLetterPublisher(producer, Topic.DEAD_LETTER.full_name(settings.topic_prefix), STAGE)
    return ConsumeLoop(
        consumer=consumer,
        topics=topics,
        handler=sink.handle,
        dead_letters=dead_letters,
        stop=stop,
        max_backoff_s=settings.sink_max_backoff_s,
    )


def observe(observability: Observability, sink: DatabaseSink, loop: ConsumeLoop) -> None:
    """Health and Prometheus metrics of the sink: ready while the database takes batches."""
    from infra.observability import by_label, watch_consume_loop

    stats = sink.stats
    watch_consume_loop(observability, loop, STAGE)
    observability.health.check(
        "database", lambda: (not sink.database_down, "unavailable, batch held" if sink.database_down else "ok")
    )
    observability.counter_from("icu_sink_received", "Messages handed to the sink, per table.",
                               lambda: by_label(stats.received), ("table",))  # fmt: skip
    observability.counter_from("icu_sink_stored", "New rows stored, per table (the rest were duplicates).",
                               lambda: by_label(stats.stored), ("table",))  # fmt: skip
    observability.counter_from("icu_sink_refused", "Rows the database refused (dead-lettered).",
                               lambda: [((), stats.refused)])  # fmt: skip
    observability.counter_from("icu_sink_outages", "Periods the database could not take a batch.",
                               lambda: [((), stats.outages)])  # fmt: skip
