"""The cameras file of `icu ingest cameras`: many cameras in one process.

.. code-block:: yaml

    whip: true            # also serve the WHIP endpoint (ICU_WHIP_HOST / ICU_WHIP_PORT)
    cameras:
      - bed: icu1-01
        rtsp: rtsp://user:password@10.1.2.3:554/stream1
      - bed: icu1-02
        camera_id: icu1-02-ceiling   # default: <bed>-cam
        file: recordings/bed02.mp4   # relative to this file
        speed: 1                     # or "max"
        loop: true
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from icu.settings import BED_ID_PATTERN
from ingest import IngestError

BedField = Annotated[str, StringConstraints(pattern=BED_ID_PATTERN.pattern)]


class CameraConfigError(IngestError):
    """A cameras file that cannot work; the message names the entry and field."""


class CameraEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bed: BedField
    camera_id: BedField | None = None
    rtsp: str | None = None
    file: Path | None = None
    speed: float | Literal["max"] = 1.0
    loop: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.rtsp is None) == (self.file is None):
            raise ValueError("give exactly one of 'rtsp' or 'file'")
        if self.rtsp is not None and not self.rtsp.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError("not an RTSP URL (expected rtsp://[user:password@]host[:port]/path)")
        if isinstance(self.speed, float) and self.speed <= 0:
            raise ValueError("speed must be positive or 'max'")
        return self

    @property
    def pace(self) -> float | None:
        return None if self.speed == "max" else float(self.speed)


class CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    whip: bool = False
    cameras: list[CameraEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for entry in self.cameras:
            camera_id = entry.camera_id or f"{entry.bed}-cam"
            if camera_id in seen:
                raise ValueError(f"camera {camera_id} appears twice")
            seen.add(camera_id)
        if not self.cameras and not self.whip:
            raise ValueError("no cameras and no WHIP endpoint: nothing to run")
        return self


def describe(exc: ValidationError, *, whole: str, limit: int = 5) -> str:
    """Validation errors as 'cameras[1].rtsp: reason; ...' (``whole`` when the error is not in a field)."""
    problems = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error["loc"]).replace(".[", "[")
        problems.append(f"{where or whole}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def camera_entry(**fields: Any) -> CameraEntry:
    """One camera from command-line fields (None = not given), or :class:`CameraConfigError`."""
    try:
        return CameraEntry(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise CameraConfigError(describe(exc, whole="camera", limit=1)) from None


def load_cameras_file(path: Path) -> CamerasFile:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CameraConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        # Not str(exc): PyYAML quotes the offending line, which may hold an RTSP password.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CameraConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or 'syntax error'}"
        ) from None
    try:
        parsed = CamerasFile.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise CameraConfigError(f"{path}: {describe(exc, whole='file')}") from None
    base = path.parent
    cameras = [
        entry.model_copy(update={"file": base / entry.file})
        if entry.file is not None and not entry.file.is_absolute()
        else entry
        for entry in parsed.cameras
    ]
    return parsed.model_copy(update={"cameras": cameras})
