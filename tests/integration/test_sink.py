"""The database sink against the embedded broker and a real PostgreSQL: every stored topic,
idempotent replays, dead letters, and database outages ridden out without loss."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from icu.cli import main
from icu.contracts import AckAction, AlertState, Contract, DeadLetter, Finding, Topic, decode, encode, kafka_key
from icu.kafka import ConsumeLoop, GracefulStop, create_producer
from infra.db.migrate import connect, migrate
from infra.db.sink import DatabaseSink, SinkSettings, consume_loop
from infra.db.writer import DETECTIONS, EVIDENCE
from tests import samples
from tests.fixtures import load
from tests.integration.records import read_records

T0 = samples.T0
JPEG = load("frame-32x24.jpg")


# --- helpers -----------------------------------------------------------------------------


def _settings(kafka_settings, url: str, **overrides: object) -> SinkSettings:
    fields: dict[str, object] = {
        "kafka_bootstrap_servers": kafka_settings.kafka_bootstrap_servers,
        "topic_prefix": kafka_settings.topic_prefix,
        "topic_partitions": kafka_settings.topic_partitions,
        "database_url": url,
        "sink_group": f"sink-{uuid.uuid4().hex[:8]}",
        "sink_max_backoff_s": 1.0,
        "sink_db_timeout_s": 5.0,
    }
    fields.update(overrides)
    return SinkSettings.model_validate(fields)


def _publish(producer, prefix: str, items: list[Contract | tuple[Topic, bytes]]) -> None:
    for item in items:
        if isinstance(item, tuple):
            topic, raw = item
            producer.send(topic.full_name(prefix), key=b"icu1-bed01", value=raw)
        else:
            producer.send(item.topic.full_name(prefix), key=kafka_key(item), value=encode(item))
    producer.flush()


def _count(url: str, table: str) -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


class SinkRun:
    """The sink's consume loop on a thread, as `icu sink` runs it (minus signal handling)."""

    def __init__(self, settings: SinkSettings, producer, url: str | None = None) -> None:
        self.sink = DatabaseSink(url or settings.require_database_url(), timeout_s=settings.sink_db_timeout_s)
        self.stop = GracefulStop()
        self.loop: ConsumeLoop = consume_loop(settings, self.sink, producer, self.stop)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> SinkRun:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self._thread.join(30)
        self.sink.close()
        assert not self._thread.is_alive(), "the sink did not stop"

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 45.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise AssertionError(f"the sink crashed: {self.error!r}") from self.error
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; sink stats {self.sink.stats.summary()}")

    def wait_handled(self, records: int) -> None:
        stats = self.loop.stats
        self.wait_for(lambda: stats.handled + stats.dead_lettered >= records, f"{records} records handled")


# --- the sink ----------------------------------------------------------------------------


# Decided findings per detection: none from a producer without decision rules, then none, one, two.
FINDINGS = (None, [], [Finding.APNEA], [Finding.TWITCH, Finding.GRIMACE])


def _mixed_messages() -> list[Contract]:
    vitals = [
        samples.vitals(bed_id=bed, ts=T0 + timedelta(seconds=i), hr=70.0 + i)
        for bed in ("icu1-bed01", "icu1-bed02")
        for i in range(10)
    ]
    detections = [
        samples.detection(ts=T0 + timedelta(seconds=i), seq=i).model_copy(
            update={"window_end": T0 + timedelta(seconds=i + 2), "degraded": i % 2 == 1, "findings": FINDINGS[i]}
        )
        for i in range(4)
    ]
    evidence = samples.evidence().model_copy(update={"keyframe_jpeg": JPEG})
    statuses = [samples.camera_status(ts=T0 + timedelta(seconds=5 * i)) for i in range(2)]
    # Out of order: the resolved version arrives before the first one.
    alerts = [samples.alert(3, AlertState.RESOLVED), samples.alert(1)]
    acks = [samples.ack(), samples.ack(AckAction.SNOOZE)]
    return [*vitals, *detections, evidence, *statuses, *alerts, *acks]


MALFORMED: list[tuple[Topic, bytes]] = [
    (Topic.VITALS, b'{"schema_version": 1, "bed_id": "icu1-bed01"'),
    (Topic.EVIDENCE, encode(samples.evidence()).replace(b'"saliency_cols":2', b'"saliency_cols":3')),
]


