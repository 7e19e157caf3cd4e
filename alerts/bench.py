"""`icu bench alerts`: what one alerts worker sustains, and how fast an alert follows its cause.

- **sustained**: ``beds`` simulated beds' vitals and 1 Hz detections (a stable course, so the
  rules run but raise nothing) are published first; then one `icu alerts` worker (a real
  process, Faust, at-least-once) consumes them, and its own count of handled messages
  (``icu_alerts_messages_total`` on its /metrics) is read until it has handled everything:
  messages/s between its first and last handled message. Reads are every 50 ms near the start
  and the end and sparser in between, since each one takes the worker's interpreter.
- **limits**, in the same run over the same records: the raw consume-produce loop with
  kafka-python (poll, produce one record per record, commit), run before and after the worker
  (the mean of the two, since these machines drift); and **Faust's own ceiling**, a Faust app
  with the worker's consumer settings whose agent only counts the events (no decoding, no
  rules, no table): what the framework costs per message before any work is done.
- **latency**: with the worker caught up, ``latency_beds`` beds send live vitals at 1 Hz; each
  turns severe (NEWS2 7+) at a random moment. Because monitored numbers are scored as the median
  of the last minute (a motion artefact does not raise), the alert comes from the reading that
  moves the median across the band, about 30 s after the change: latency is measured from the
  wall time that reading was sent to the wall time the alert version arrives on ``alerts``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from alerts.app import worker_env
from alerts.scenario_feed import scenario_messages
from icu.contracts import Alert, Topic, Vitals, decode, encode
from icu.kafka import close_producer, create_producer
from infra.broker import EmbeddedBroker
from infra.observability import scrape_metric
from infra.ports import free_port
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from simulator.scenario import load_scenario

INPUT_TOPICS = (Topic.VITALS, Topic.DETECTIONS)


def _publish_backlog(settings: TopicsAdminSettings, beds: int, seconds: float) -> dict[TopicPartition, int]:
    """Publish the stable course of ``beds`` beds; returns the end offset per partition."""
    producer = create_producer(settings, linger_ms=20, batch_size=512 * 1024)
    start = datetime.now(UTC) - timedelta(seconds=seconds + 60)
    futures = []
    scenario = load_scenario("stable")
    for bed in range(beds):
        for message in scenario_messages(scenario, bed_id=f"bench-{bed:03d}", start=start, seed=bed,
                                         duration_s=seconds):  # fmt: skip
            topic = message.topic.full_name(settings.topic_prefix)
            futures.append(producer.send(topic, key=message.key(), value=encode(message)))
    producer.flush()
    ends: dict[TopicPartition, int] = {}
    for future in futures:
        meta = future.get(timeout=30)
        tp = TopicPartition(meta.topic, meta.partition)
        ends[tp] = max(ends.get(tp, 0), meta.offset + 1)
    close_producer(producer, 10)
    return ends


def _wait_processed(port: int, total: int, worker: subprocess.Popen[bytes], timeout_s: float) -> dict[str, float]:
    """Messages/s from the worker's counter, from its first handled message to its last, not
    from committed offsets (committed every 2.8 s, which skews a 10 s run). Each read is a
    request the worker answers on its metrics thread, taking the interpreter from its event
    loop (in an A/B of 3 runs each, reading every 50 ms gave an 11% lower median rate than
    every 0.5 s; Faust's ceiling, counted inside its process, pays nothing). So reads are
    spaced by half the time the rest of the backlog should take at the rate so far: every
    50 ms at the start and near the end, at most every 0.5 s in between."""
    first_t = first_n = None
    deadline = time.monotonic() + timeout_s
    done = 0.0
    while time.monotonic() < deadline and worker.poll() is None:
        done = scrape_metric(port, "icu_alerts_messages_total") or 0.0
        now = time.monotonic()
        if done > 0 and first_t is None:
            first_t, first_n = now, done
        if done >= total:
            break
        pause = 0.05
        if first_t is not None and first_n is not None and done > first_n:
            rate = (done - first_n) / (now - first_t)
            pause = min(0.5, max(0.05, (total - done) / rate / 2))
        time.sleep(pause)
    if first_t is None or first_n is None or done < total:
        raise RuntimeError(f"the worker did not handle the backlog in {timeout_s:.0f} s ({done:.0f} of {total})")
    elapsed = time.monotonic() - first_t
    return {"messages": total, "messages_per_s": round((total - first_n) / elapsed, 1) if elapsed > 0 else 0.0}


def _raw_loop(settings: TopicsAdminSettings, ends: dict[TopicPartition, int], *, run: int = 0) -> float:
    """kafka-python: poll, produce one record per record, commit; messages/s. Each ``run`` is a
    group of its own, so it reads everything again."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), group_id=f"{settings.topic_prefix}-raw-{run}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=settings.kafka_session_timeout_ms)  # fmt: skip
    consumer.subscribe([t.full_name(settings.topic_prefix) for t in INPUT_TOPICS])
    producer = create_producer(settings, linger_ms=5)
    out = f"{settings.topic_prefix}.bench-raw-out"
    total = sum(ends.values())
    seen = 0
    began: float | None = None
    deadline = time.monotonic() + 300
    while seen < total and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500, max_records=2000)
        for records in batch.values():
            if began is None:
                began = time.monotonic()
            for record in records:
                producer.send(out, key=record.key, value=record.value)
            seen += len(records)
        if batch:
            producer.flush()
            consumer.commit()
    elapsed = time.monotonic() - (began or time.monotonic())
    consumer.close()
    close_producer(producer, 10)
    return round(seen / elapsed, 1) if elapsed > 0 else 0.0


