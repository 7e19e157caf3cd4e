"""The manifest of a recording: what it holds, from which versions, over which time and beds.

A recording is a folder::

    manifest.json                 this model
    vitals.jsonl, detections.jsonl, evidence.jsonl, alerts.jsonl, alert-acks.jsonl,
    camera-status.jsonl           one JSON Lines file per topic, records in arrival order
    video/<camera>.mp4            the camera's frames: the original JPEGs as MJPEG packets
    video/<camera>.frames.jsonl   one line per frame: seq, capture time, bed, size, Kafka position
    truth.jsonl                   ground truth or annotations (optional)

Every file is standard (JSON, JSON Lines, MP4) so a recording can be read without icu-watch.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icu.contracts import SCHEMA_VERSION, UtcDatetime
from research import ResearchError

FORMAT: Final = "icu-watch-recording"
FORMAT_VERSION: Final = 1
"""Bumped when a recording written by this build can no longer be read by an older one."""
MANIFEST_NAME: Final = "manifest.json"
TRUTH_NAME: Final = "truth.jsonl"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicFile(_Model):
    """One JSON Lines file of a topic's records."""

    topic: str
    path: str = Field(description="Relative to the recording folder.")
    records: int = Field(ge=0)


class CameraFile(_Model):
    """One camera's video and its per-frame timestamp sidecar."""

    camera_id: str
    bed_id: str
    video: str = Field(description="MP4 holding the frames' JPEGs unchanged (or blurred) as MJPEG packets.")
    timestamps: str = Field(description="JSON Lines sidecar: one line per frame, in the video's order.")
    frames: int = Field(ge=0)
    width: int = Field(ge=0)
    height: int = Field(ge=0)


class ModelVersion(_Model):
    model: str
    model_version: str


class BedSpan(_Model):
    """First and last input record of a bed (vitals, detections, frames, camera status)."""

    bed_id: str
    start: UtcDatetime
    end: UtcDatetime


class ReplayInfo(_Model):
    """Set on a recording captured from a replay: how to map its times back to the source's."""

    source_id: str = Field(description="The replayed recording's id.")
    topic_prefix: str
    speed: str = Field(description="'1', '10', ... or 'max'.")
    shift_s: float = Field(description="Replayed event time = original event time + shift_s.")
    started_at: UtcDatetime
    published: dict[str, int] = Field(default_factory=dict, description="Records republished per topic.")
    publish_s: float = Field(ge=0, description="Wall time the republishing took, seconds.")


class Manifest(_Model):
    format: Literal["icu-watch-recording"] = FORMAT
    format_version: int = FORMAT_VERSION
    contract_version: int = SCHEMA_VERSION
    icu_watch_version: str
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: UtcDatetime
    source: dict[str, Any] = Field(description="Where the records came from, e.g. {'kind': 'kafka', 'topic_prefix'}.")
    start: UtcDatetime | None = Field(description="Earliest event time in the recording.")
    end: UtcDatetime | None = Field(description="Latest event time in the recording.")
    beds: list[BedSpan]
    topics: list[TopicFile]
    cameras: list[CameraFile] = Field(default_factory=list)
    models: list[ModelVersion] = Field(default_factory=list, description="Models behind the recorded detections.")
    truth: str | None = Field(default=None, description="Ground truth / annotations file, if any.")
    faces_blurred: bool = Field(default=False, description="Frames and evidence keyframes had faces blurred.")
    replay: ReplayInfo | None = None

    def bed_ids(self) -> list[str]:
        return [bed.bed_id for bed in self.beds]

    def duration_s(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return (self.end - self.start).total_seconds()


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ResearchError(f"{folder} is not a recording (no {MANIFEST_NAME})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ResearchError(f"{path}: not valid JSON ({exc})") from None
    if data.get("format") != FORMAT:
        raise ResearchError(f"{path}: not an icu-watch recording (format {data.get('format')!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ResearchError(
            f"{path}: recording format version {data.get('format_version')!r}; this build reads {FORMAT_VERSION}"
        )
    if data.get("contract_version") != SCHEMA_VERSION:
        raise ResearchError(
            f"{path}: recorded with contract version {data.get('contract_version')!r}; this build reads "
            f"{SCHEMA_VERSION}"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ResearchError(f"{path}: {exc.errors(include_url=False)[0]['msg']}") from None


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def utc_iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
