"""Settings of the simulator's live ward (`icu sim ward`)."""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from icu.settings import IcuSettings
from infra.settings import TopicsAdminSettings


def parse_size(value: str) -> tuple[int, int]:
    """``"320x240"`` -> (320, 240); both even and within 64x48 .. 1920x1080."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match:
        raise ValueError(f"size {value!r} is not WIDTHxHEIGHT, e.g. 320x240")
    width, height = int(match.group(1)), int(match.group(2))
    if not (64 <= width <= 1920 and 48 <= height <= 1080):
        raise ValueError(f"size {width}x{height} is outside 64x48 .. 1920x1080")
    if width % 2 or height % 2:
        raise ValueError(f"size {width}x{height}: width and height must be even")
    return width, height


class SimWardSettings(TopicsAdminSettings):
    """`icu sim ward`: simulated beds publishing vitals and camera frames to Kafka."""

    sim_beds: int = Field(default=8, ge=1, le=256, description="Number of simulated beds.")
    sim_speed: float = Field(default=1.0, gt=0, le=1000, description="Simulated seconds per wall-clock second.")
    sim_fps: float = Field(default=10.0, ge=1, le=30, description="Camera frame rate, frames per simulated second.")
    sim_size: str = Field(default="320x240", description="Frame size WIDTHxHEIGHT.")
    sim_seed: int = Field(default=0, ge=0, description="Seed: the same seed gives the same patients and courses.")
    sim_jpeg_quality: int = Field(default=80, ge=10, le=95, description="JPEG quality of published frames.")
    sim_bed_prefix: str = Field(default="sim", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")

    @field_validator("sim_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @property
    def frame_size(self) -> tuple[int, int]:
        return parse_size(self.sim_size)


class SimCameraSettings(IcuSettings):
    """`icu sim camera`: one simulated WebRTC camera publishing to a WHIP endpoint."""

    sim_whip_token: SecretStr | None = Field(
        default=None, description="Bearer token for the WHIP endpoint (an environment variable, never a flag)."
    )
