"""Message contracts for every icu-watch topic.

This is the one module every stage imports to name a topic, build a message, or turn bytes
on the wire back into a typed value. Each JSON message carries ``schema_version``; every
timestamp is timezone-aware and normalised to UTC; every bed-scoped topic is keyed by
``bed_id`` (UTF-8) so that a bed's messages stay in order on one partition.

Topics (logical names; the cluster name is ``{ICU_TOPIC_PREFIX}.{name}``):

========== ================================ =============================================
topic      value                            key
========== ================================ =============================================
frames     JPEG bytes, metadata in headers  bed_id
vitals     JSON :class:`Vitals`             bed_id
detections JSON :class:`Detection`          bed_id
alerts     JSON :class:`Alert`              bed_id (upsert on alert_id + version)
alert-acks JSON :class:`AlertAck`           bed_id
camera-status JSON :class:`CameraStatus`    bed_id
dead-letter JSON :class:`DeadLetter`        the original record's key
========== ================================ =============================================

Decoding never raises anything but :class:`ContractError`, whose ``reason`` is what goes
on the dead-letter topic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1
"""The contract version this build writes and reads. A bump means a breaking change."""

MAX_FRAME_BYTES: Final = 900_000
"""Largest JPEG accepted on ``frames``: below Apache Kafka's default 1 MiB message limit
with room for headers (the embedded broker enforces no limit, real Kafka does)."""

MAX_DEAD_LETTER_VALUE_BYTES: Final = 600_000
"""Largest original value kept inside a dead letter (base64 makes it ~800 kB, under 1 MiB);
bigger ones keep only their size and SHA-256."""

INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1

MAX_SNOOZE_S: Final = 3600
"""Hard cap on an alert snooze in the contract; services may cap lower in their settings."""


class ContractError(ValueError):
    """Bytes on a topic that are not a valid message of that topic's contract."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Topic(StrEnum):
    """Logical topic names. The cluster-level name adds the deployment's prefix."""

    FRAMES = "frames"
    VITALS = "vitals"
    DETECTIONS = "detections"
    EVIDENCE = "evidence"
    ALERTS = "alerts"
    ALERTS_FHIR = "alerts-fhir"  # FHIR R4 resources, not an icu-watch contract (see docs/fhir.md)
    ALERT_TICKS = "alert-ticks"  # the alerts app's own clock ticks per bed (internal)
    ALERT_ACKS = "alert-acks"
    CAMERA_STATUS = "camera-status"
    DEAD_LETTER = "dead-letter"

    def full_name(self, prefix: str) -> str:
        """Cluster topic name, e.g. ``icu.vitals`` for prefix ``icu``."""
        return f"{prefix}.{self.value}"


# --- field types -------------------------------------------------------------------------

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    # Epoch numbers in the wrong unit (ms read as s) land centuries away: refuse them
    # instead of storing a reading in 1970 or 55000 AD.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp {value.isoformat()} cannot be expressed in UTC") from None
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError(f"timestamp {utc.isoformat()} is outside 2000-2100; wrong unit or clock?")
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware timestamp, stored in UTC. Naive timestamps are rejected."""

BedId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
"""Bed identifier, e.g. ``icu1-bed07``: letters, digits, '.', '_' and '-', at most 64."""

CameraId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _measure(lo: float, hi: float, unit: str) -> Any:
    return Field(default=None, ge=lo, le=hi, allow_inf_nan=False, description=unit)


# --- base classes ------------------------------------------------------------------------


class Contract(BaseModel):
    """Base of every JSON message: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )
    topic: ClassVar[Topic]

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Contract version; consumers reject versions they do not know."
    )

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, value: object) -> object:
        if type(value) is not int or value != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {value!r}; this build reads {SCHEMA_VERSION}")
        return value

    @model_validator(mode="after")
    def _wire_rules(self, info: ValidationInfo) -> Self:
        context = info.context
        if not context:
            return self
        # Python callers may omit schema_version (the default is the current version); bytes
        # from the wire must say which contract they follow. Checked here, after validation,
        # from the fields the input set: a "before" model validator would make pydantic build
        # the whole JSON document as Python objects first (a third of decoding a detection).
        if context.get("wire") and "schema_version" not in self.model_fields_set:
            raise ValueError("schema_version is missing")
        # PostgreSQL cannot store U+0000 in text or jsonb; refuse it here, at the edge,
        # rather than let one message wedge the database sink.
        if context.get("nul_free"):
            return self  # decode() saw no \u0000 in the bytes: no string here can hold one
        for name, value in self:
            if _has_nul(value):
                raise ValueError(f"{name} contains a NUL character")
        return self


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class BedMessage(Contract):
    """A message about one bed; ``bed_id`` is also the Kafka key."""

    bed_id: BedId

    def key(self) -> bytes:
        return self.bed_id.encode()


