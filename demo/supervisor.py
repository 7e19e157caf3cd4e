"""Carries out the demo's plan: child processes with their logs, readiness, restarts, the
broker memory guard, and a clean stop.

Each child runs in its own process group (``start_new_session``), so a terminal's Ctrl-C
reaches only the supervisor, which stops the children in reverse start order (SIGTERM to the
group, SIGKILL after a grace period): grandchildren such as Streamlit under `icu dashboard` or
Tansu and PostgreSQL under `icu up` go with their parent's group, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from demo import DemoError
from demo.broker_memory import BrokerMemoryGuard, find_child
from demo.plan import (
    DemoOptions,
    Infra,
    Service,
    describe_beds,
    parse_up_output,
    plan_services,
    topic_names,
    up_service,
)
from infra.ports import free_port, port_in_use, wait_for_listener
from infra.settings import TopicsAdminSettings

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
INFRA_STOP_GRACE_S = 20.0
INFRA_TIMEOUT_S = 180.0
SERVICES_TIMEOUT_S = 240.0
PROGRESS_EVERY_S = 10.0
GUARD_EVERY_S = 5.0
STATUS_EVERY_S = 60.0


class Child:
    """One service process, its log file and its restarts."""

    def __init__(self, service: Service, logs_dir: Path) -> None:
        self.service = service
        self.log_path = logs_dir / f"{service.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.restarts_done = 0
        self.runs = 0
        self._log_start = 0  # log offset where the current run began
        self._log: IO[bytes] | None = None
        self._terminated = False  # SIGTERM sent to the current run

    @property
    def name(self) -> str:
        return self.service.name

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        mode = "ab" if self.runs else "wb"
        self.runs += 1
        self._log = self.log_path.open(mode)
        self._log_start = self._log.tell()
        self.process = subprocess.Popen(
            self.service.argv,
            env={**os.environ, **self.service.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.ready_at = None
        self._terminated = False

    def log_text(self) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_start)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.log_text().rstrip().splitlines()[-lines:])

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def check_ready(self) -> bool:
        if self.ready_at is not None:
            return True
        ready = self.service.ready
        if ready.port is not None:
            ok = wait_for_listener(ready.port, timeout_s=0.2)  # accepts connections, not just bound
        else:
            ok = ready.log_pattern is not None and re.search(ready.log_pattern, self.log_text()) is not None
        if ok:
            self.ready_at = time.monotonic()
        return ok

    def terminate(self) -> None:
        """SIGTERM the child's process group (it and whatever it started in its group), once per
        run: every `icu` service reads a second SIGTERM as "stop now" and would skip its final
        flush and commit, and the supervisor terminates a group of children before it waits on
        each (``stop`` terminates again)."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the child's process group, SIGKILL it after ``grace_s``; the exit code."""
        process = self.process
        if process is None:
            return None
        try:
            self.terminate()
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", self.name, grace_s)
            # Whatever is left in the group (a grandchild that ignored SIGTERM) goes now.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
            return process.poll()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


@dataclass
class DemoResult:
    exit_code: int
    url_after_s: float | None = None
    first_alert_after_s: float | None = None
    reason: str = ""


