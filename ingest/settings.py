"""Settings of the camera ingest service (`icu ingest whip|rtsp|file|cameras`), ``ICU_`` env vars."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from icu.settings import BED_ID_PATTERN, BedSettings, ObservabilitySettings, env_name
from infra.settings import TopicsAdminSettings
from ingest.camera import FeedConfig


class IngestSettings(TopicsAdminSettings, BedSettings, ObservabilitySettings):
    """Camera ingest: frame shaping, health reporting, RTSP reconnection and the WHIP endpoint."""

    ingest_fps: float = Field(default=10.0, gt=0, le=60, description="Frames/s published per camera (sampled down).")
    ingest_width: int = Field(default=320, ge=16, le=4096, description="Published frame width, pixels.")
    ingest_height: int = Field(default=240, ge=16, le=4096, description="Published frame height, pixels.")
    ingest_jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality 10-100.")
    ingest_status_interval_s: float = Field(
        default=5.0, ge=0.2, le=300, description="How often each camera's health goes to camera-status."
    )
    ingest_stall_after_s: float = Field(default=5.0, gt=0, description="No frame for this long: camera stalled.")
    ingest_lost_after_s: float = Field(default=15.0, gt=0, description="No frame for this long: camera lost.")
    ingest_max_in_flight: int = Field(
        default=4, ge=1, le=1000, description="Frames per camera sent but not yet acknowledged by Kafka."
    )
    ingest_linger_ms: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="How long the producer gathers frames into one request: fewer, larger requests cost "
        "far less CPU per frame, at this much added latency.",
    )
    ingest_delivery_timeout_ms: int = Field(
        default=10_000, ge=1000, le=120_000, description="A frame Kafka has not taken by then is dropped."
    )

    rtsp_transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTSP media transport.")
    rtsp_open_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Time allowed to open a stream.")
    rtsp_backoff_initial_s: float = Field(default=0.5, gt=0, le=60, description="First reconnect delay.")
    rtsp_backoff_max_s: float = Field(default=30.0, gt=0, le=600, description="Longest reconnect delay.")

    whip_host: str = Field(default="127.0.0.1", description="WHIP endpoint bind address.")
    whip_port: int = Field(default=8080, ge=0, le=65535, description="WHIP endpoint port; 0 = any free.")
    whip_tokens: SecretStr | None = Field(
        default=None,
        description="Camera bearer tokens as 'bed:token' pairs, comma-separated; bed '*' matches any bed.",
    )
    whip_ice_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated IP addresses to offer as ICE host candidates (e.g. the camera VLAN "
        "interface); empty = every non-loopback interface.",
    )
    whip_cors_origin: str = Field(default="*", description="Access-Control-Allow-Origin for browser publishers.")
    whip_max_sessions: int = Field(default=64, ge=1, le=10_000, description="Concurrent WHIP sessions allowed.")

    @field_validator("whip_ice_addresses", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple):
            for address in value:
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(f"not an IP address: {address!r}") from None
            return tuple(value)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.ingest_lost_after_s <= self.ingest_stall_after_s:
            raise ValueError(
                f"{env_name('ingest_lost_after_s')} ({self.ingest_lost_after_s}) must be longer than "
                f"{env_name('ingest_stall_after_s')} ({self.ingest_stall_after_s})"
            )
        self.token_table()  # a malformed token list is a start-up error, not a 401 storm later
        return self

    def feed_config(self) -> FeedConfig:
        return FeedConfig(
            fps=self.ingest_fps,
            width=self.ingest_width,
            height=self.ingest_height,
            jpeg_quality=self.ingest_jpeg_quality,
            stall_after_s=self.ingest_stall_after_s,
            lost_after_s=self.ingest_lost_after_s,
        )

    def token_table(self) -> dict[str, bytes]:
        """Bed (or '*') to token bytes. Errors never quote a token."""
        if self.whip_tokens is None:
            return {}
        table: dict[str, bytes] = {}
        for index, pair in enumerate(self.whip_tokens.get_secret_value().split(","), start=1):
            if not pair.strip():
                continue
            bed, sep, token = pair.strip().partition(":")
            if not sep or not token:
                raise ValueError(f"{env_name('whip_tokens')}: entry {index} is not 'bed:token'")
            if bed != "*" and not BED_ID_PATTERN.match(bed):
                # Not quoted: with 'token:bed' written the wrong way round, the "bed" is the secret.
                raise ValueError(f"{env_name('whip_tokens')}: entry {index} does not start with a valid bed id")
            if len(token) < 16:
                raise ValueError(f"{env_name('whip_tokens')}: entry {index} ({bed}): tokens need 16+ characters")
            table[bed] = token.encode()
        return table

    def token_allows(self, bed_id: str, presented: str | None) -> bool:
        """Constant-time check of a bearer token for ``bed_id``."""
        if presented is None:
            return False
        given = presented.encode()
        table = self.token_table()
        allowed = False
        for bed in (bed_id, "*"):
            expected = table.get(bed)
            # Compare against every candidate so timing does not reveal which entry exists.
            if expected is not None and hmac.compare_digest(given, expected):
                allowed = True
        return allowed