def test_every_topic_is_stored_once_and_malformed_records_are_dead_lettered(kafka_settings, database_url):
    migrate(database_url)
    prefix = kafka_settings.topic_prefix
    producer = create_producer(kafka_settings)
    messages = _mixed_messages()
    fhir = (Topic.ALERTS_FHIR, json.dumps({"resourceType": "DetectedIssue", "status": "final"}).encode())
    _publish(producer, prefix, [*messages[:10], MALFORMED[0], *messages[10:], MALFORMED[1], fhir])
    settings = _settings(kafka_settings, database_url)

    with SinkRun(settings, producer) as run:
        run.wait_handled(len(messages) + len(MALFORMED))
    assert run.loop.stats.dead_lettered == len(MALFORMED)
    assert run.sink.stats.summary()["stored"] == len(messages)

    with connect(database_url) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("vitals", "detections", "evidence", "camera_status", "alert_versions", "alerts", "alert_acks")
        }
        assert counts == {
            "vitals": 20,
            "detections": 4,
            "evidence": 1,
            "camera_status": 2,
            "alert_versions": 2,
            "alerts": 1,
            "alert_acks": 2,
        }
        assert conn.execute("SELECT hr, spo2, consciousness FROM vitals WHERE bed_id = 'icu1-bed02' AND ts = %s",
                            (T0 + timedelta(seconds=9),)).fetchone() == (79.0, 96.0, "A")  # fmt: skip
        assert conn.execute("SELECT seq, degraded, window_end - ts FROM detections ORDER BY seq").fetchall() == [
            (i, i % 2 == 1, timedelta(seconds=2)) for i in range(4)
        ]
        assert [r[0] for r in conn.execute("SELECT findings FROM detections ORDER BY seq")] == [
            None,
            [],
            ["apnea"],
            ["twitch", "grimace"],
        ]
        evidence = conn.execute(
            "SELECT finding, seq, window_start, window_end, saliency_rows, saliency_cols, saliency, keyframe_jpeg, "
            "probability, model FROM evidence"
        ).fetchone()
        finding, seq, window_start, window_end, rows, cols, saliency, keyframe, probability, model = evidence
        assert (finding, seq, rows, cols, model) == ("apnea", 7, 2, 2, "temporal-small")
        assert (window_start, window_end) == (T0 - timedelta(seconds=10), T0 + timedelta(seconds=2))
        assert saliency == pytest.approx([0.1, 0.2, 0.3, 0.4])
        assert probability == pytest.approx(0.82)
        assert bytes(keyframe) == JPEG  # the JPEG round-trips byte for byte through COPY and bytea
        assert conn.execute("SELECT version, state, resolved_at FROM alerts").fetchone() == (
            3,
            "resolved",
            T0 + timedelta(minutes=5),
        )
        assert sorted(r[0] for r in conn.execute("SELECT action FROM alert_acks")) == ["acknowledge", "snooze"]

    letters = [
        decode(DeadLetter, r.value) for r in read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix), 3)
    ]
    assert len(letters) == len(MALFORMED)  # nothing from alerts-fhir: the sink never reads it
    by_topic = {letter.source_topic: letter for letter in letters}
    assert set(by_topic) == {Topic.VITALS.full_name(prefix), Topic.EVIDENCE.full_name(prefix)}
    assert "not valid JSON" in by_topic[Topic.VITALS.full_name(prefix)].reason
    assert "grid" in by_topic[Topic.EVIDENCE.full_name(prefix)].reason
    assert all(letter.stage == "db-sink" and letter.error_type == "contract" for letter in letters)

    # The same messages again on the topics, plus the missing alert version: the same group
    # reads only the new records and stores only the new version.
    _publish(producer, prefix, [*messages, samples.alert(2, AlertState.ACKNOWLEDGED)])
    with SinkRun(settings, producer) as again:
        again.wait_handled(len(messages) + 1)
    assert again.sink.stats.summary()["stored"] == 1
    assert again.sink.stats.summary()["duplicates"] == len(messages)

    # A new group replays both copies of everything from the beginning: nothing new.
    replay_settings = _settings(kafka_settings, database_url)
    with SinkRun(replay_settings, producer) as replay:
        replay.wait_handled(2 * len(messages) + 1 + len(MALFORMED))
    assert replay.sink.stats.summary()["stored"] == 0
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM vitals").fetchone()[0] == 20
        assert conn.execute("SELECT count(*) FROM evidence").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM alert_versions").fetchone()[0] == 3
        assert conn.execute("SELECT version, state FROM alerts").fetchall() == [(3, "resolved")]
    producer.close()