def _faust_ceiling(settings: TopicsAdminSettings, total: int, data_dir: Path) -> float:
    """Messages/s of a Faust agent that only counts the backlog's events (see the module docstring)."""
    result = data_dir / "noop.json"
    # A group and data directory of its own: the worker measured next reads the backlog from the start.
    env = worker_env(settings, data_dir / "faust-ceiling", ICU_LOG_LEVEL="WARNING", ICU_ALERTS_APP_ID="faust-ceiling",
                     ICU_BENCH_NOOP_TOTAL=str(total), ICU_BENCH_NOOP_RESULT=str(result))  # fmt: skip
    with (data_dir / "noop.log").open("wb") as log:
        agent = subprocess.Popen([sys.executable, "-m", "alerts.bench"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while not result.exists() and agent.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            agent.kill()
            agent.wait(30)
    if not result.exists():
        raise RuntimeError(f"the counting Faust agent did not read the backlog (log: {data_dir / 'noop.log'})")
    return float(json.loads(result.read_text())["messages_per_s"])


def _run_counting_agent() -> None:
    """The process :func:`_faust_ceiling` starts: the alerts worker's Faust settings, an agent
    that counts; it writes messages/s from its first event to its last to ICU_BENCH_NOOP_RESULT."""
    from faust.worker import Worker

    from alerts.app import INPUTS, AlertSettings, build_faust_app, use_event_loop

    settings = AlertSettings()
    use_event_loop(settings)
    total, result = int(os.environ["ICU_BENCH_NOOP_TOTAL"]), Path(os.environ["ICU_BENCH_NOOP_RESULT"])
    app = build_faust_app(settings)
    # The worker's subscription (its inputs and its ticks topic), so the fetches match.
    names = [t.full_name(settings.topic_prefix) for t in (*INPUTS, Topic.ALERT_TICKS)]
    source = app.topic(*names, key_type=bytes, value_type=bytes, value_serializer="raw")
    seen = 0
    first = 0.0

    @app.agent(source)
    async def count(stream: Any) -> None:
        nonlocal seen, first
        async for _event in stream.events():
            seen += 1
            if seen == 1:
                first = time.monotonic()
            elif seen == total:
                elapsed = time.monotonic() - first
                result.write_text(json.dumps({"messages_per_s": round((total - 1) / elapsed, 1)}))

    Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()


def _latency(settings: TopicsAdminSettings, beds: int, seconds: float, rng: random.Random) -> list[float]:
    alerts_topic = Topic.ALERTS.full_name(settings.topic_prefix)
    received: dict[tuple[str, str], float] = {}  # (bed, raised_at) -> wall time the version arrived
    stop = threading.Event()

    def listen() -> None:
        consumer = KafkaConsumer(alerts_topic, **settings.kafka_client_config(), group_id=None,
                                 auto_offset_reset="latest")  # fmt: skip
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                arrived = time.time()
                for record in records:
                    alert = decode(Alert, record.value)
                    if alert.version == 1 and alert.code == "NEWS2":
                        received.setdefault((alert.bed_id, alert.raised_at.isoformat()), arrived)
        consumer.close()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(3)  # the listener's partitions assigned at the latest offsets
    producer = create_producer(settings, linger_ms=0)
    topic = Topic.VITALS.full_name(settings.topic_prefix)
    onset = {f"live-{b:03d}": rng.uniform(3, 10) for b in range(beds)}
    sent: dict[tuple[str, str], float] = {}
    began = time.monotonic()
    for second in range(int(seconds)):
        delay = began + second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = datetime.now(UTC)
        for bed, turn in onset.items():
            severe = second >= turn
            vitals = Vitals(bed_id=bed, ts=now, source="bench", hr=135 if severe else 72, rr=30 if severe else 15,
                            spo2=90 if severe else 97, sbp=88 if severe else 122, temp_c=36.8,
                            consciousness="A", on_oxygen=False)  # fmt: skip
            producer.send(topic, key=vitals.key(), value=encode(vitals))
            sent[(bed, now.isoformat())] = time.time()
        producer.flush()
    time.sleep(5)
    stop.set()
    listener.join(timeout=5)
    close_producer(producer, 10)
    return [(arrived - sent[key]) * 1000 for key, arrived in received.items() if key in sent]


def bench_alerts(*, beds: int = 100, seconds: float = 300.0, latency_beds: int = 20, seed: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="icu-bench-alerts-") as tmp, EmbeddedBroker(port=0) as broker:
        settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="bench")
        create_topics(settings)
        ends = _publish_backlog(settings, beds, seconds)
        total = sum(ends.values())
        raw_before = _raw_loop(settings, ends, run=1)
        ceiling = _faust_ceiling(settings, total, Path(tmp))
        metrics_port = free_port()
        env = worker_env(settings, Path(tmp) / "faust", ICU_LOG_LEVEL="WARNING", ICU_METRICS_PORT=str(metrics_port))
        log = (Path(tmp) / "alerts.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "icu.cli", "alerts"], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        try:
            sustained = _wait_processed(metrics_port, total, worker, timeout_s=600)
            latencies = _latency(settings, latency_beds, 60.0, random.Random(seed))  # noqa: S311 (test timing, not crypto)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            log.close()
        raw_after = _raw_loop(settings, ends, run=2)
    raw = round((raw_before + raw_after) / 2, 1)
    p50 = statistics.median(latencies) if latencies else None
    p99 = sorted(latencies)[max(0, round(0.99 * len(latencies)) - 1)] if latencies else None
    return {
        "beds": beds,
        "seconds_of_data": seconds,
        "worker_messages": sustained["messages"],
        "worker_messages_per_s": sustained["messages_per_s"],
        "raw_consume_produce_messages_per_s": raw,
        "raw_consume_produce_runs": [raw_before, raw_after],
        "worker_over_raw": round(sustained["messages_per_s"] / raw, 3) if raw else None,
        "faust_noop_messages_per_s": ceiling,
        "worker_over_faust_noop": round(sustained["messages_per_s"] / ceiling, 3) if ceiling else None,
        "latency_alerts": len(latencies),
        "vitals_to_alert_p50_ms": None if p50 is None else round(p50, 1),
        "vitals_to_alert_p99_ms": None if p99 is None else round(p99, 1),
        "targets": {"messages_per_s": 5000, "p99_ms": 1000},
    }


if __name__ == "__main__":
    _run_counting_agent()
