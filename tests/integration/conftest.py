"""Real services for integration tests, started once per test session.

- Kafka protocol: the embedded Tansu broker on a free loopback port.
- PostgreSQL: ``ICU_TEST_DATABASE_URL`` when set (any server we may create databases on),
  otherwise an embedded PostgreSQL in a temporary folder. Each test gets its own database.
- TimescaleDB: the PGlite WebAssembly engine (see timescale_engine.py), when node and its
  packages are installed.

Each test gets a unique topic prefix and group ids. With ``ICU_TEST_REQUIRE_ALL=1`` (set by
CI) a missing service fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from infra.broker import EmbeddedBroker
from infra.ports import free_port
from infra.postgres import EmbeddedPostgres
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from tests.integration.services import Service
from tests.integration.timescale_engine import TimescaleEngine, timescale_unavailable_reason

pytestmark = pytest.mark.integration


def skip_or_fail(reason: str) -> None:
    if os.environ.get("ICU_TEST_REQUIRE_ALL") == "1":
        pytest.fail(f"required test service unavailable: {reason}")
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_file = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(port=0, log_file=log_file) as running:
        yield running


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker, topic_prefix: str) -> TopicsAdminSettings:
    """Settings for a fresh prefix on the session broker, with every topic created."""
    settings = TopicsAdminSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=topic_prefix, topic_partitions=3
    )
    create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a database on the session's PostgreSQL server, used to create per-test databases."""
    external = os.environ.get("ICU_TEST_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = tmp_path_factory.mktemp("pg") / "data"
    with EmbeddedPostgres(data_dir, port=0, database="icu_tests") as server:
        yield server.url()


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A brand-new empty database for this test, dropped afterwards."""
    name = f"icu_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(postgres_server_url, dbname=name)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def timescale_url() -> Iterator[str]:
    """A real TimescaleDB engine (PGlite). One connection at a time; no COPY."""
    reason = timescale_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    engine = TimescaleEngine.start(port=free_port())
    try:
        yield engine.url
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture
def dedicated_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, so stopping it disturbs no other test.

    Its folder is outside pytest's temporary root: as root, the server runs as another user who
    must traverse the folder's parents, and every pytest session that starts (another shell's
    included) makes ``/tmp/pytest-of-root`` private again."""
    folder = Path(tempfile.mkdtemp(prefix="icu-sink-outage-"))
    server = EmbeddedPostgres(folder / "data", port=0, database="icu_outage")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        _kill_leftover_postmaster(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)


def _kill_leftover_postmaster(data_dir: Path) -> None:
    """End the server this test started if ``pg_ctl stop`` could not (fast shutdown, then kill)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises once the process is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Every service a test starts, stopped at the end whatever happened."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()
