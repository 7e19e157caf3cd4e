"""What `icu demo` runs, decided without starting anything: beds and their scenarios, the
services in start order, each one's command line, environment and readiness signal.

Pure functions over plain values, so the unit tests check the whole plan; the supervisor
(:mod:`demo.supervisor`) only carries it out.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from demo import DemoError
from simulator.errors import SimulatorError
from simulator.scenario import load_scenario

DEFAULT_BEDS = 8
BED_PREFIX = "sim"

DEFAULT_MIX: tuple[str, ...] = (
    "stable@0",
    "respiratory-deterioration@240",
    "pain@30",
    "apnea@200",
    "seizure@90",
    "sepsis@1620",
    "nuisance-walk-through@170",
    "nuisance-night@30",
)
"""The default ward, one entry per bed, cycled: ``SCENARIO@OFFSET_S`` starts the library scenario
OFFSET_S seconds in, so each bed's episode is under way within the demo's first minutes:
respiratory deterioration 2 min after its onset (NEWS2 medium about 95 s after the demo starts),
pain 30 s before its first episode, the 22 s apnea 50 s in, the seizure 30 s in, sepsis 25 min
into its ramp (NEWS2 high, confusion, about 2 min in), a nurse lingering at the bedside 30 s in,
night mode 30 s in."""

ALERT_BEDS: frozenset[str] = frozenset({"respiratory-deterioration", "sepsis"})
"""Scenarios whose vitals alone raise a NEWS2 alert within minutes at their default offsets."""

SPEC = re.compile(r"^(?P<name>[^@]+?)(?:@(?P<offset>\d+(?:\.\d+)?))?$")


@dataclass(frozen=True)
class BedPlan:
    """One simulated bed: ``bed_id`` runs ``scenario`` from ``offset_s`` seconds in."""

    bed_id: str
    scenario: str
    offset_s: float
    index: int

    def arg(self) -> str:
        """The bed as ``python -m demo.bedside --bed`` takes it."""
        return f"{self.bed_id}={self.scenario}@{self.offset_s:g}"


def parse_scenario_spec(spec: str) -> tuple[str, float]:
    """``"sepsis@1620"`` -> ("sepsis", 1620.0); the scenario must exist (library name or file)
    and the offset lie inside it. Raises DemoError naming the problem."""
    match = SPEC.match(spec.strip())
    if match is None:
        raise DemoError(f"--scenario {spec!r}: expected NAME or NAME@SECONDS, e.g. sepsis@1620")
    name = match.group("name")
    offset = float(match.group("offset") or 0)
    try:
        scenario = load_scenario(name)
    except SimulatorError as exc:
        raise DemoError(f"--scenario {spec!r}: {exc}") from None
    if offset >= scenario.duration_s:
        raise DemoError(
            f"--scenario {spec!r}: offset {offset:g} s is past the scenario's end ({scenario.duration_s:g} s)"
        )
    return name, offset


def parse_bed_arg(value: str, index: int) -> BedPlan:
    """``"sim-01=stable@0"`` (as :meth:`BedPlan.arg` writes it) -> BedPlan."""
    bed_id, sep, spec = value.partition("=")
    if not sep or not bed_id:
        raise DemoError(f"--bed {value!r}: expected BED=SCENARIO@OFFSET_S")
    name, offset = parse_scenario_spec(spec)
    return BedPlan(bed_id=bed_id, scenario=name, offset_s=offset, index=index)


def plan_beds(beds: int, scenarios: list[str] | None = None) -> list[BedPlan]:
    """``beds`` beds named ``sim-01``…, scenarios cycled from ``scenarios`` (default the mix)."""
    if not 1 <= beds <= 32:
        raise DemoError(f"--beds must be within 1-32 (the demo runs on one machine), got {beds}")
    specs = list(scenarios) if scenarios else list(DEFAULT_MIX)
    parsed = [parse_scenario_spec(spec) for spec in specs]
    return [
        BedPlan(
            bed_id=f"{BED_PREFIX}-{i + 1:02d}",
            scenario=parsed[i % len(parsed)][0],
            offset_s=parsed[i % len(parsed)][1],
            index=i,
        )
        for i in range(beds)
    ]


@dataclass(frozen=True)
class DemoOptions:
    """What `icu demo` was asked for (flags and ``ICU_*`` fallbacks, already resolved)."""

    state_dir: Path
    beds: list[BedPlan]
    duration_s: float | None = None
    dashboard_port: int = 8501
    frame_size: tuple[int, int] = (160, 120)
    fps: float = 10.0
    jpeg_quality: int = 70
    broker_memory_mib: int = 1024
    keep_data: bool = False
    topic_prefix: str = "icu"

    def __post_init__(self) -> None:
        if self.duration_s is not None and self.duration_s <= 0:
            raise DemoError(f"--duration must be positive, got {self.duration_s:g}")
        if not 0 <= self.dashboard_port <= 65535:
            raise DemoError(f"--port must be within 0-65535, got {self.dashboard_port}")
        if self.broker_memory_mib < 128:
            raise DemoError(f"--broker-memory must be at least 128 MiB, got {self.broker_memory_mib}")
        if not self.beds:
            raise DemoError("the demo needs at least one bed")

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def infra_dir(self) -> Path:
        """`icu up`'s ICU_STATE_DIR: its embedded database and broker log."""
        return self.state_dir / "infra"

    @property
    def alerts_dir(self) -> Path:
        return self.state_dir / "alerts"


@dataclass(frozen=True)
class Infra:
    """What `icu up` printed: where the broker and database are."""

    bootstrap_servers: str
    database_url: str
    topic_prefix: str


