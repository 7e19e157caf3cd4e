"""`icu up` as a user runs it: a real process, real ports, a third-party Kafka client, Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from icu.contracts import Topic
from infra.ports import free_port

ICU = str(Path(sys.executable).parent / "icu")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICU_")}
    env.update(extra)
    return env


class Up:
    def __init__(self, *args, **env):
        self.process = subprocess.Popen(
            [ICU, "up", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
        )
        self.stdout_lines = []

    def wait_ready(self, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"icu up exited early: {self.process.wait()} {self.process.stderr.read()}")
            self.stdout_lines.append(line)
            if line.startswith("Press Ctrl-C"):
                return dict(re.findall(r"^export (ICU_[A-Z_]+)=(\S+)$", "".join(self.stdout_lines), re.M))
        raise AssertionError("icu up did not become ready")

    def stop(self, sig=signal.SIGINT, timeout_s=30):
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        return code, self.process.stderr.read()


def _port_closed(address):
    host, port = address.split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def test_up_serves_topics_to_a_third_party_client_and_stops_cleanly(tmp_path):
    up = Up("--broker-port", "0", "--postgres-port", "0", "--state-dir", str(tmp_path))
    try:
        env = up.wait_ready()
        assert set(env) == {"ICU_KAFKA_BOOTSTRAP_SERVERS", "ICU_DATABASE_URL", "ICU_TOPIC_PREFIX"}
        assert (tmp_path / "env").read_text().count("export ") == 3

        metadata = AdminClient({"bootstrap.servers": env["ICU_KAFKA_BOOTSTRAP_SERVERS"]}).list_topics(timeout=10)
        partitions = {name: len(meta.partitions) for name, meta in metadata.topics.items()}
        for topic in Topic:
            assert partitions[f"icu.{topic.value}"] == (3 if topic is Topic.DEAD_LETTER else 8)

        with psycopg.connect(env["ICU_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT max(version) FROM icu_schema_migrations").fetchone()[0] >= 4
            conn.execute("INSERT INTO beds (bed_id, ward) VALUES ('kept-bed', 'icu1')")
    finally:
        code, stderr = up.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "stopped" in stderr
    assert _port_closed(env["ICU_KAFKA_BOOTSTRAP_SERVERS"])
    assert _port_closed(env["ICU_DATABASE_URL"].split("@")[1].split("/")[0])

    # The embedded database keeps its data across runs.
    again = Up("--broker-port", "0", "--postgres-port", "0", "--state-dir", str(tmp_path))
    try:
        env = again.wait_ready()
        with psycopg.connect(env["ICU_DATABASE_URL"]) as conn:
            assert conn.execute("SELECT ward FROM beds WHERE bed_id = 'kept-bed'").fetchone() == ("icu1",)
    finally:
        code, stderr = again.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_up_uses_icu_database_url_when_set(tmp_path, database_url):
    up = Up(ICU_BROKER_PORT="0", ICU_DATABASE_URL=database_url, ICU_STATE_DIR=str(tmp_path), ICU_TOPIC_PREFIX="ward9")
    try:
        env = up.wait_ready()
        assert env["ICU_TOPIC_PREFIX"] == "ward9"
        assert not (tmp_path / "postgres").exists()
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM icu_schema_migrations").fetchone()[0] >= 4
    finally:
        code, stderr = up.stop()
    assert code == 0, stderr


def test_a_taken_port_is_one_clear_line(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [ICU, "up", "--broker-port", str(port), "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "ICU_BROKER_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_one_clear_line(tmp_path):
    url = f"postgresql://icu:s3cret@127.0.0.1:{free_port()}/icu"
    result = subprocess.run(
        [ICU, "up", "--broker-port", "0", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(ICU_DATABASE_URL=url),
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot connect to the database at postgresql://icu:***@127.0.0.1" in result.stderr
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ICU_BROKER_PORT": "ninety"}, "ICU_BROKER_PORT: Input should be a valid integer"),
        ({"ICU_TOPIC_PREFIX": "bad prefix!"}, "ICU_TOPIC_PREFIX"),
        ({"ICU_DATABASE_TIMESERIES": "mongo"}, "ICU_DATABASE_TIMESERIES"),
    ],
)
def test_invalid_configuration_names_the_variable(tmp_path, env, expected):
    result = subprocess.run(
        [ICU, "up", "--state-dir", str(tmp_path)], capture_output=True, text=True, env=_env(**env), timeout=60
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
