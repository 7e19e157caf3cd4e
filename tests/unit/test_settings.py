import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from icu.settings import ConfigError, KafkaSettings, load_settings
from infra.settings import UpSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("ICU_"):
            monkeypatch.delenv(name)


def test_defaults_work_for_a_local_broker():
    settings = load_settings(KafkaSettings)
    config = settings.kafka_client_config()
    assert config["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert config["security_protocol"] == "PLAINTEXT"
    assert "sasl_plain_password" not in config


def test_environment_is_read_with_the_icu_prefix_and_flags_win(monkeypatch):
    monkeypatch.setenv("ICU_KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("ICU_TOPIC_PREFIX", "ward7")
    settings = load_settings(UpSettings)
    assert settings.topic_prefix == "ward7"
    assert load_settings(UpSettings, topic_prefix="replay1", broker_port=None).topic_prefix == "replay1"
    assert load_settings(KafkaSettings).kafka_client_config()["bootstrap_servers"] == ["k1:9092", "k2:9092"]


def test_sasl_ssl_is_passed_through(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("ICU_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ICU_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("ICU_KAFKA_SASL_USERNAME", "icu")
    monkeypatch.setenv("ICU_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("ICU_KAFKA_SSL_CAFILE", str(ca))
    settings = load_settings(KafkaSettings)
    config = settings.kafka_client_config()
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_password"] == "hunter2"
    assert config["ssl_cafile"] == str(ca)
    assert isinstance(settings.kafka_sasl_password, SecretStr)
    assert "hunter2" not in repr(settings)


def test_incomplete_sasl_names_every_missing_variable(monkeypatch):
    monkeypatch.setenv("ICU_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("ICU_KAFKA_SASL_USERNAME", "icu")
    with pytest.raises(ConfigError) as raised:
        load_settings(KafkaSettings)
    message = str(raised.value)
    assert "ICU_KAFKA_SASL_MECHANISM" in message
    assert "ICU_KAFKA_SASL_PASSWORD" in message
    assert "ICU_KAFKA_SASL_USERNAME," not in message


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ICU_KAFKA_SECURITY_PROTOCOL", "TLS", "ICU_KAFKA_SECURITY_PROTOCOL"),
        ("ICU_KAFKA_SSL_CAFILE", "/no/such/ca.pem", "ICU_KAFKA_SSL_CAFILE: no such file"),
        ("ICU_KAFKA_SESSION_TIMEOUT_MS", "10", "ICU_KAFKA_SESSION_TIMEOUT_MS"),
        ("ICU_LOG_LEVEL", "LOUD", "ICU_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_their_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings(KafkaSettings)


def test_state_dir_defaults_under_the_users_state_folder():
    assert load_settings(UpSettings).state_dir.parts[-1] == "icu-watch"
    assert load_settings(UpSettings, state_dir=Path("/srv/icu")).state_dir == Path("/srv/icu")


def test_every_services_local_state_follows_icu_state_dir(monkeypatch, tmp_path):
    """`icu alerts` keeps Faust's data under ICU_STATE_DIR too, and creates the missing parents
    (Faust makes only the last level: a fresh machine crashed the worker at start-up)."""
    from alerts.app import AlertSettings, build_app

    monkeypatch.setenv("ICU_STATE_DIR", str(tmp_path / "fresh" / "state"))
    settings = load_settings(AlertSettings, kafka_bootstrap_servers="127.0.0.1:9")
    assert settings.alerts_data_dir == tmp_path / "fresh" / "state" / "alerts"
    assert load_settings(UpSettings).state_dir == tmp_path / "fresh" / "state"
    build_app(settings)
    assert settings.alerts_data_dir.is_dir()


def test_the_alerts_workers_consumer_waits_at_most_the_configured_fetch_wait(monkeypatch, tmp_path):
    """Faust builds its aiokafka consumer with a hard-coded 1,500 ms fetch wait; `icu alerts`
    takes ICU_ALERTS_FETCH_MAX_WAIT_MS instead, on the consumer Faust's worker thread creates."""
    import asyncio

    from alerts.app import AlertSettings, build_app

    monkeypatch.setenv("ICU_STATE_DIR", str(tmp_path))
    assert load_settings(AlertSettings, kafka_bootstrap_servers="127.0.0.1:9").alerts_fetch_max_wait_ms == 300
    monkeypatch.setenv("ICU_ALERTS_FETCH_MAX_WAIT_MS", "250")
    app, _ = build_app(load_settings(AlertSettings, kafka_bootstrap_servers="127.0.0.1:9"))

    async def worker_consumer_wait() -> int:
        consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(worker_consumer_wait()) == 250
    monkeypatch.setenv("ICU_ALERTS_FETCH_MAX_WAIT_MS", "0")
    with pytest.raises(ConfigError, match="ICU_ALERTS_FETCH_MAX_WAIT_MS"):
        load_settings(AlertSettings, kafka_bootstrap_servers="127.0.0.1:9")


def test_the_alerts_worker_runs_on_the_event_loop_it_is_configured_with(monkeypatch, tmp_path):
    """In a fresh process, as `icu alerts` starts: the loop Faust's app runs on and the one its
    consumer thread gets (asyncio.new_event_loop) are the configured kind."""
    import subprocess
    import sys

    from alerts.app import AlertSettings

    script = (
        "import asyncio\n"
        "from alerts.app import AlertSettings, build_faust_app, use_event_loop\n"
        "settings = AlertSettings(kafka_bootstrap_servers='127.0.0.1:9')\n"
        "print(use_event_loop(settings), type(build_faust_app(settings).loop).__name__,"
        " type(asyncio.new_event_loop()).__name__)\n"
    )
    for name, loop_type in (("uvloop", "Loop"), ("asyncio", "_UnixSelectorEventLoop")):
        env = {**os.environ, "ICU_STATE_DIR": str(tmp_path), "ICU_ALERTS_EVENT_LOOP": name}
        shown = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert shown.stdout.split() == [name, loop_type, loop_type]
    monkeypatch.setenv("ICU_ALERTS_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="ICU_ALERTS_EVENT_LOOP"):
        load_settings(AlertSettings, kafka_bootstrap_servers="127.0.0.1:9")


def test_repeated_kafka_client_lines_pass_once_per_window_with_a_count() -> None:
    import logging
    import time

    from icu.settings import RepeatFilter

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name}: {record.getMessage()}")

    handler = Keep()
    handler.addFilter(RepeatFilter(window_s=0.2))
    logger, mine = logging.getLogger("kafka.conn.test"), logging.getLogger("icu.test.repeats")
    for chosen in (logger, mine):
        chosen.addHandler(handler)
        chosen.propagate = False
    try:
        for _ in range(50):
            logger.error("Connection failed: %s", "ECONNREFUSED")
            mine.warning("our own line")
        time.sleep(0.25)
        logger.error("Connection failed: %s", "ECONNREFUSED")
    finally:
        for chosen in (logger, mine):
            chosen.removeHandler(handler)
            chosen.propagate = True
    kafka_lines = [r for r in records if r.startswith("kafka.")]
    assert kafka_lines[0] == "kafka.conn.test: Connection failed: ECONNREFUSED"
    assert len(kafka_lines) == 2
    assert "[and 49 more like this in" in kafka_lines[1]
    assert records.count("icu.test.repeats: our own line") == 50  # the project's own lines untouched
