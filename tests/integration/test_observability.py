"""A real service with its health, readiness and metrics endpoint on: `icu sink` as a process
against the session's broker and a migrated database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

from icu.contracts import encode, kafka_key
from icu.kafka import create_producer
from infra.db.migrate import migrate
from infra.ports import free_port
from tests import samples
from tests.http import http_get


def _wait(predicate, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def _sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_sink_serves_health_readiness_and_moving_metrics(kafka_settings, database_url, tmp_path):
    migrate(database_url)
    port = free_port()
    env = {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ICU_SINK_GROUP": f"sink-{uuid.uuid4().hex[:8]}",
        "ICU_METRICS_PORT": str(port),
        "ICU_SECRETS_DIR": str(tmp_path),
    }
    # The database URL comes the way a Kubernetes Secret brings it: a file in ICU_SECRETS_DIR.
    env.pop("ICU_DATABASE_URL", None)
    (tmp_path / "ICU_DATABASE_URL").write_text(database_url)
    log = (tmp_path / "sink.log").open("w")
    sink = subprocess.Popen([sys.executable, "-m", "icu.cli", "sink"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: http_get(port, "/readyz")[0] == 200)
        status, body = http_get(port, "/healthz")
        assert status == 200
        assert '"service": "sink"' in body
        before = http_get(port, "/metrics")[1]
        for name in ("icu_consumed_records_total", "icu_dead_letters_total", "icu_batch_retries_total",
                     "icu_sink_refused_total", "icu_sink_outages_total"):  # fmt: skip
            assert f"# TYPE {name} counter" in before, name
        assert "# TYPE icu_consumer_lag gauge" in before
        assert _sample(before, "icu_consumed_records_total", '{stage="db-sink"}') == 0.0

        producer = create_producer(kafka_settings)
        prefix = kafka_settings.topic_prefix
        for message in [samples.vitals(), samples.camera_status()]:
            producer.send(message.topic.full_name(prefix), key=kafka_key(message), value=encode(message))
        producer.send(f"{prefix}.vitals", key=b"icu1-bed01", value=b"{not json")  # dead-lettered
        producer.flush()
        producer.close()

        def moved() -> str | None:
            text = http_get(port, "/metrics")[1]
            return text if _sample(text, "icu_consumed_records_total", '{stage="db-sink"}') == 2.0 else None

        after = _wait(moved)
        assert _sample(after, "icu_dead_letters_total", '{stage="db-sink"}') == 1.0
        assert _sample(after, "icu_sink_stored_total", '{table="vitals"}') == 1.0
        assert _sample(after, "icu_sink_stored_total", '{table="camera_status"}') == 1.0
        assert re.search(r'^icu_consumer_lag\{partition="\d+",stage="db-sink",topic="', after, re.MULTILINE)
    finally:
        sink.send_signal(signal.SIGTERM)
        try:
            sink.wait(timeout=30)
        finally:
            if sink.poll() is None:
                sink.kill()
            log.close()
    assert sink.returncode == 0, (tmp_path / "sink.log").read_text()[-2000:]
    assert http_get(port, "/healthz")[0] == 0  # the endpoint goes with the process