@dataclass(frozen=True)
class Ready:
    """A service is ready when ``log_pattern`` appears in its log, or ``port`` on 127.0.0.1
    accepts connections (whichever is set); ``waiting_for`` is said while it is not."""

    waiting_for: str
    log_pattern: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Ready
    restarts: int = 3
    """How often a service that dies is restarted before the demo gives up."""
    critical: bool = False
    """Nothing works without it: the demo stops when it dies."""


def icu(*args: str) -> list[str]:
    """The `icu` command as this interpreter runs it (no console script needed on PATH)."""
    return [sys.executable, "-m", "icu.cli", *args]


def up_service(options: DemoOptions, *, database_url: str | None) -> Service:
    """`icu up` on free ports with its own state folder (the user's own `icu up` may be running)."""
    env = {
        "ICU_STATE_DIR": str(options.infra_dir),
        "ICU_BROKER_PORT": "0",
        "ICU_POSTGRES_PORT": "0",
        "ICU_TOPIC_PREFIX": options.topic_prefix,
    }
    if database_url:
        env["ICU_DATABASE_URL"] = database_url
    return Service(
        name="infra",
        argv=icu("up"),
        env=env,
        ready=Ready("the embedded broker and database (`icu up`)", log_pattern=r"Press Ctrl-C to stop\."),
        restarts=0,
        critical=True,
    )


def parse_up_output(text: str, *, database_url: str | None, topic_prefix: str) -> Infra:
    """The broker and database from `icu up`'s printed ``export`` lines (a database URL given
    by the user is printed redacted, so that one is taken from ``database_url``)."""
    exports = dict(re.findall(r"^export (ICU_[A-Z_]+)=(.*)$", text, flags=re.MULTILINE))
    bootstrap = exports.get("ICU_KAFKA_BOOTSTRAP_SERVERS")
    url = database_url or exports.get("ICU_DATABASE_URL")
    if not bootstrap or not url:
        raise DemoError("`icu up` did not print the broker and database addresses; see its log")
    return Infra(
        bootstrap_servers=bootstrap, database_url=url, topic_prefix=exports.get("ICU_TOPIC_PREFIX", topic_prefix)
    )


def plan_services(
    options: DemoOptions, infra: Infra, *, whip_port: int, alerts_web_port: int, dashboard_port: int, whip_token: str
) -> list[Service]:
    """Every pipeline service after `icu up`, in start order (stopped in reverse)."""
    width, height = options.frame_size
    base = {
        "ICU_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "ICU_TOPIC_PREFIX": infra.topic_prefix,
        "ICU_DATABASE_URL": infra.database_url,
        "ICU_BEDS": ",".join(bed.bed_id for bed in options.beds),
    }
    whip_url = f"http://127.0.0.1:{whip_port}"
    bedside_argv = [
        sys.executable,
        "-m",
        "demo.bedside",
        "--whip",
        whip_url,
        "--fps",
        f"{options.fps:g}",
        "--size",
        f"{width}x{height}",
    ]
    for bed in options.beds:
        bedside_argv += ["--bed", bed.arg()]
    return [
        Service(
            name="ingest",
            argv=icu("ingest", "whip", "--host", "127.0.0.1", "--port", str(whip_port)),
            env={
                **base,
                "ICU_WHIP_TOKENS": f"*:{whip_token}",
                "ICU_WHIP_ICE_ADDRESSES": "127.0.0.1",
                "ICU_INGEST_FPS": f"{options.fps:g}",
                "ICU_INGEST_WIDTH": str(width),
                "ICU_INGEST_HEIGHT": str(height),
                "ICU_INGEST_JPEG_QUALITY": str(options.jpeg_quality),
            },
            ready=Ready(f"the WHIP endpoint on port {whip_port}", port=whip_port),
        ),
        Service(
            name="infer",
            argv=icu("infer", "--device", "cpu"),
            env={**base, "ICU_INFER_START": "latest"},
            ready=Ready(
                "the inference worker to load its model and join its group", log_pattern=r"inference worker in group"
            ),
        ),
        Service(
            name="alerts",
            argv=icu("alerts"),
            env={**base, "ICU_ALERTS_WEB_PORT": str(alerts_web_port), "ICU_ALERTS_DATA_DIR": str(options.alerts_dir)},
            ready=Ready("the alerts worker (Faust) to start", log_pattern=r"alerts worker .* -> "),
        ),
        Service(
            name="sink",
            argv=icu("sink"),
            env=base,
            ready=Ready("the database sink to connect", log_pattern=r"database sink in group"),
        ),
        Service(
            name="dashboard",
            argv=icu("dashboard", "--host", "127.0.0.1", "--port", str(dashboard_port)),
            env={**base, "ICU_DEMO": "1"},
            ready=Ready(f"the dashboard on port {dashboard_port}", port=dashboard_port),
        ),
        Service(
            name="bedside",
            argv=bedside_argv,
            env={**base, "ICU_SIM_WHIP_TOKEN": whip_token},
            ready=Ready(f"{len(options.beds)} simulated cameras to connect", log_pattern=r"publishing to"),
        ),
    ]


def topic_names(prefix: str) -> list[str]:
    """The topics the demo's `icu up` creates, as the banner lists them."""
    from icu.contracts import Topic

    return [topic.full_name(prefix) for topic in Topic]


def describe_beds(beds: list[BedPlan]) -> list[str]:
    """One line per bed for the banner."""
    return [f"{bed.bed_id}: {bed.scenario} from {bed.offset_s:g} s" for bed in beds]
