import os
import subprocess
import sys
from pathlib import Path

from icu.contracts import Topic

ICU = str(Path(sys.executable).parent / "icu")


def _run(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ICU_")}
    return subprocess.run([ICU, *args], capture_output=True, text=True, env={**clean, **env}, timeout=60)


def test_topics_create_then_list(broker, topic_prefix):
    env = {"ICU_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "ICU_TOPIC_PREFIX": topic_prefix}
    created = _run("topics", "create", "--partitions", "4", **env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created") == len(Topic)
    again = _run("topics", "create", "--partitions", "4", **env)
    assert again.stdout.count("exists") == len(Topic)
    listed = _run("topics", "list", **env)
    assert listed.returncode == 0
    assert f"{topic_prefix}.vitals\t4 partitions" in listed.stdout
    assert f"{topic_prefix}.dead-letter\t3 partitions" in listed.stdout


def test_topics_list_on_an_empty_prefix_says_what_to_do(broker):
    result = _run("topics", "list", "--bootstrap-servers", broker.bootstrap_servers, "--topic-prefix", "nothing-here")
    assert result.returncode == 1
    assert "run `icu topics create`" in result.stderr


def test_db_migrate_and_maintain(database_url):
    first = _run("db", "migrate", ICU_DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    assert "applied: 0001_core" in first.stdout
    again = _run("db", "migrate", "--database-url", database_url)
    assert "none pending" in again.stdout
    maintain = _run("db", "maintain", ICU_DATABASE_URL=database_url)
    assert maintain.returncode == 0, maintain.stderr
    assert "partitions created: 15" in maintain.stdout  # 3 tables x (yesterday, today, 3 days ahead)


def test_db_migrate_without_a_url_names_the_variable():
    result = _run("db", "migrate")
    assert result.returncode == 2
    assert "ICU_DATABASE_URL is not set" in result.stderr


def test_an_unreachable_broker_is_one_clear_line():
    result = _run("topics", "create", ICU_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", ICU_KAFKA_BOOTSTRAP_TIMEOUT_MS="1000")
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1 (ICU_KAFKA_BOOTSTRAP_SERVERS)" in result.stderr
    assert "Traceback" not in result.stderr