# --- vitals ------------------------------------------------------------------------------


class Consciousness(StrEnum):
    """ACVPU, as NEWS2 scores it: C is new confusion."""

    ALERT = "A"
    NEW_CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class Vitals(BedMessage):
    """One set of vital signs measured at ``ts``. Absent measurements are null, never 0."""

    topic: ClassVar[Topic] = Topic.VITALS

    ts: UtcDatetime = Field(description="Measurement time (UTC).")
    source: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")] = Field(
        description="Where the reading came from, e.g. 'hl7', 'json', 'sim'."
    )
    patient_id: ShortText | None = None
    hr: float | None = _measure(0, 300, "Heart rate, beats/min.")
    rr: float | None = _measure(0, 100, "Respiration rate, breaths/min.")
    spo2: float | None = _measure(0, 100, "Peripheral oxygen saturation, %.")
    sbp: float | None = _measure(0, 300, "Systolic blood pressure, mmHg.")
    dbp: float | None = _measure(0, 300, "Diastolic blood pressure, mmHg.")
    map: float | None = _measure(0, 300, "Mean arterial pressure, mmHg.")
    temp_c: float | None = _measure(25, 45, "Body temperature, degrees Celsius.")
    on_oxygen: bool | None = Field(default=None, description="Supplemental oxygen in use.")
    consciousness: Consciousness | None = None
    spo2_scale: Literal[1, 2] = Field(
        default=1, description="NEWS2 SpO2 scale; 2 only when prescribed (hypercapnic failure)."
    )

    MEASUREMENTS: ClassVar[tuple[str, ...]] = (
        "hr",
        "rr",
        "spo2",
        "sbp",
        "dbp",
        "map",
        "temp_c",
        "on_oxygen",
        "consciousness",
    )

    @model_validator(mode="after")
    def _plausible(self) -> Self:
        if all(getattr(self, name) is None for name in self.MEASUREMENTS):
            raise ValueError("a vitals message needs at least one measurement")
        if self.sbp is not None and self.dbp is not None and self.dbp > self.sbp:
            raise ValueError(f"diastolic {self.dbp} mmHg is above systolic {self.sbp} mmHg")
        return self


# --- detections --------------------------------------------------------------------------


class BaselineFindings(BaseModel):
    """The classical (non-learned) second opinion computed on the same frames."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resp_rate: float | None = _measure(0, 120, "Respiration rate from chest motion, breaths/min.")
    resp_quality: Probability | None = Field(default=None, description="Signal-quality index 0-1.")
    motion_energy: float = Field(ge=0, allow_inf_nan=False, description="Mean absolute frame difference.")
    twitch_burst: bool = Field(description="A short motion-energy burst was seen.")


class Finding(StrEnum):
    """The video findings the model reports per frame."""

    GRIMACE = "grimace"
    TWITCH = "twitch"
    APNEA = "apnea"


# Where a producer decided nothing (Detection.findings is null), a probability this high counts.
FINDING_THRESHOLD: Final = 0.5


def finding_present(finding: str, findings: Sequence[str] | None, probability: float) -> bool:
    """Whether ``finding`` counts as present in a detection: listed in its decided ``findings``
    when it has them, else its ``probability`` at or above :data:`FINDING_THRESHOLD`. The one
    rule the worker's consumers (alert rules, dashboard) read detections by."""
    if findings is not None:
        return finding in findings
    return probability >= FINDING_THRESHOLD


