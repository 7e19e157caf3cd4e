"""Scenarios: one simulated patient over time, as a validated YAML/JSON document.

A scenario names the patient's baseline vitals and a timeline of *episodes*. Each episode has
``kind``, ``onset_s``, ``duration_s`` and ``intensity`` (0-1) plus kind-specific fields. Findings
(pain, apnea, twitching, deterioration) are what the pipeline must detect; nuisances (walk-through,
night mode, blanket adjustment, camera shake, noise, head turn) are what it must ignore.

Validation errors name the offending field as a path, e.g. ``episodes[2].duration_s``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from icu.contracts import Consciousness
from simulator.errors import SimulatorError

Limb = Literal["head", "left_arm", "right_arm", "left_leg", "right_leg"]
LIMBS: Final[tuple[Limb, ...]] = get_args(Limb)

MAX_SCENARIO_S: Final = 7 * 24 * 3600.0


class ScenarioError(SimulatorError):
    """A scenario file that cannot be used; the message names the file and the field."""


def _check_range(name: str, value: tuple[float, float], lo: float, hi: float, unit: str) -> None:
    if not lo <= value[0] <= value[1] <= hi:
        raise ValueError(f"{name} must be an increasing range within {lo:g}-{hi:g} {unit}, got {list(value)}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Strict):
    """The patient's resting vitals before any episode."""

    hr: float = Field(default=78.0, ge=30, le=180, description="Heart rate, beats/min.")
    rr: float = Field(default=14.0, ge=6, le=40, description="Respiration rate, breaths/min.")
    spo2: float = Field(default=97.0, ge=70, le=100, description="SpO2, %.")
    sbp: float = Field(default=122.0, ge=60, le=220, description="Systolic blood pressure, mmHg.")
    dbp: float = Field(default=76.0, ge=30, le=140, description="Diastolic blood pressure, mmHg.")
    temp_c: float = Field(default=36.8, ge=33, le=41, description="Temperature, degrees Celsius.")
    consciousness: Consciousness = Consciousness.ALERT
    on_oxygen: bool = False
    breath_depth: float = Field(default=1.0, ge=0.3, le=2.0, description="Relative tidal chest excursion.")

    @model_validator(mode="after")
    def _pressures(self) -> Self:
        if self.dbp >= self.sbp:
            raise ValueError(f"dbp {self.dbp} must be below sbp {self.sbp}")
        return self


class Monitor(_Strict):
    """How the bedside monitor samples and where its readings go wrong."""

    nibp_interval_s: float = Field(default=300.0, ge=30, le=7200, description="Cuff pressure cycle, seconds.")
    temp_interval_s: float = Field(default=900.0, ge=60, le=14400, description="Temperature reading period.")
    spo2_probe_off_per_hour: float = Field(default=0.5, ge=0, le=60, description="SpO2 probe-off gaps per hour.")
    dropout: float = Field(default=0.005, ge=0, le=0.5, description="Chance that a 1 Hz reading is missing.")
    motion_artifacts: bool = Field(default=True, description="Spikes in HR/SpO2 while the patient moves.")


class _Episode(_Strict):
    onset_s: float = Field(ge=0, description="Start, seconds from the scenario start.")
    duration_s: float = Field(gt=0, description="Length, seconds.")
    intensity: float = Field(default=0.7, ge=0, le=1, description="0-1: how strong the episode is.")

    # Whether the episode is a finding the pipeline must report (False: a nuisance to ignore).
    finding: ClassVar[bool] = True

    @property
    def end_s(self) -> float:
        return self.onset_s + self.duration_s


class Pain(_Episode):
    """Pain: grimacing bouts (brow lowering, eye squeezing, nose wrinkle, mouth stretch), HR and BP up."""

    kind: Literal["pain"]
    bout_every_s: float = Field(default=15.0, ge=2, le=600, description="Mean time between grimace bouts.")
    bout_s: tuple[float, float] = Field(default=(3.0, 8.0), description="Bout length range, seconds.")

    @model_validator(mode="after")
    def _bouts(self) -> Self:
        _check_range("bout_s", self.bout_s, 0.5, 120, "s")
        return self


