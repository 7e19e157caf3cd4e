"""Faults, against the real embedded broker and PostgreSQL with every service a real `icu`
subprocess: an inference worker killed while another runs, the broker restarted under running
services, the database down for 30 s under a running sink, and a flood of malformed frames and
vitals. (The alerts worker SIGKILLed and restarted mid-stream is in test_alerts_app.py, shorter
database outages of several kinds in test_sink.py, cameras unplugged and plugged back in
test_rtsp_ingest.py and test_whip_ingest.py.)"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from alerts.app import STAGE as ALERTS_STAGE
from alerts.app import worker_env
from icu.contracts import (
    DeadLetter,
    Detection,
    FrameHeader,
    Topic,
    decode,
    make_frame,
)
from icu.kafka import close_producer, create_producer
from inference.engine import MIN_WINDOW_S
from infra.broker import EmbeddedBroker
from infra.db.migrate import migrate
from infra.db.sink import STAGE as SINK_STAGE
from infra.observability import scrape_metric
from infra.ports import free_port
from infra.postgres import EmbeddedPostgres
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from tests import samples
from tests.integration.records import read_records
from tests.integration.services import Service, env_for, infer_env, lost_camera, wait_until
from tests.integration.test_inference_worker import tiny_weights
from tests.integration.test_sink import TcpProxy


def ward(settings: TopicsAdminSettings, beds: int, tmp: Path, **extra: str) -> Service:
    """`icu sim ward`: stable patients, live (speed 1), frames and 1 Hz vitals."""
    return Service("ward", ["sim", "ward", "--beds", str(beds), "--scenario", "stable", "--fps", "10", "--size",
                            "160x120", "--seed", "3"], env_for(settings, **extra), tmp)  # fmt: skip


def detections_by_bed(settings: TopicsAdminSettings) -> dict[str, list[Detection]]:
    out: dict[str, list[Detection]] = defaultdict(list)
    for record in read_records(settings, Topic.DETECTIONS.full_name(settings.topic_prefix), 100_000, 2):
        detection = decode(Detection, record.value)
        out[detection.bed_id].append(detection)
    return out


def test_a_killed_inference_worker_s_beds_move_to_the_survivor_and_no_video_goes_unexamined(
    kafka_settings: TopicsAdminSettings, services: list[Service], tmp_path: Path
) -> None:
    weights = tiny_weights(tmp_path / "model.pt")
    ports = [free_port(), free_port()]
    workers = [Service(f"infer{k}", ["infer"], infer_env(kafka_settings, weights, ICU_INFER_GROUP="faults-infer",
                                                         ICU_METRICS_PORT=str(port)), tmp_path)
               for k, port in enumerate(ports)]  # fmt: skip
    services += workers
    beds = 6  # sim-01..06: keys on all three partitions
    cameras = ward(kafka_settings, beds, tmp_path)
    services.append(cameras)

    def beds_on(port: int) -> float:
        return scrape_metric(port, "icu_infer_beds") or 0.0

    # Both workers own beds (the group split the frames partitions between them).
    wait_until(lambda: beds_on(ports[0]) >= 1 and beds_on(ports[1]) >= 1, 120, "both workers own beds", services)
    victim, survivor = workers[0], workers[1]
    time.sleep(3)
    killed_at = datetime.now(UTC)
    victim.kill()  # SIGKILL: no goodbye to the group, no final commit
    services.remove(victim)
    wait_until(lambda: beds_on(ports[1]) >= beds, 60, f"the survivor owns all {beds} beds", services)
    time.sleep(MIN_WINDOW_S + 6)
    cameras.stop()  # the detections topic goes quiet, so it can be read to its end
    services.remove(cameras)
    time.sleep(3)

    by_bed = detections_by_bed(kafka_settings)
    assert len(by_bed) == beds
    after = killed_at + timedelta(seconds=2)
    for bed, detections in by_bed.items():
        times = sorted({d.ts for d in detections})  # at-least-once: a redelivered window may repeat
        assert times[-1] > after, f"{bed}: no detection after the kill"
        # Every second of video is examined: the survivor re-reads the frames the victim had not
        # committed, so a bed's detections go on with no gap longer than the buffer rebuild.
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert max(gaps) <= MIN_WINDOW_S + 2.5, (bed, max(gaps), times)
    assert "Traceback" not in survivor.log()


def test_services_reconnect_on_their_own_after_the_broker_restarts(
    database_url: str, services: list[Service], tmp_path: Path
) -> None:
    """The embedded broker keeps everything in memory, so a restart loses its topics, groups and
    producer state: the harness re-creates the topics at once (as `icu up` would; on Apache Kafka
    they survive). The camera source, the inference worker, the alerts worker (whose own Faust
    topics it re-creates) and the sink must carry on by themselves, and say in their logs that
    they lost Kafka and got it back. What the lost broker held is gone with it (on Kafka it is
    not): the test asserts that data flows end to end again, not that the old records survive."""
    migrate(database_url)
    port = free_port()
    broker = EmbeddedBroker(port=port, log_file=tmp_path / "broker.log").start()
    try:
        settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="restart",
                                       topic_partitions=3)  # fmt: skip
        create_topics(settings)
        weights = tiny_weights(tmp_path / "model.pt")
        infer = Service("infer", ["infer"], infer_env(settings, weights, ICU_INFER_GROUP="restart-infer"), tmp_path)
        sink = Service("sink", ["sink"], env_for(settings, ICU_DATABASE_URL=database_url), tmp_path)
        alerts = Service("alerts", ["alerts"], worker_env(settings, tmp_path / "faust", ICU_ALERTS_TICK_S="0.5"),
                         tmp_path)  # fmt: skip
        source = ward(settings, 2, tmp_path)
        services += [infer, sink, alerts, source]

        def stored_since(table: str, since: datetime) -> set[str]:
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(f"SELECT DISTINCT bed_id FROM {table} WHERE ts > %s", (since,)).fetchall()
            return {bed for (bed,) in rows}

        began = datetime.now(UTC)
        wait_until(lambda: len(stored_since("detections", began)) == 2, 120, "detections of both beds stored",
                   services)  # fmt: skip
        broker.stop()
        time.sleep(5)  # clients find nobody there and retry
        broker = EmbeddedBroker(port=port, log_file=tmp_path / "broker2.log").start()
        create_topics(settings)
        restarted = datetime.now(UTC)
        wait_until(lambda: len(stored_since("vitals", restarted)) == 2 and len(stored_since("detections", restarted))
                   == 2, 120, "vitals and detections of both beds stored after the restart", services)  # fmt: skip
        # The alerts worker decides and publishes again: a camera lost on a probe bed is alerted,
        # and the alert reaches the database through the sink.
        lost_camera(settings, "probe-01")
        wait_until(lambda: alerts_stored(database_url, "probe-01", "CAMERA_LOST") > 0, 90,
                   "the probe bed's CAMERA_LOST alert stored", services)  # fmt: skip
        assert all(service.alive() for service in services)
        for service in (infer, sink, alerts):
            log = service.log()
            assert "Kafka broker unreachable" in log, service.name
            assert "Kafka broker reachable again" in log, service.name
        # The source's idempotent producer lost its state with the broker: replaced, and said so.
        assert "replacing it with a new one" in source.log()
        assert "new Kafka producer ready" in source.log()
    finally:
        for service in services:  # while the broker still answers: Faust's shutdown waits for it
            service.stop()
        broker.stop()


def test_the_sink_catches_up_after_the_database_is_down_for_30_s(
    kafka_settings: TopicsAdminSettings, dedicated_postgres: EmbeddedPostgres, services: list[Service], tmp_path: Path
) -> None:
    server = dedicated_postgres
    migrate(server.url())
    proxy = TcpProxy(server.port)  # the sink's address stays put while the server restarts on a new port
    try:
        sink = Service("sink", ["sink"], env_for(kafka_settings, ICU_DATABASE_URL=proxy.url(server.url())), tmp_path)
        source = ward(kafka_settings, 2, tmp_path)  # 1 Hz vitals per bed, and frames the sink ignores
        services += [sink, source]

        def stored() -> int:
            with psycopg.connect(server.url()) as conn:
                row = conn.execute("SELECT count(*) FROM vitals").fetchone()
            return int(row[0]) if row else 0

        wait_until(lambda: stored() >= 4, 60, "the first vitals stored", services)
        server.stop()
        proxy.cut()
        time.sleep(30)
        server.start()
        proxy.upstream_port = server.port
        proxy.restore()
        time.sleep(5)
        source.stop()  # the vitals topic is now complete
        services.remove(source)
        published = len(read_records(kafka_settings, Topic.VITALS.full_name(kafka_settings.topic_prefix), 10_000, 3))
        assert published >= 2 * 35  # two beds through the outage
        wait_until(lambda: stored() == published, 60, f"all {published} vitals stored", services)
        log = sink.log()
        assert "unavailable" in log
        assert "database available again" in log
        assert sink.alive()
    finally:
        proxy.close()


def alerts_stored(database_url: str, bed: str, code: str) -> int:
    with psycopg.connect(database_url) as conn:
        query = "SELECT count(*) FROM alert_versions WHERE bed_id = %s AND code = %s"
        row = conn.execute(query, (bed, code)).fetchone()
    return int(row[0]) if row else 0


def test_a_flood_of_malformed_frames_and_vitals_is_dead_lettered_and_the_services_carry_on(
    kafka_settings: TopicsAdminSettings, database_url: str, services: list[Service], tmp_path: Path
) -> None:
    migrate(database_url)
    weights = tiny_weights(tmp_path / "model.pt")
    infer = Service("infer", ["infer"], infer_env(kafka_settings, weights, ICU_INFER_GROUP="flood-infer"), tmp_path)
    sink = Service("sink", ["sink"], env_for(kafka_settings, ICU_DATABASE_URL=database_url), tmp_path)
    alerts = Service("alerts", ["alerts"], worker_env(kafka_settings, tmp_path / "faust"), tmp_path)
    services += [infer, sink, alerts, ward(kafka_settings, 1, tmp_path)]
    prefix = kafka_settings.topic_prefix

    def stored(table: str, bed: str, since: datetime) -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE bed_id = %s AND ts > %s", (bed, since)).fetchone()
        return int(row[0]) if row else 0

    began = datetime.now(UTC)
    wait_until(lambda: stored("detections", "sim-01", began) > 0, 120, "the first detections stored", services)

    # Per kind, `flood` records: frames with no contract headers, frames whose JPEG does not
    # decode (on a bed of their own, so the simulated bed's video is not interleaved with junk),
    # vitals that are not JSON, vitals with an impossible value.
    flood = 300
    producer = create_producer(kafka_settings, linger_ms=20)
    frames, vitals = Topic.FRAMES.full_name(prefix), Topic.VITALS.full_name(prefix)
    impossible = samples.vitals("flood-01", datetime.now(UTC)).model_dump(mode="json") | {"hr": -40}
    for k in range(flood):
        producer.send(frames, key=b"sim-01", value=os.urandom(2000))
        header = FrameHeader(bed_id="flood-01", camera_id="flood-01-cam", seq=k, width=160, height=120,
                             capture_ts=datetime.now(UTC))  # fmt: skip
        junk = make_frame(header, b"\xff\xd8\xff" + os.urandom(500) + b"\xff\xd9")
        producer.send(frames, key=junk.key(), value=junk.jpeg, headers=junk.kafka_headers())
        producer.send(vitals, key=b"flood-01", value=b"{not json " + str(k).encode())
        producer.send(vitals, key=b"flood-01", value=json.dumps(impossible).encode())
    producer.flush()
    flooded = datetime.now(UTC)
    # Good data after the flood still flows: new detections and vitals of the simulated bed.
    wait_until(lambda: stored("detections", "sim-01", flooded) > 0 and stored("vitals", "sim-01", flooded) > 0,
               90, "detections and vitals stored after the flood", services)  # fmt: skip
    lost_camera(kafka_settings, "probe-01")  # and the alerts worker still decides
    wait_until(lambda: alerts_stored(database_url, "probe-01", "CAMERA_LOST") > 0, 90,
               "the probe bed's CAMERA_LOST alert stored after the flood", services)  # fmt: skip
    close_producer(producer, 10)

    letters = [decode(DeadLetter, r.value) for r in read_records(kafka_settings, Topic.DEAD_LETTER.full_name(prefix),
                                                                  10 * flood, 5)]  # fmt: skip
    by_stage: dict[tuple[str, str], int] = defaultdict(int)
    for letter in letters:
        by_stage[(letter.stage, letter.source_topic)] += 1
        assert letter.reason
    assert by_stage[("inference", frames)] == 2 * flood
    assert by_stage[(SINK_STAGE, vitals)] == 2 * flood
    assert by_stage[(ALERTS_STAGE, vitals)] == 2 * flood
    assert all(service.alive() for service in services)
    assert "Traceback" not in infer.log() + sink.log() + alerts.log()