class Detection(BedMessage):
    """Frame-level model outputs for the frame captured at ``ts``."""

    topic: ClassVar[Topic] = Topic.DETECTIONS

    camera_id: CameraId
    ts: UtcDatetime = Field(description="Capture time of the frame these outputs describe (UTC).")
    seq: int = Field(ge=0, le=INT64_MAX, description="The frame's sequence number from the camera.")
    window_end: UtcDatetime | None = Field(
        default=None,
        description="Capture time of the newest frame the model had seen (UTC): later than ts by the model's "
        "lookahead. Detection latency is inferred_at - window_end.",
    )
    model: ShortText = Field(description="Model name, e.g. 'temporal'.")
    model_version: ShortText
    grimace: Probability
    twitch: Probability = Field(description="Highest twitch probability of the frames since the previous detection.")
    apnea: Probability
    resp_rate: float | None = _measure(0, 120, "Estimated respiration rate, breaths/min.")
    resp_quality: Probability | None = None
    baseline: BaselineFindings | None = None
    degraded: bool = Field(
        default=False, description="Frames were missing in the window and filled in: treat with caution."
    )
    findings: list[Finding] | None = Field(
        default=None,
        max_length=len(Finding),
        description="The findings the model's decision rules hold present at ts (twitch: at any frame since the "
        "previous detection), each rule fitted for the model's weights (hysteresis over a few frames' mean "
        "probability). Null from a producer without decision rules: then a probability of 0.5 or more counts as "
        "present.",
    )
    inferred_at: UtcDatetime = Field(description="When the worker produced this (UTC).")

    @field_validator("findings")
    @classmethod
    def _each_finding_once(cls, value: list[Finding] | None) -> list[Finding] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"a finding is listed twice: {[f.value for f in value]}")
        return value

    def has(self, finding: Finding) -> bool:
        """Whether ``finding`` counts as present (:func:`finding_present`)."""
        probability: float = getattr(self, finding.value)
        return finding_present(finding, self.findings, probability)


MAX_EVIDENCE_JPEG = 512 * 1024


class Evidence(BedMessage):
    """Why the model reported a finding: published when a finding starts (decided present after
    being absent, see ``Detection.findings``), for alerts and the dashboard to show. The keyframe
    is the frame the finding was first decided for, with the model's spatial attention
    (saliency) laid over it: for grimace read by a grimace detector, where on the frame the
    detector saw it."""

    topic: ClassVar[Topic] = Topic.EVIDENCE
    # The keyframe travels as base64 in JSON, raw bytes in Python.
    model_config = ConfigDict(**{**Contract.model_config, "ser_json_bytes": "base64", "val_json_bytes": "base64"})

    camera_id: CameraId
    finding: Finding
    ts: UtcDatetime = Field(description="Capture time of the keyframe: the first frame reported with the finding.")
    seq: int = Field(ge=0, le=INT64_MAX, description="The keyframe's sequence number from the camera.")
    window_start: UtcDatetime = Field(description="Capture time of the first frame the model looked at for it.")
    window_end: UtcDatetime = Field(description="Capture time of the last frame the model looked at for it.")
    probability: Probability
    model: ShortText
    model_version: ShortText
    saliency_rows: int = Field(ge=1, le=256)
    saliency_cols: int = Field(ge=1, le=256)
    saliency: list[Probability] = Field(
        max_length=65536,
        description="Attention over the model's token grid, row-major, summing to about 1 (grimace from a grimace "
        "detector: each grid cell's share of the frame's grimace score).",
    )
    keyframe_jpeg: bytes = Field(
        max_length=MAX_EVIDENCE_JPEG,
        description="The keyframe with the saliency overlay, JPEG (URL-safe base64, RFC 4648 section 5, in JSON).",
    )
    inferred_at: UtcDatetime = Field(description="When the worker produced this (UTC).")

    @model_validator(mode="after")
    def _grid_matches(self) -> Self:
        if len(self.saliency) != self.saliency_rows * self.saliency_cols:
            raise ValueError(
                f"saliency has {len(self.saliency)} values for a {self.saliency_rows}x{self.saliency_cols} grid"
            )
        if self.window_start > self.ts or self.ts > self.window_end:
            raise ValueError("ts must lie within window_start..window_end")
        return self


# --- alerts ------------------------------------------------------------------------------


