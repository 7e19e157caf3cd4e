"""`icu dashboard`: settings of the nurses' Streamlit view."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from dashboard.auth import AuthError, parse_users
from dashboard.core import Thresholds
from icu.settings import DatabaseSettings, KafkaSettings, TopicSettings


class DashboardSettings(KafkaSettings, TopicSettings, DatabaseSettings):
    """`icu dashboard`: where it listens, how often it refreshes, when data counts as stale, who may
    log in. Demo mode (``ICU_DEMO=1``) lets anyone in, recorded as 'demo'."""

    dashboard_host: str = Field(default="127.0.0.1", min_length=1, description="Address Streamlit listens on.")
    dashboard_port: int = Field(default=8501, ge=0, le=65535, description="Streamlit's port; 0 = any free.")
    dashboard_refresh_s: float = Field(default=5.0, ge=1.0, le=300.0, description="Live refresh period, seconds.")
    dashboard_stale_vitals_s: float = Field(
        default=60.0, ge=5.0, le=3600.0, description="HR/RR/SpO2 older than this are shown stale (greyed)."
    )
    dashboard_lost_vitals_s: float = Field(
        default=300.0, ge=10.0, le=86400.0, description="No vitals for this long: the bed's monitor is lost."
    )
    dashboard_stale_camera_s: float = Field(
        default=30.0, ge=5.0, le=3600.0, description="No camera status for this long: the camera is lost."
    )
    dashboard_stale_video_s: float = Field(
        default=30.0, ge=5.0, le=3600.0, description="Video findings older than this are shown stale."
    )
    dashboard_users: SecretStr | None = Field(
        default=None,
        description="Logins as 'name:hash' pairs, comma-separated; hashes from `icu dashboard --hash-password`.",
    )
    # Same variable as `icu alerts`' cap (ICU_ALERT_MAX_SNOOZE_S): the dashboard never offers more.
    alert_max_snooze_s: int = Field(default=1800, ge=60, le=3600, description="Snoozes are capped at this.")

    @field_validator("dashboard_users")
    @classmethod
    def _users_parse(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_users(value.get_secret_value())
            except AuthError as exc:
                raise ValueError(str(exc)) from None
        return value

    def thresholds(self) -> Thresholds:
        return Thresholds(
            stale_vitals_s=self.dashboard_stale_vitals_s,
            lost_vitals_s=self.dashboard_lost_vitals_s,
            stale_camera_s=self.dashboard_stale_camera_s,
            stale_video_s=self.dashboard_stale_video_s,
        )

    def users(self) -> dict[str, str]:
        """Login name -> password hash."""
        return parse_users(self.dashboard_users.get_secret_value()) if self.dashboard_users else {}
