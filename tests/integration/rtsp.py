"""A real RTSP camera for tests: GStreamer's RTSP server (rtsp_server.py) under Debian's Python.

The server needs ``gi`` and GstRtspServer, which the venv does not have; Debian's
``/usr/bin/python3`` does once ``gir1.2-gst-rtsp-server-1.0`` and the GStreamer plugins are
installed (``.ci/run`` installs them). Without them the tests skip, or fail under
``ICU_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from infra.ports import free_port
from tests.integration.conftest import skip_or_fail

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def _system_env() -> dict[str, str]:
    """The environment without the venv's Python settings, for Debian's interpreter."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}


@functools.cache
def rtsp_server_unavailable_reason() -> str | None:
    """Why the GStreamer RTSP server cannot run here, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the GStreamer RTSP server runs under Debian's Python)"
    try:
        probe = subprocess.run(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_system_env(),
        )
    except subprocess.TimeoutExpired:
        return "probing the GStreamer RTSP server timed out"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"GStreamer RTSP server not usable under {SYSTEM_PYTHON} ({last}); install "
            "gir1.2-gst-rtsp-server-1.0 python3-gi and the gstreamer1.0-plugins-* packages"
        )
    return None


def require_rtsp_server() -> None:
    reason = rtsp_server_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)


class RtspTestServer:
    """One RTSP server process on a fixed loopback port; stop/kill/restart keep the port."""

    def __init__(
        self,
        *,
        port: int | None = None,
        path: str = "/bed",
        user: str | None = None,
        password: str | None = None,
        fps: int = 15,
        width: int = 320,
        height: int = 240,
    ) -> None:
        self.port = port or free_port()
        self.path = path
        self.user = user
        self.password = password
        self.fps = fps
        self.width = width
        self.height = height
        self.process: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []

    def url(self, *, path: str | None = None, user: str | None = None, password: str | None = None) -> str:
        """The stream URL, with the server's credentials unless others are given."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        userinfo = ""
        if user is not None:
            userinfo = f"{user}:{password}@" if password is not None else f"{user}@"
        return f"rtsp://{userinfo}127.0.0.1:{self.port}{path or self.path}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 20.0) -> Self:
        """Start the server and return once it prints ``ready`` (listening)."""
        require_rtsp_server()
        if self.running:
            raise RuntimeError("RTSP test server already running")
        argv = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--path", self.path]
        argv += ["--fps", str(self.fps), "--width", str(self.width), "--height", str(self.height)]
        if self.user is not None:
            argv += ["--user", self.user, "--password", self.password or ""]
        deadline = time.monotonic() + timeout_s
        while True:
            if self._launch(argv, deadline):
                return self
            # GLib binds with SO_REUSEADDR, so a restart on the same port normally just works;
            # retry briefly in case a socket of a killed server is still being torn down.
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP test server did not start: {' | '.join(self.stderr_lines[-5:])}")
            time.sleep(0.2)

    def _launch(self, argv: list[str], deadline: float) -> bool:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_system_env(), start_new_session=True
        )
        self.process = process
        assert process.stdout is not None
        assert process.stderr is not None
        threading.Thread(target=self._collect, args=(process.stderr,), daemon=True).start()
        ready = threading.Event()

        def wait_ready(stdout: IO[str]) -> None:
            # Reads to the end so the server never blocks on a full stdout pipe.
            for line in stdout:
                if line.strip() == "ready":
                    ready.set()

        threading.Thread(target=wait_ready, args=(process.stdout,), daemon=True).start()
        while not ready.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                return False
        return True

    def _collect(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_lines.append(line.rstrip())
            del self.stderr_lines[:-200]

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in time)."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the camera dies without closing anything."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        self.process = None

    def restart(self, timeout_s: float = 20.0) -> Self:
        self.stop()
        return self.start(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