class AlertPriority(StrEnum):
    """IEC 60601-1-8 alarm priorities plus information signals."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class AlertKind(StrEnum):
    """Technical alarms (camera lost, stale vitals) are kept apart from physiological ones."""

    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


EvidenceValue = float | int | str | bool | None


class Alert(BedMessage):
    """One version of an alert. Consumers upsert on (alert_id, version)."""

    topic: ClassVar[Topic] = Topic.ALERTS

    alert_id: UUID
    version: int = Field(ge=1, le=INT32_MAX, description="Increases by one with every change of the alert.")
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,47}$")] = Field(
        description="Rule code, e.g. NEWS2_HIGH, APNEA_VIDEO."
    )
    kind: AlertKind
    priority: AlertPriority
    state: AlertState
    raised_at: UtcDatetime
    updated_at: UtcDatetime = Field(description="Time of this version (UTC).")
    explanation: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    evidence: dict[Annotated[str, StringConstraints(max_length=64)], EvidenceValue] = Field(
        default_factory=dict, description="The values that triggered the rule."
    )
    news2: int | None = Field(default=None, ge=0, le=20)
    escalation_level: int = Field(default=0, ge=0, le=100)
    acknowledged_by: ShortText | None = None
    acknowledged_at: UtcDatetime | None = None
    snoozed_until: UtcDatetime | None = None
    resolved_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.updated_at < self.raised_at:
            raise ValueError("updated_at is before raised_at")
        if self.state is AlertState.RESOLVED and self.resolved_at is None:
            raise ValueError("a resolved alert needs resolved_at")
        if self.state is AlertState.ACKNOWLEDGED and self.acknowledged_by is None:
            raise ValueError("an acknowledged alert needs acknowledged_by")
        return self


class AckAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    SNOOZE = "snooze"


class AlertAck(BedMessage):
    """A clinician's acknowledgement or snooze of one alert (kept forever in the audit trail)."""

    topic: ClassVar[Topic] = Topic.ALERT_ACKS

    ack_id: UUID
    alert_id: UUID
    user: ShortText = Field(description="Who acknowledged, as the dashboard's login knows them.")
    ts: UtcDatetime
    action: AckAction
    snooze_s: int | None = Field(default=None, ge=1, le=MAX_SNOOZE_S, description="Snooze length, seconds.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None

    @model_validator(mode="after")
    def _snooze_rules(self) -> Self:
        if self.action is AckAction.SNOOZE and (self.snooze_s is None or self.reason is None):
            raise ValueError("a snooze needs snooze_s and a reason")
        if self.action is AckAction.ACKNOWLEDGE and self.snooze_s is not None:
            raise ValueError("snooze_s is only allowed with action 'snooze'")
        return self


# --- camera status -----------------------------------------------------------------------


class CameraState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"
    LOST = "lost"
    STOPPED = "stopped"


class CameraStatus(BedMessage):
    """Periodic health of one camera's ingest path."""

    topic: ClassVar[Topic] = Topic.CAMERA_STATUS

    camera_id: CameraId
    ts: UtcDatetime
    state: CameraState
    source: Literal["whip", "rtsp", "file"]
    fps_in: float = Field(ge=0, allow_inf_nan=False, description="Frames/s decoded from the camera.")
    fps_out: float = Field(ge=0, allow_inf_nan=False, description="Frames/s published to Kafka.")
    frames_dropped: int = Field(ge=0, le=INT64_MAX, description="Cumulative frames dropped (latest-frame-wins).")
    reconnects: int = Field(ge=0, le=INT32_MAX, description="Cumulative reconnects.")
    last_frame_age_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    detail: Annotated[str, StringConstraints(max_length=500)] = ""


# --- dead letters ------------------------------------------------------------------------


class DeadLetterHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    name: str
    value: bytes | None = Field(description="Header bytes, base64 in JSON.")


class DeadLetter(Contract):
    """A record a consumer could not process, kept whole with the reason it was rejected."""

    topic: ClassVar[Topic] = Topic.DEAD_LETTER

    ts: UtcDatetime = Field(description="When it was dead-lettered (UTC).")
    stage: ShortText = Field(description="The consumer that rejected it, e.g. 'db-sink'.")
    source_topic: str
    partition: int = Field(ge=0, le=INT32_MAX)
    offset: int = Field(ge=0, le=INT64_MAX)
    key: bytes | None = Field(description="Original key, base64 in JSON.")
    value: bytes | None = Field(
        description=f"Original value, base64 in JSON; null when absent or over {MAX_DEAD_LETTER_VALUE_BYTES} bytes."
    )
    value_size: int | None = Field(default=None, ge=0, description="Size of the original value in bytes.")
    value_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the value.")
    headers: list[DeadLetterHeader] = Field(default_factory=list)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    error_type: ShortText = Field(description="'contract' for malformed input, else the error's class.")

    @classmethod
    def of(
        cls,
        *,
        ts: datetime,
        stage: str,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]],
        reason: str,
        error_type: str,
        value_size: int | None = None,
    ) -> DeadLetter:
        """A dead letter keeping ``value`` whole, or only its size and SHA-256 when it is too big
        to fit under Kafka's 1 MiB limit once base64-encoded (so one huge record cannot wedge a
        worker). ``value_size`` is for a value that was never read (an oversized request)."""
        oversized = value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES
        return cls(
            ts=ts,
            stage=stage,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key,
            value=None if oversized else value,
            value_size=len(value) if value is not None else value_size,
            value_sha256=hashlib.sha256(value).hexdigest() if value is not None else None,
            headers=[DeadLetterHeader(name=name, value=data) for name, data in headers],
            reason=reason[:2000],
            error_type=error_type[:200],
        )