class RespiratoryDeterioration(_Episode):
    """RR climbing, breathing shallower, SpO2 falling; ramps over ``ramp_s`` and stays until the end."""

    kind: Literal["respiratory_deterioration"]
    rr_target: float = Field(default=30.0, ge=15, le=60, description="RR reached at full intensity.")
    spo2_drop: float = Field(default=8.0, ge=0, le=30, description="SpO2 fall at full intensity, %.")
    depth_factor: float = Field(default=0.55, ge=0.2, le=1.0, description="Tidal depth at full intensity.")
    ramp_s: float | None = Field(default=None, gt=0, description="Ramp length; default: the whole episode.")


class Apnea(_Episode):
    """No chest motion for the whole episode; SpO2 dips after it with a circulation delay."""

    kind: Literal["apnea"]
    duration_s: float = Field(ge=10, le=120, description="Apnea length, seconds (clinically 10-40 s).")


class IrregularBreathing(_Episode):
    """Cheyne-Stokes (waxing-waning depth with central pauses) or ataxic (breath-to-breath chaos)."""

    kind: Literal["irregular_breathing"]
    pattern: Literal["cheyne_stokes", "ataxic"] = "cheyne_stokes"
    cycle_s: float = Field(default=60.0, ge=20, le=180, description="Cheyne-Stokes cycle length.")
    pause_s: float = Field(default=12.0, ge=0, le=60, description="Cheyne-Stokes central pause per cycle.")

    @model_validator(mode="after")
    def _pause_fits(self) -> Self:
        if self.pause_s >= self.cycle_s * 0.6:
            raise ValueError(f"pause_s {self.pause_s} must be under 60% of cycle_s {self.cycle_s}")
        return self


class Myoclonus(_Episode):
    """Isolated 50-250 ms jerks of a limb or the head at random times."""

    kind: Literal["myoclonus"]
    jerks_per_min: float = Field(default=8.0, gt=0, le=120)
    jerk_ms: tuple[float, float] = Field(default=(50.0, 250.0), description="Jerk length range, ms.")
    limbs: tuple[Limb, ...] = Field(default=LIMBS, min_length=1)

    @model_validator(mode="after")
    def _jerk_range(self) -> Self:
        _check_range("jerk_ms", self.jerk_ms, 20, 500, "ms")
        return self


class Seizure(_Episode):
    """Clonic seizure: rhythmic jerking at 1-5 Hz for seconds, HR up, post-ictal drowsiness after."""

    kind: Literal["seizure"]
    frequency_hz: float = Field(default=3.0, ge=1, le=5, description="Clonic jerk rate, Hz.")
    limbs: tuple[Limb, ...] = Field(default=("left_arm", "left_leg", "head"), min_length=1)
    hr_rise: float = Field(default=35.0, ge=0, le=100)


class Sepsis(_Episode):
    """HR up, BP down, temperature up, RR up, then new confusion; ramps and stays."""

    kind: Literal["sepsis"]
    hr_rise: float = Field(default=40.0, ge=0, le=100)
    sbp_drop: float = Field(default=35.0, ge=0, le=100)
    temp_rise: float = Field(default=2.0, ge=0, le=4)
    rr_rise: float = Field(default=10.0, ge=0, le=30)
    confusion_at: float = Field(default=0.6, ge=0, le=1, description="Fraction of the ramp when confusion starts.")
    ramp_s: float | None = Field(default=None, gt=0)


class Agitation(_Episode):
    """Large, purposeful, slow movement (reaching, rolling, pulling at lines). Not twitching."""

    kind: Literal["agitation"]
    finding: ClassVar[bool] = False


class Oxygen(_Episode):
    """Supplemental oxygen given for the episode: SpO2 up, NEWS2 scores the oxygen."""

    kind: Literal["oxygen"]
    finding: ClassVar[bool] = False


class WalkThrough(_Episode):
    """A nurse or visitor walks between camera and bed, occluding the patient."""

    kind: Literal["walk_through"]
    duration_s: float = Field(ge=1, le=60)
    direction: Literal["left_to_right", "right_to_left"] = "left_to_right"
    linger: float = Field(default=0.3, ge=0, le=0.9, description="Share of the time spent standing at the bed.")
    finding: ClassVar[bool] = False


class NightMode(_Episode):
    """Lights dimmed: low light, and with ``infrared`` the camera's grayscale IR look."""

    kind: Literal["night_mode"]
    light: float = Field(default=0.35, ge=0.1, le=1.0, description="Light level relative to day.")
    infrared: bool = True
    finding: ClassVar[bool] = False


