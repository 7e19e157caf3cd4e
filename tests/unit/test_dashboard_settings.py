"""DashboardSettings from ICU_* variables, and the `icu dashboard` command's checks before it
starts Streamlit."""

from __future__ import annotations

import pytest

from dashboard.auth import hash_password
from dashboard.settings import DashboardSettings
from icu.cli import build_parser, main
from icu.settings import ConfigError, load_settings


def test_settings_from_environment(monkeypatch):
    encoded = hash_password("pw", iterations=100_000)
    monkeypatch.setenv("ICU_DASHBOARD_USERS", f"nurse.a:{encoded}")
    monkeypatch.setenv("ICU_DASHBOARD_STALE_VITALS_S", "45")
    monkeypatch.setenv("ICU_ALERT_MAX_SNOOZE_S", "900")
    settings = load_settings(DashboardSettings)
    assert settings.users() == {"nurse.a": encoded}
    assert settings.thresholds().stale_vitals_s == 45
    assert settings.alert_max_snooze_s == 900


def test_malformed_users_name_the_variable(monkeypatch):
    monkeypatch.setenv("ICU_DASHBOARD_USERS", "nurse.a:secret")
    with pytest.raises(ConfigError, match=r"ICU_DASHBOARD_USERS: .*entry 1 \(nurse\.a\)"):
        load_settings(DashboardSettings)


def test_dashboard_refuses_to_start_without_a_login_outside_demo(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    for name in ("ICU_DEMO", "ICU_DASHBOARD_USERS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["dashboard", "--database-url", "postgresql://127.0.0.1:1/none"]) == 2
    assert "no login configured" in capsys.readouterr().err


def test_bench_dashboard_defaults_are_the_issue_target():
    args = build_parser().parse_args(["bench", "dashboard"])
    assert (args.beds, args.hours) == (32, 24.0)