# --- frames ------------------------------------------------------------------------------


class FrameHeader(BaseModel):
    """Metadata of one JPEG frame, carried in Kafka headers (the value is the JPEG itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    bed_id: BedId
    camera_id: CameraId
    capture_ts: UtcDatetime = Field(description="Capture time from the stream's clock where available.")
    seq: int = Field(ge=0, le=INT64_MAX, description="Per-camera frame sequence number.")
    width: int = Field(ge=1, le=8192)
    height: int = Field(ge=1, le=8192)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, value: object) -> object:
        if value not in (SCHEMA_VERSION, str(SCHEMA_VERSION)):
            raise ValueError(f"unsupported schema_version {value!r}; this build reads {SCHEMA_VERSION}")
        return SCHEMA_VERSION


FRAME_HEADER_NAMES: Final[Mapping[str, str]] = {
    "schema_version": "icu-schema-version",
    "bed_id": "icu-bed",
    "camera_id": "icu-camera",
    "capture_ts": "icu-capture-ts",
    "seq": "icu-seq",
    "width": "icu-width",
    "height": "icu-height",
}
CONTENT_TYPE_HEADER: Final = "content-type"
JPEG_CONTENT_TYPE: Final = b"image/jpeg"

KafkaHeaders = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame: validated header plus JPEG bytes."""

    header: FrameHeader
    jpeg: bytes

    topic: ClassVar[Topic] = Topic.FRAMES

    def key(self) -> bytes:
        return self.header.bed_id.encode()

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        h = self.header
        values = {
            "schema_version": str(h.schema_version),
            "bed_id": h.bed_id,
            "camera_id": h.camera_id,
            "capture_ts": h.capture_ts.isoformat(),
            "seq": str(h.seq),
            "width": str(h.width),
            "height": str(h.height),
        }
        headers = [(FRAME_HEADER_NAMES[field], value.encode()) for field, value in values.items()]
        headers.append((CONTENT_TYPE_HEADER, JPEG_CONTENT_TYPE))
        return headers


def check_jpeg(data: bytes) -> None:
    """Cheap structural check: SOI marker first, EOI marker last, size within limits."""
    if len(data) > MAX_FRAME_BYTES:
        raise ContractError(f"frame is {len(data)} bytes; the limit is {MAX_FRAME_BYTES}")
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        raise ContractError("frame payload is not a JPEG (no SOI marker)")
    if data[-2:] != b"\xff\xd9":
        raise ContractError("JPEG is truncated (no EOI marker)")


def make_frame(header: FrameHeader, jpeg: bytes) -> Frame:
    """Build a frame, refusing payloads that are not a whole JPEG."""
    check_jpeg(jpeg)
    return Frame(header=header, jpeg=jpeg)


def decode_frame(value: bytes | None, headers: KafkaHeaders | None) -> Frame:
    """Rebuild a :class:`Frame` from a ``frames`` record, or raise :class:`ContractError`."""
    if value is None:
        raise ContractError("frame record has no value")
    by_name: dict[str, bytes | None] = dict(headers or ())
    content_type = by_name.get(CONTENT_TYPE_HEADER)
    if content_type is not None and content_type != JPEG_CONTENT_TYPE:
        raise ContractError(f"unsupported content-type {content_type!r}; expected image/jpeg")
    raw: dict[str, str] = {}
    for field, header in FRAME_HEADER_NAMES.items():
        header_value = by_name.get(header)
        if header_value is None:
            raise ContractError(f"frame header {header!r} is missing")
        try:
            raw[field] = header_value.decode()
        except UnicodeDecodeError:
            raise ContractError(f"frame header {header!r} is not UTF-8") from None
    try:
        header_model = FrameHeader.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(f"bad frame headers: {_summarise(exc)}") from None
    return make_frame(header_model, value)


