"""Settings of the infrastructure commands (`icu up`, `icu topics`, `icu db`)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field

from icu.settings import DatabaseSettings, KafkaSettings, TopicSettings


def default_state_dir() -> Path:
    """ICU_STATE_DIR when set (so every service's local state lands where `icu up` keeps its own),
    else the platform's user state folder."""
    configured = os.environ.get("ICU_STATE_DIR")
    return Path(configured).expanduser() if configured else platformdirs.user_state_path("icu-watch")


class TopicsAdminSettings(KafkaSettings, TopicSettings):
    """`icu topics`: where the cluster is and which topics this deployment uses."""


class DatabaseAdminSettings(DatabaseSettings):
    """`icu db`: migrations and maintenance."""


class UpSettings(TopicSettings, DatabaseSettings):
    """`icu up`: the embedded broker and database for development and demos."""

    broker_port: int = Field(
        default=9092, ge=0, le=65535, description="Embedded broker port on 127.0.0.1; 0 = any free."
    )
    postgres_port: int = Field(
        default=5433, ge=0, le=65535, description="Embedded PostgreSQL port on 127.0.0.1; 0 = any free."
    )
    state_dir: Path = Field(
        default_factory=default_state_dir, description="Where the embedded database keeps its data."
    )
    maintenance_interval_s: float = Field(default=600.0, ge=5.0, description="Partition maintenance period.")
