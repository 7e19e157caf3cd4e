"""Settings of the vitals ingest (`icu ingest vitals`), read from ``ICU_*`` variables.

Both listeners bind to loopback by default. Anonymous JSON posting is allowed only there or
in demo mode: anywhere else ``ICU_VITALS_HTTP_TOKEN`` must be set, since anyone who can post
vitals can make a patient look well (or ill) on the ward's screens.
"""

from __future__ import annotations

import ipaddress
from typing import Self

from pydantic import Field, SecretStr, model_validator

from icu.settings import BedSettings, ObservabilitySettings
from infra.settings import TopicsAdminSettings

MIB = 1024 * 1024
MIN_TOKEN_LENGTH = 16
PLACEHOLDER_TOKENS = frozenset({"changeme", "change-me", "secret", "token", "password", "test", "demo"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class VitalsIngestSettings(TopicsAdminSettings, BedSettings, ObservabilitySettings):
    """`icu ingest vitals`: HL7 v2 over MLLP and JSON over HTTP into the vitals topic.

    Kafka, topic and bed settings come from the shared groups (ICU_KAFKA_*, ICU_TOPIC_*,
    ICU_BEDS). Port 0 means any free port (the bound port is logged).
    """

    vitals_mllp_enabled: bool = Field(default=True, description="Run the HL7 v2 (MLLP) listener.")
    vitals_mllp_host: str = Field(default="127.0.0.1", min_length=1, description="Address the MLLP listener binds.")
    vitals_mllp_port: int = Field(default=2575, ge=0, le=65535, description="MLLP port; 0 = any free port.")
    vitals_mllp_max_connections: int = Field(
        default=64, ge=1, le=10_000, description="Concurrent MLLP connections; more are closed at once."
    )
    vitals_mllp_idle_timeout_s: float = Field(
        default=3600.0, ge=0, description="Close an MLLP connection silent this long (seconds); 0 = never."
    )
    vitals_http_enabled: bool = Field(default=True, description="Run the JSON (HTTP) listener.")
    vitals_http_host: str = Field(default="127.0.0.1", min_length=1, description="Address the HTTP listener binds.")
    vitals_http_port: int = Field(default=8082, ge=0, le=65535, description="HTTP port; 0 = any free port.")
    vitals_http_token: SecretStr | None = Field(
        default=None,
        description="Bearer token POST /vitals requires; unset = anonymous (loopback or demo mode only).",
    )
    vitals_max_future_skew_s: float = Field(
        default=300.0, ge=0, le=86_400, description="Reject readings timed more than this many seconds ahead."
    )
    vitals_max_message_bytes: int = Field(
        default=MIB, ge=1024, le=16 * MIB, description="Largest HL7 message or JSON body accepted, bytes."
    )
    vitals_ack_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="How long to wait for Kafka to acknowledge before answering AR / 503 (seconds).",
    )

    @model_validator(mode="after")
    def _listeners_and_token(self) -> Self:
        if not (self.vitals_mllp_enabled or self.vitals_http_enabled):
            raise ValueError("ICU_VITALS_MLLP_ENABLED and ICU_VITALS_HTTP_ENABLED are both off: nothing to run")
        token = self.vitals_http_token.get_secret_value() if self.vitals_http_token else None
        placeholder = token is not None and (len(token) < MIN_TOKEN_LENGTH or token.lower() in PLACEHOLDER_TOKENS)
        if placeholder and not self.demo:
            raise ValueError(
                f"ICU_VITALS_HTTP_TOKEN looks like a placeholder; use at least {MIN_TOKEN_LENGTH} random "
                "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if self.vitals_http_enabled and token is None and not self.demo and not is_loopback(self.vitals_http_host):
            raise ValueError(
                f"ICU_VITALS_HTTP_HOST is {self.vitals_http_host} (not loopback) but ICU_VITALS_HTTP_TOKEN is unset; "
                "set a token, bind to 127.0.0.1, or run in demo mode (ICU_DEMO=1)"
            )
        return self