# --- JSON encode / decode ----------------------------------------------------------------

JSON_MODELS: Final[Mapping[Topic, type[Contract]]] = {
    Topic.VITALS: Vitals,
    Topic.DETECTIONS: Detection,
    Topic.EVIDENCE: Evidence,
    Topic.ALERTS: Alert,
    Topic.ALERT_ACKS: AlertAck,
    Topic.CAMERA_STATUS: CameraStatus,
    Topic.DEAD_LETTER: DeadLetter,
}

ContractT = TypeVar("ContractT", bound=Contract)


# Topics whose values are not icu-watch contracts.
NON_CONTRACT_TOPICS: Final = frozenset({Topic.ALERTS_FHIR, Topic.ALERT_TICKS})


def kafka_key(message: Contract | Frame) -> bytes | None:
    """The record key a message is published with: the bed, or for dead letters the original key."""
    if isinstance(message, DeadLetter):
        return message.key
    if isinstance(message, BedMessage | Frame):
        return message.key()
    return None


def encode(message: Contract) -> bytes:
    """Serialise a JSON message to UTF-8 bytes (timestamps as ISO 8601 with 'Z')."""
    return message.model_dump_json().encode()


_WIRE: Final = {"wire": True}
_WIRE_NUL_FREE: Final = {"wire": True, "nul_free": True}


def decode(model: type[ContractT], data: bytes | None) -> ContractT:
    """Parse ``data`` as ``model`` or raise :class:`ContractError` with a one-line reason."""
    if data is None:
        raise ContractError("record has no value (tombstone)")
    try:
        # JSON carries U+0000 only as the escape \u0000 (a raw NUL byte is a parse error), so
        # bytes without it skip the per-field NUL walk: a fifth of decoding a vitals message.
        return model.model_validate_json(data, context=_WIRE if b"\\u0000" in data else _WIRE_NUL_FREE)
    except ValidationError as exc:
        raise ContractError(f"invalid {model.topic.value} message: {_summarise(exc)}") from None


def decode_record(topic: Topic, value: bytes | None, headers: KafkaHeaders | None = None) -> Contract | Frame:
    """Decode a record of any icu-watch topic according to that topic's contract."""
    if topic is Topic.FRAMES:
        return decode_frame(value, headers)
    if topic not in JSON_MODELS:
        raise ContractError(f"{topic.value} carries no icu-watch contract")
    return decode(JSON_MODELS[topic], value)


def _summarise(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "message"
        message = error["msg"]
        if error["type"] == "json_invalid":
            message = f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        parts.append(f"{where}: {message}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) per JSON topic, plus one for the frame headers.

    File names are ``{topic}.v{SCHEMA_VERSION}.schema.json``; the frames entry describes the
    Kafka headers as a flat object of strings, since the value is a JPEG.
    """
    schemas: dict[str, dict[str, Any]] = {}
    for topic, model in JSON_MODELS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://icu-watch.invalid/schemas/{topic.value}.v{SCHEMA_VERSION}.schema.json"
        schema["x-kafka-key"] = "original record's key" if topic is Topic.DEAD_LETTER else "bed_id (UTF-8)"
        schemas[f"{topic.value}.v{SCHEMA_VERSION}.schema.json"] = schema
    header_props = {
        FRAME_HEADER_NAMES[name]: {"type": "string", "description": (field.description or name)}
        for name, field in FrameHeader.model_fields.items()
    }
    header_props[CONTENT_TYPE_HEADER] = {"const": JPEG_CONTENT_TYPE.decode()}
    schemas[f"frames-headers.v{SCHEMA_VERSION}.schema.json"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://icu-watch.invalid/schemas/frames-headers.v{SCHEMA_VERSION}.schema.json",
        "title": "frames record headers (value: one JPEG image)",
        "type": "object",
        "properties": header_props,
        "required": list(FRAME_HEADER_NAMES.values()),
        "x-kafka-key": "bed_id (UTF-8)",
    }
    return schemas


def dump_schema(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