def test_a_row_the_database_refuses_is_dead_lettered_and_the_rest_of_the_batch_stored(kafka_settings, database_url):
    migrate(database_url)
    with connect(database_url) as conn:
        # A rule stricter than the contract, as a newer schema or a site policy might add.
        conn.execute("ALTER TABLE vitals ADD CONSTRAINT site_hr_limit CHECK (hr IS NULL OR hr < 250)")
    prefix = kafka_settings.topic_prefix
    producer = create_producer(kafka_settings)
    batch = [samples.vitals(ts=T0 + timedelta(seconds=i), hr=80.0 + i) for i in range(5)]
    batch.insert(2, samples.vitals(ts=T0 + timedelta(minutes=1), hr=280.0))
    _publish(producer, prefix, [*batch, samples.camera_status()])

    with SinkRun(_settings(kafka_settings, database_url), producer) as run:
        run.wait_handled(len(batch) + 1)
    assert _count(database_url, "vitals") == 5
    assert _count(database_url, "camera_status") == 1
    assert run.sink.stats.refused == 1
    (record,) = read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix), 1)
    letter = decode(DeadLetter, record.value)
    assert letter.error_type == "database"
    assert "site_hr_limit" in letter.reason
    assert json.loads(letter.value)["hr"] == 280.0
    producer.close()


def test_the_new_columns_and_the_evidence_table_on_timescaledb(timescale_url):
    migrate(timescale_url)
    evidence = samples.evidence(ts=T0 + timedelta(days=1)).model_copy(update={"keyframe_jpeg": JPEG})
    detection = samples.detection(ts=T0 + timedelta(days=1)).model_copy(
        update={"window_end": T0 + timedelta(days=1, seconds=2), "degraded": True, "findings": [Finding.APNEA]}
    )
    with connect(timescale_url) as conn:
        # The engine cannot take COPY: plain inserts of the writer's rows check the schema.
        for target, message in ((EVIDENCE, evidence), (DETECTIONS, detection)):
            columns = ", ".join(target.columns)
            placeholders = ", ".join(["%s"] * len(target.columns))
            conn.execute(f"INSERT INTO {target.table} ({columns}) VALUES ({placeholders})", target.row(message))
        keyframe, saliency = conn.execute(
            "SELECT keyframe_jpeg, saliency FROM evidence WHERE ts = %s", (evidence.ts,)
        ).fetchone()
        assert (bytes(keyframe), saliency) == (JPEG, pytest.approx([0.1, 0.2, 0.3, 0.4]))
        assert conn.execute(
            "SELECT degraded, window_end, findings FROM detections WHERE ts = %s", (detection.ts,)
        ).fetchone() == (True, detection.window_end, ["apnea"])
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert "evidence" not in hypertables  # low volume: a plain table on both backends


