"""Settings shared by every service, read from ``ICU_*`` environment variables.

Each service composes the groups it needs into one pydantic-settings class (see
``infra/settings.py`` for the infrastructure commands); the CLI builds that class once with
:func:`load_settings` and passes it down. Library code never reads the environment.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ICU_"
SECRETS_DIR_ENV = "ICU_SECRETS_DIR"
"""A folder of files named like the variables (``ICU_KAFKA_SASL_PASSWORD``, ``ICU_DATABASE_URL``)
whose contents are the values: how a Kubernetes Secret volume or a compose secret reaches a
service without the value ever being in an image, a manifest or the process environment."""


class ConfigError(Exception):
    """Configuration that cannot work; the message names the environment variable."""


def env_name(field: str) -> str:
    """The environment variable behind a settings field, e.g. ``ICU_KAFKA_BOOTSTRAP_SERVERS``."""
    return f"{ENV_PREFIX}{field.upper()}"


class IcuSettings(BaseSettings):
    """Base of every settings group: ``ICU_`` prefix, unknown variables ignored."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level for the service."
    )
    demo: bool = Field(default=False, description="Demo mode: allows placeholder secrets and anonymous access.")


class KafkaSettings(IcuSettings):
    """How to reach the Kafka cluster. Security options are passed through to the clients."""

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", min_length=1, description="Comma-separated host:port list."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the brokers.")
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    kafka_client_id: str = Field(default="icu-watch", min_length=1)
    # Apache Kafka's default group.min.session.timeout.ms is 6 s; the embedded broker holds
    # each JoinGroup for half the timeout, so the minimum keeps consumer start-up fast there.
    kafka_session_timeout_ms: int = Field(default=6000, ge=6000, le=300_000)
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1000, le=300_000)
    kafka_bootstrap_timeout_ms: int = Field(
        default=30_000, ge=1000, le=600_000, description="How long a client waits for the first broker."
    )

    @model_validator(mode="after")
    def _security_complete(self) -> Self:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL"):
            missing = [
                env_name(name)
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"{', '.join(missing)} must be set when ICU_KAFKA_SECURITY_PROTOCOL is {protocol}")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{env_name(name)}: no such file {path}")
        return self

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection and security options in kafka-python's spelling."""
        config: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()],
            "client_id": self.kafka_client_id,
            "security_protocol": self.kafka_security_protocol,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "bootstrap_timeout_ms": self.kafka_bootstrap_timeout_ms,
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = self.kafka_sasl_mechanism
            config["sasl_plain_username"] = self.kafka_sasl_username
            assert self.kafka_sasl_password is not None  # guaranteed by _security_complete
            config["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_check_hostname"] = self.kafka_ssl_check_hostname
            if self.kafka_ssl_cafile:
                config["ssl_cafile"] = str(self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                config["ssl_certfile"] = str(self.kafka_ssl_certfile)
            if self.kafka_ssl_keyfile:
                config["ssl_keyfile"] = str(self.kafka_ssl_keyfile)
            if self.kafka_ssl_password:
                config["ssl_password"] = self.kafka_ssl_password.get_secret_value()
        return config

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for asyncio clients (aiokafka inside Faust), or None without TLS.

        Same trust as :meth:`kafka_client_config`: the CA bundle (else the system's), the client
        certificate for mutual TLS, hostname checking unless switched off."""
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
        )
        context.check_hostname = self.kafka_ssl_check_hostname
        if self.kafka_ssl_certfile:
            password = self.kafka_ssl_password.get_secret_value() if self.kafka_ssl_password else None
            keyfile = str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None
            context.load_cert_chain(str(self.kafka_ssl_certfile), keyfile, password)
        return context


class TopicSettings(IcuSettings):
    """Topic naming and sizing. The prefix lets several deployments or a replay share a cluster."""

    topic_prefix: str = Field(
        default="icu",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,48}$",
        description="Topic names are '<prefix>.<topic>', e.g. icu.vitals.",
    )
    # Every bed-keyed topic gets the same count so a bed's vitals, detections, acks and
    # camera status land on the same partition number (Faust tables need co-partitioning).
    topic_partitions: int = Field(default=8, ge=1, le=1000, description="Partitions per bed-keyed topic.")
    topic_replication_factor: int = Field(default=1, ge=1, le=10)
    topic_frames_retention_ms: int = Field(
        default=3_600_000, ge=60_000, description="How long raw frames are kept (ms)."
    )


BED_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class BedSettings(IcuSettings):
    """The beds this deployment monitors. Edge services refuse data for any other bed."""

    beds: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(),
        description="Comma-separated bed ids, e.g. icu1-01,icu1-02; empty accepts any well-formed bed id.",
    )

    @field_validator("beds", mode="before")
    @classmethod
    def _split_beds(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple | set | frozenset):
            bad = [bed for bed in value if not isinstance(bed, str) or not BED_ID_PATTERN.match(bed)]
            if bad:
                raise ValueError(f"not a bed id: {bad[0]!r} (letters, digits, '.', '_' and '-', at most 64)")
            return frozenset(value)
        return value

    def is_known_bed(self, bed_id: str) -> bool:
        return not self.beds or bed_id in self.beds


LIBPQ_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class DatabaseSettings(IcuSettings):
    """The PostgreSQL (optionally TimescaleDB) database."""

    database_url: SecretStr | None = Field(
        default=None, description="libpq URL, e.g. postgresql://icu@127.0.0.1:5432/icu"
    )
    database_timeseries: Literal["auto", "timescale", "plain"] = Field(
        default="auto",
        description="auto: TimescaleDB when the extension is available, else native partitioning.",
    )
    database_retention_days: int = Field(default=30, ge=1, le=3650, description="Raw time-series retention.")

    @field_validator("database_url", mode="after")
    @classmethod
    def _libpq_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked here so a typo in the TLS options is a start-up error naming the variable, not
        # a connection failure later. The value is never quoted: it may hold the password.
        if value is None:
            return None
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            options = conninfo_to_dict(value.get_secret_value())
        except ProgrammingError:
            raise ValueError("not a libpq connection URL or keyword string") from None
        sslmode = options.get("sslmode")
        if sslmode is not None and sslmode not in LIBPQ_SSLMODES:
            raise ValueError(f"sslmode={sslmode} is not one of {', '.join(LIBPQ_SSLMODES)}")
        for option in ("sslrootcert", "sslcert", "sslkey"):
            path = options.get(option)
            if isinstance(path, str) and path != "system" and not Path(path).is_file():
                raise ValueError(f"{option}: no such file {path}")
        return value

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError(f"{env_name('database_url')} is not set (e.g. postgresql://127.0.0.1:5432/icu)")
        return self.database_url.get_secret_value()


class ObservabilitySettings(IcuSettings):
    """The health, readiness and Prometheus metrics endpoint of a long-running service."""

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz; unset or 0 = off (the deployment manifests set it).",
    )
    metrics_host: str = Field(
        default="127.0.0.1", min_length=1, description="Address the endpoint binds (0.0.0.0 in a container)."
    )
    health_stale_s: float = Field(
        default=30.0, gt=0, le=3600, description="/healthz fails when the service's loop has not ticked this long."
    )


SettingsT = TypeVar("SettingsT", bound=IcuSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build ``cls`` from the environment plus explicit overrides (CLI flags; None = unset).

    Values may also come from files in ``ICU_SECRETS_DIR`` (one per variable, named like it);
    the environment wins over them. Raises :class:`ConfigError` whose message names each
    offending variable.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    secrets_dir = os.environ.get(SECRETS_DIR_ENV)
    if secrets_dir:
        if not Path(secrets_dir).is_dir():
            raise ConfigError(f"{SECRETS_DIR_ENV}: no such folder {secrets_dir}")
        given["_secrets_dir"] = secrets_dir
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = [str(part) for part in error["loc"]]
            message = error["msg"].removeprefix("Value error, ")
            if loc:
                problems.append(f"{env_name(loc[0])}: {message}")
            else:
                problems.append(message)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


KAFKA_CLIENT_LOGGERS = ("kafka", "aiokafka")


class RepeatFilter(logging.Filter):
    """For loggers under ``prefixes``: lets each (logger, message template) through once per
    ``window_s`` and says how many were held back; other records pass untouched."""

    def __init__(self, prefixes: Iterable[str] = KAFKA_CLIENT_LOGGERS, window_s: float = 30.0) -> None:
        super().__init__()
        self.prefixes = tuple(prefixes)
        self.window_s = window_s
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.msg} [and {last[1]} more like this in {now - last[0]:.0f} s]"
        self._last[key] = (now, 0)
        return True


def configure_logging(level: str) -> None:
    """One log format for every service: UTC time, level, logger, message."""
    handler = logging.StreamHandler()
    formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime  # UTC in logs, like every timestamp on the wire
    handler.setFormatter(formatter)
    # A lost broker makes the Kafka clients log every reconnection attempt, a hundred lines in 5 s:
    # each distinct message once per 30 s, with a count of the ones held back.
    handler.addFilter(RepeatFilter(KAFKA_CLIENT_LOGGERS))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # kafka-python and aioice are chatty at INFO about every connection and ICE check; their
    # warnings still show.
    for chatty in ("kafka", "aioice"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))