class Demo:
    """Runs the plan until ``stop`` is set, ``options.duration_s`` passes, or a service fails for good."""

    def __init__(self, options: DemoOptions, out: TextIO, *, database_url: str | None = None) -> None:
        self.options = options
        self.out = out
        self.database_url = database_url
        self.children: list[Child] = []
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.guard: BrokerMemoryGuard | None = None
        self.infra: Infra | None = None
        self.dashboard_url = ""
        self.result = DemoResult(exit_code=0)

    # --- output ---------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.out.write(f"[{time.monotonic() - self.started:6.1f}s] {message}\n")
        self.out.flush()

    # --- start ----------------------------------------------------------------------------

    def install_signals(self) -> Demo:
        def _on_signal(signum: int, _frame: object) -> None:
            if self.stop_event.is_set():
                raise KeyboardInterrupt
            self.stop_event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)
        return self

    def run(self) -> DemoResult:
        try:
            self._start()
            if not self.stop_event.is_set():
                self._supervise()
        except DemoError as exc:
            self.say(f"stopping: {exc}")
            self.result.exit_code = 1
            self.result.reason = str(exc)
        finally:
            self._stop_all()
        return self.result

    def _prepare_dirs(self) -> None:
        options = self.options
        options.state_dir.mkdir(parents=True, exist_ok=True)
        # The broker starts empty every time; so do the alerts worker's state and, unless kept,
        # the database, so the dashboard shows this run's ward only.
        shutil.rmtree(options.alerts_dir, ignore_errors=True)
        if not options.keep_data:
            shutil.rmtree(options.infra_dir, ignore_errors=True)
        options.logs_dir.mkdir(parents=True, exist_ok=True)

    def _start(self) -> None:
        options = self.options
        self._prepare_dirs()
        self.say(f"icu demo: {len(options.beds)} simulated beds; state and logs in {options.state_dir}")
        for line in describe_beds(options.beds):
            self.say(f"  {line}")
        infra = Child(up_service(options, database_url=self.database_url), options.logs_dir)
        self.children.append(infra)
        infra.start()
        self._wait_ready([infra], INFRA_TIMEOUT_S)
        if self.stop_event.is_set():
            return
        self.infra = parse_up_output(infra.log_text(), database_url=self.database_url,
                                     topic_prefix=options.topic_prefix)  # fmt: skip
        self.say(f"broker {self.infra.bootstrap_servers}, database ready")
        assert infra.process is not None
        broker_pid = find_child(infra.process.pid, "tansu")
        if broker_pid is not None:
            topics = TopicsAdminSettings(kafka_bootstrap_servers=self.infra.bootstrap_servers,
                                         topic_prefix=self.infra.topic_prefix)  # fmt: skip
            self.guard = BrokerMemoryGuard(topics, broker_pid, options.broker_memory_mib)
        else:
            self.say("the embedded broker's process was not found: its memory is not watched")

        dashboard_port = options.dashboard_port or free_port()
        if port_in_use(dashboard_port):
            raise DemoError(f"port {dashboard_port} is in use (another dashboard?); pass --port N, or --port 0")
        services = plan_services(options, self.infra, whip_port=free_port(), alerts_web_port=free_port(),
                                 dashboard_port=dashboard_port, whip_token=secrets.token_urlsafe(24))  # fmt: skip
        self.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
        children = [Child(service, options.logs_dir) for service in services]
        for child in children:
            if child.name == "bedside":  # the cameras need the WHIP endpoint
                self._wait_ready([c for c in children if c.name == "ingest"], SERVICES_TIMEOUT_S)
                if self.stop_event.is_set():
                    return
            self.children.append(child)
            child.start()
            self.say(f"started {child.name} (log {child.log_path.name})")
        self._wait_ready(children, SERVICES_TIMEOUT_S)
        if self.stop_event.is_set():
            return
        self.result.url_after_s = time.monotonic() - self.started
        lines = [
            "",
            f"icu-watch demo is running ({self.result.url_after_s:.0f} s to start).",
            f"  Dashboard:  {self.dashboard_url}   (demo mode: no login)",
            f"  Kafka:      {self.infra.bootstrap_servers}   (embedded Tansu, in memory; frames rotated past "
            f"{options.broker_memory_mib} MiB)",
            f"  Database:   {_redacted(self.infra.database_url)}",
            "  Topics:     " + ", ".join(topic_names(self.infra.topic_prefix)),
            f"  Logs:       {options.logs_dir}/*.log",
            "  Alerts appear within minutes (respiratory deterioration and sepsis beds: NEWS2).",
            "Press Ctrl-C to stop." if options.duration_s is None else f"Stopping after {options.duration_s:g} s.",
            "",
        ]
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def _wait_ready(self, children: list[Child], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        next_progress = time.monotonic() + PROGRESS_EVERY_S
        while not self.stop_event.is_set():
            for child in children:
                if child.ready_at is None and child.check_ready():
                    self.say(f"ready: {child.name} ({child.ready_at - child.started_at:.1f} s)")  # type: ignore[operator]
                code = child.exit_code()
                if code is not None:
                    raise DemoError(f"{child.name} exited with code {code} while starting; last lines of "
                                    f"{child.log_path}:\n{child.tail()}")  # fmt: skip
            waiting = [c for c in children if c.ready_at is None]
            if not waiting:
                return
            now = time.monotonic()
            if now >= deadline:
                raise DemoError("timed out waiting for " + "; ".join(
                    f"{c.service.ready.waiting_for} (see {c.log_path})" for c in waiting))  # fmt: skip
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                self.say("waiting for " + "; ".join(c.service.ready.waiting_for for c in waiting))
            self.stop_event.wait(0.25)

    # --- run ------------------------------------------------------------------------------

    def _supervise(self) -> None:
        end = None if self.options.duration_s is None else self.started + self.options.duration_s
        next_guard = time.monotonic()
        next_status = time.monotonic() + STATUS_EVERY_S
        alert_watch = FirstAlertWatch(self.infra.database_url if self.infra else "")
        while not self.stop_event.wait(1.0):
            now = time.monotonic()
            if end is not None and now >= end:
                self.say(f"--duration {self.options.duration_s:g} s reached")
                return
            for child in self.children:
                code = child.exit_code()
                if code is not None:
                    self._on_exit(child, code)
            if self.guard is not None and now >= next_guard:
                next_guard = now + GUARD_EVERY_S
                if self.guard.measure() is None:
                    raise DemoError("the embedded broker has gone (see logs/infra.log and infra/broker.log)")
                if self.guard.due():
                    self._rotate_frames(self.guard)
            if self.result.first_alert_after_s is None:
                first = alert_watch.poll()
                if first is not None:
                    self.result.first_alert_after_s = now - self.started
                    self.say(f"first alert in the database: {first} ({self.result.first_alert_after_s:.0f} s "
                             f"after start); see {self.dashboard_url}")  # fmt: skip
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                rss = f"{self.guard.stats.last_rss_mib:.0f} MiB" if self.guard else "?"
                rotations = self.guard.stats.rotations if self.guard else 0
                self.say(f"running: broker {rss} (cap {self.options.broker_memory_mib} MiB, "
                         f"{rotations} frame rotations)")  # fmt: skip

    def _rotate_frames(self, guard: BrokerMemoryGuard) -> None:
        """Rotate the frames topic with the frame path (camera ingest and inference) stopped and
        start it again after. Neither client survives the topic being re-created on the embedded
        broker: the idempotent frames producer gets a fatal error for its sequence numbers (and
        would drop every frame and camera status after it), and the consumer keeps positions past
        the new topic's end, which the broker does not answer with "offset out of range". Started
        afresh, both begin at the new topic; the simulated cameras reconnect to the endpoint."""
        frame_path = [c for c in self.children if c.name in ("ingest", "infer")]
        for child in frame_path:
            child.terminate()
        for child in frame_path:
            child.stop()
        before = guard.stats.last_rss_mib
        after = guard.rotate()
        for child in frame_path:
            child.start()
        self.say(f"broker memory reached {before:.0f} MiB (cap {self.options.broker_memory_mib}): frames topic "
                 f"rotated, {after:.0f} MiB now; camera ingest and inference restarted")  # fmt: skip

    def _on_exit(self, child: Child, code: int) -> None:
        self.say(f"{child.name} exited with code {code}; last lines of {child.log_path}:")
        self.out.write(_indent(child.tail()) + "\n")
        if child.service.critical or child.restarts_done >= child.service.restarts:
            raise DemoError(f"{child.name} failed ({child.restarts_done} restarts); the demo cannot go on")
        child.restarts_done += 1
        self.say(f"restarting {child.name} ({child.restarts_done} of {child.service.restarts})")
        child.stop(0.5)
        child.start()

    # --- stop -----------------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Reverse start order: the cameras and monitors first (nothing new comes in), then the
        pipeline services together (each flushes and commits on SIGTERM), then `icu up` last,
        with a longer grace: it stops the broker and the database, which runs in a session of its
        own (pg_ctl) and would be orphaned if `icu up` were killed."""
        running = [c for c in self.children if c.process is not None]
        if not running:
            return
        self.say("stopping " + ", ".join(c.name for c in reversed(running)))
        started = time.monotonic()
        infra = [c for c in running if c.service.critical]
        sources = [c for c in running if c.name == "bedside"]
        services = [c for c in reversed(running) if c not in infra and c not in sources]
        for child in sources:
            child.stop()
        for child in services:
            child.terminate()
        for child in services:
            child.stop()
        for child in infra:
            child.stop(INFRA_STOP_GRACE_S)
        for child in reversed(running):
            log.debug("%s stopped (exit code %s)", child.name, child.exit_code())
        self.say(f"stopped everything in {time.monotonic() - started:.1f} s")


class FirstAlertWatch:
    """Polls the database for the first stored alert (code and bed), for the progress line."""

    def __init__(self, database_url: str, every_s: float = 5.0) -> None:
        self.database_url = database_url
        self.every_s = every_s
        self._next = 0.0

    def poll(self) -> str | None:
        if not self.database_url or time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.every_s
        import psycopg

        try:
            with psycopg.connect(self.database_url, connect_timeout=3) as conn:
                row = conn.execute(
                    "SELECT code, bed_id FROM alerts WHERE kind = 'physiological' ORDER BY raised_at LIMIT 1"
                ).fetchone()
        except psycopg.Error as exc:
            log.debug("first-alert poll: %s", exc)
            return None
        return None if row is None else f"{row[0]} on {row[1]}"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _redacted(url: str) -> str:
    from infra.db.migrate import redact

    return redact(url)