# --- database outages --------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP relay between the sink and PostgreSQL. ``cut()`` drops every open
    connection and closes new ones at once (a database host gone from the network, as a client
    sees it); ``restore()`` relays again, to ``upstream_port``, which may change meanwhile."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def url(self, database_url: str) -> str:
        params = conninfo_to_dict(database_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            dropping = list(self._open)
        self._drop(*dropping)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            try:
                if cut:
                    raise OSError("cut")
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, target)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.parametrize("outage", ["restart", "network-cut", "cut-mid-batch"])
def test_a_database_outage_pauses_the_sink_and_loses_nothing(kafka_settings, dedicated_postgres, outage, caplog):
    caplog.set_level(logging.INFO)
    server = dedicated_postgres  # server.url() follows the server to its new port after a restart
    migrate(server.url())
    proxy = TcpProxy(server.port)
    prefix = kafka_settings.topic_prefix
    producer = create_producer(kafka_settings)
    before = [samples.vitals(ts=T0 + timedelta(seconds=i)) for i in range(30)]
    during = [samples.vitals(ts=T0 + timedelta(seconds=30 + i)) for i in range(50)]
    during += [samples.evidence().model_copy(update={"keyframe_jpeg": JPEG}), samples.alert(1), samples.ack()]
    settings = _settings(kafka_settings, proxy.url(server.url()))
    try:
        with SinkRun(settings, producer) as run:
            _publish(producer, prefix, before)
            run.wait_for(lambda: _count(server.url(), "vitals") == 30, "the first 30 vitals stored")

            if outage == "restart":
                server.stop()  # fast shutdown: the server ends the sink's connection
                _publish(producer, prefix, during)
            elif outage == "network-cut":
                proxy.cut()
                _publish(producer, prefix, during)
            else:
                # Hold the sink's COPY on a lock, then cut the network under it: the connection
                # breaks inside the batch's transaction, which the server then rolls back.
                with psycopg.connect(server.url()) as locker:
                    locker.execute("LOCK TABLE vitals IN SHARE MODE")
                    _publish(producer, prefix, during)
                    run.wait_for(lambda: _sink_waits_on_a_lock(server.url()), "the sink's write to wait on the lock")
                    proxy.cut()
                    locker.rollback()
            run.wait_for(lambda: run.sink.stats.failed_attempts >= 2, "the sink to retry at least twice")
            assert _count_safe(server.url(), outage) in (None, 30)  # nothing of the held batch is stored yet
            if outage == "restart":
                server.start()  # on a new port: the relay follows it, the sink's URL stays
                proxy.upstream_port = server.port
            proxy.restore()

            run.wait_for(lambda: _count(server.url(), "vitals") == 80, "every vitals reading stored after recovery")
            run.wait_handled(len(before) + len(during))
    finally:
        proxy.close()
        producer.close()

    stats = run.sink.stats
    assert run.loop.stats.handled == len(before) + len(during)  # each record handled once: none lost, none twice
    assert run.loop.stats.dead_lettered == 0
    assert run.loop.stats.retries >= 2
    assert stats.outages == 1
    assert stats.connections >= 2  # a new connection after the old one broke
    with connect(server.url()) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT ts) FROM vitals").fetchone() == (80, 80)
        assert conn.execute("SELECT keyframe_jpeg FROM evidence").fetchone()[0] == JPEG
        assert conn.execute("SELECT count(*) FROM alert_versions").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM alert_acks").fetchone()[0] == 1
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "infra.db.sink")
    assert "unavailable" in logged
    assert "will be retried" in logged
    assert "no offsets are committed" in logged
    assert "database available again" in logged
    assert "reconnected to the database" in logged


def _sink_waits_on_a_lock(url: str) -> bool:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'icu-sink' AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def _count_safe(url: str, outage: str) -> int | None:
    """The vitals count, or None while the server itself is down."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM vitals").fetchone()
    except psycopg.OperationalError:
        assert outage == "restart"
        return None
    return int(row[0]) if row else 0


# --- the command -------------------------------------------------------------------------


def test_icu_sink_runs_until_sigterm_and_prints_a_summary(kafka_settings, database_url, repo_root):
    migrate(database_url)
    prefix = kafka_settings.topic_prefix
    producer = create_producer(kafka_settings)
    messages = [samples.vitals(ts=T0 + timedelta(seconds=i)) for i in range(5)]
    messages.append(samples.evidence().model_copy(update={"keyframe_jpeg": JPEG}))
    _publish(producer, prefix, [*messages, MALFORMED[0]])
    producer.close()
    env = {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": prefix,
        "ICU_DATABASE_URL": database_url,
        "ICU_SINK_MAX_BATCH": "100",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "icu.cli", "sink", "--group", f"cli-{uuid.uuid4().hex[:8]}"],
        cwd=repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _count(database_url, "vitals") + _count(database_url, "evidence") < len(messages):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "icu sink stored nothing within 60 s"
            time.sleep(0.2)
        assert read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix), 1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stored"] == len(messages)
    assert summary["stored_by_table"] == {"evidence": 1, "vitals": 5}
    assert summary["dead_lettered"] == 1
    assert "database sink in group cli-" in err


def test_icu_sink_refuses_an_unmigrated_database(kafka_settings, database_url, capsys):
    code = main(
        [
            "sink",
            "--bootstrap-servers",
            kafka_settings.kafka_bootstrap_servers,
            "--topic-prefix",
            kafka_settings.topic_prefix,
            "--database-url",
            database_url,
        ]
    )
    assert code == 1
    assert "run `icu db migrate` first" in capsys.readouterr().err