class BlanketAdjustment(_Episode):
    """A carer's arm tucks or pulls the blanket: big slow motion over the torso and legs."""

    kind: Literal["blanket_adjustment"]
    duration_s: float = Field(ge=2, le=60)
    finding: ClassVar[bool] = False


class CameraShake(_Episode):
    """The camera mount vibrates or is bumped: the whole image moves."""

    kind: Literal["camera_shake"]
    amplitude_px: float = Field(default=2.5, ge=0.2, le=12)
    finding: ClassVar[bool] = False


class Noise(_Episode):
    """Sensor noise and heavy compression artefacts."""

    kind: Literal["noise"]
    sigma: float = Field(default=10.0, ge=0, le=40, description="Gaussian noise, grey levels.")
    jpeg_quality: int | None = Field(default=15, ge=2, le=95, description="Re-encode at this JPEG quality.")
    finding: ClassVar[bool] = False


class HeadTurn(_Episode):
    """The patient turns the head away from the camera; the face leaves view."""

    kind: Literal["head_turn"]
    side: Literal["left", "right"] = "left"
    finding: ClassVar[bool] = False


Episode = Annotated[
    Pain
    | RespiratoryDeterioration
    | Apnea
    | IrregularBreathing
    | Myoclonus
    | Seizure
    | Sepsis
    | Agitation
    | Oxygen
    | WalkThrough
    | NightMode
    | BlanketAdjustment
    | CameraShake
    | Noise
    | HeadTurn,
    Field(discriminator="kind"),
]

# The discriminator values, read off the union so a new episode type needs no second list.
EPISODE_KINDS: Final[tuple[str, ...]] = tuple(
    get_args(member.model_fields["kind"].annotation)[0] for member in get_args(get_args(Episode)[0])
)


class Scenario(_Strict):
    """One patient over time."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    description: str = Field(default="", max_length=2000)
    duration_s: float = Field(gt=0, le=MAX_SCENARIO_S, description="Scenario length, seconds.")
    seed: int | None = Field(default=None, ge=0, description="Patient appearance seed; default from the bed.")
    baseline: Baseline = Field(default_factory=Baseline)
    monitor: Monitor = Field(default_factory=Monitor)
    episodes: tuple[Episode, ...] = ()

    @model_validator(mode="after")
    def _episodes_fit(self) -> Self:
        for index, episode in enumerate(self.episodes):
            if episode.end_s > self.duration_s + 1e-9:
                raise ValueError(
                    f"episodes[{index}] ({episode.kind}) ends at {episode.end_s:g} s, "
                    f"after the scenario's duration_s {self.duration_s:g}"
                )
        return self


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in EPISODE_KINDS and out.endswith("]"):
            continue  # pydantic puts the union member's tag in the path; the index already says which
        else:
            out += f".{part}" if out else str(part)
    return out or "scenario"


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, each naming its field, e.g. ``episodes[2].duration_s: ...``."""
    lines = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            message = f"unknown episode kind {error['input'].get('kind')!r}; one of: {', '.join(EPISODE_KINDS)}"
        elif error["type"] == "union_tag_not_found":
            message = f"an episode needs 'kind', one of: {', '.join(EPISODE_KINDS)}"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{_path(error['loc'])}: {message}")
    return "\n".join(lines)


def parse_scenario(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a decoded YAML/JSON document, or raise :class:`ScenarioError` naming each bad field."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: invalid scenario:\n{describe_errors(exc)}") from None


def load_scenario_file(path: Path) -> Scenario:
    """Read a ``.yaml``/``.yml``/``.json`` scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return parse_scenario(data, source=str(path))


def library_names() -> list[str]:
    """Names of the scenarios shipped with the simulator."""
    folder = resources.files("simulator") / "scenarios"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A library scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml", ".json"} or path.exists():
        return load_scenario_file(path)
    resource = resources.files("simulator") / "scenarios" / f"{name_or_path}.yaml"
    if not resource.is_file():
        names = ", ".join(library_names())
        raise ScenarioError(f"no scenario named {name_or_path!r} (and no such file); library: {names}")
    return parse_scenario(yaml.safe_load(resource.read_text(encoding="utf-8")), source=f"library:{name_or_path}")
