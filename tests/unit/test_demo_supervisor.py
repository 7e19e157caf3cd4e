"""The demo supervisor's stop of a child process: one SIGTERM per run, so a service shuts down
gracefully, and SIGKILL only for a child that ignores it. The children are real processes
using the services' own signal handling (``icu.kafka.GracefulStop``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from demo.plan import Ready, Service
from demo.supervisor import Child

# A service's shape: wait for the stop flag, then take a while to flush and commit. A second
# SIGTERM during that time is "stop now" (KeyboardInterrupt), as in every `icu` service.
GRACEFUL_SERVICE = r"""
import time
from icu.kafka import GracefulStop
stop = GracefulStop().install()
print("ready", flush=True)
try:
    while not stop.wait(0.05):
        pass
    time.sleep(0.5)
    print("clean exit", flush=True)
except KeyboardInterrupt:
    print("forced exit", flush=True)
    raise SystemExit(130)
"""

STUBBORN_SERVICE = r"""
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def wait_ready(child: Child) -> Child:
    deadline = time.monotonic() + 30
    while not child.check_ready():
        assert time.monotonic() < deadline, child.log_text()
        time.sleep(0.05)
    return child


def started(tmp_path: Path, source: str) -> Child:
    service = Service(name="svc", argv=[sys.executable, "-c", source], env={}, ready=Ready("svc", log_pattern="ready"))
    child = Child(service, tmp_path)
    child.start()
    return wait_ready(child)


def test_terminate_then_stop_sends_one_sigterm(tmp_path: Path) -> None:
    """The supervisor terminates a group of children, then waits on each with ``stop``. A child
    still shutting down when its ``stop`` comes must not get a second SIGTERM."""
    child = started(tmp_path, GRACEFUL_SERVICE)
    child.terminate()
    time.sleep(0.2)  # the child's handler has run: it is flushing
    assert child.stop() == 0
    assert child.log_text().split()[-2:] == ["clean", "exit"]


def test_a_restarted_child_can_be_terminated_again(tmp_path: Path) -> None:
    child = started(tmp_path, GRACEFUL_SERVICE)
    assert child.stop() == 0
    child.start()
    wait_ready(child)
    assert child.stop() == 0
    assert child.log_text().split()[-2:] == ["clean", "exit"]


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    child = started(tmp_path, STUBBORN_SERVICE)
    began = time.monotonic()
    assert child.stop(grace_s=0.5) == -9
    assert time.monotonic() - began < 10
