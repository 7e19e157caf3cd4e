"""The production layout under infra/deploy cannot run here (no Docker engine, no cluster), so it
is checked for what can go wrong without one: it parses, every ICU_* variable it sets is a real
setting, every `icu` command it runs parses with the real CLI, probes hit paths the services
serve, scaling ceilings respect the partition count, and no secret value is written in it."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

import alerts
import dashboard
import icu
import inference
import infra
import ingest
import simulator
from icu.cli import build_parser
from icu.settings import SECRETS_DIR_ENV
from infra.observability import HEALTH_PATH, METRICS_PATH, READY_PATH

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
ICU_IMAGE = "icu-watch"
DASHBOARD_HEALTH = "/_stcore/health"  # Streamlit's own; the dashboard runs no metrics server
ENV_VAR = re.compile(r"\bICU_[A-Z0-9_]+\b")
# Variables that hold a secret by their name (a *_FILE path to one, or the secrets folder, do not).
SECRET_NAME = re.compile(r"PASSWORD(?!_FILE)|TOKEN|SECRET(?!S_DIR)")


def _settings_classes() -> set[type[BaseSettings]]:
    for package in (icu, infra, ingest, inference, alerts, dashboard, simulator):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.endswith(("bench", ".app", ".pages", ".seed")) and module.name != "alerts.app":
                continue  # streamlit pages and benchmarks run code on import; none declares settings
            importlib.import_module(module.name)
    found: set[type[BaseSettings]] = set()
    pending = [BaseSettings]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return {cls for cls in found if cls.__module__.split(".")[0] in {"icu", "infra", "ingest", "inference", "alerts",
                                                                         "dashboard", "simulator"}}  # fmt: skip


@pytest.fixture(scope="module")
def settings_fields() -> dict[str, Any]:
    """Every ICU_* variable a settings class reads -> its annotation."""
    fields: dict[str, Any] = {}
    for cls in _settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            fields[f"{prefix}{name}".upper()] = info.annotation
    assert "ICU_KAFKA_SASL_PASSWORD" in fields  # the collection itself works
    assert "ICU_METRICS_PORT" in fields
    return fields


@pytest.fixture(scope="module")
def secret_variables(settings_fields: dict[str, Any]) -> set[str]:
    secret = {name for name, annotation in settings_fields.items() if SecretStr in getattr(annotation, "__args__", ())}
    secret |= {name for name, annotation in settings_fields.items() if annotation is SecretStr}
    assert {"ICU_DATABASE_URL", "ICU_KAFKA_SASL_PASSWORD", "ICU_WHIP_TOKENS", "ICU_DASHBOARD_USERS"} <= secret
    return secret


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in [COMPOSE, *K8S_FILES]:
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path.name}: every document is a mapping"
            docs.append((path, doc))
    return docs


def _k8s() -> list[dict[str, Any]]:
    return [doc for path, doc in _documents() if path != COMPOSE]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def _icu_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in _k8s():
        spec = _pod_spec(doc)
        for container in (spec or {}).get("containers", []):
            if ICU_IMAGE in container["image"]:
                yield doc, container


def _config_map() -> dict[str, str]:
    (config,) = [doc for doc in _k8s() if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "icu-config"]
    return config["data"]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# --- the files parse and hang together ---------------------------------------------------------


def test_every_manifest_parses_and_names_its_kind():
    docs = _documents()
    kinds = {doc["kind"] for path, doc in docs if path != COMPOSE}
    assert {"Namespace", "ConfigMap", "Deployment", "StatefulSet", "Job", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication"} <= kinds  # fmt: skip
    for path, doc in docs:
        if path != COMPOSE:
            assert doc.get("apiVersion"), path.name
            assert doc["metadata"].get("name"), path.name


def test_selectors_match_their_pods():
    workloads = {doc["metadata"]["name"]: doc for doc in _k8s() if doc["kind"] in ("Deployment", "StatefulSet")}
    pod_labels = [doc["spec"]["template"]["metadata"]["labels"] for doc in workloads.values()]
    for doc in workloads.values():
        selector = doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items(), doc["metadata"]["name"]
    for doc in _k8s():
        if doc["kind"] == "Service":
            assert any(doc["spec"]["selector"].items() <= labels.items() for labels in pod_labels), doc["metadata"]
        if doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]
            names = selector.get("matchExpressions", [{}])[0].get("values") or [
                selector["matchLabels"]["app.kubernetes.io/name"]
            ]
            for name in names:
                assert name in workloads, f"PDB {doc['metadata']['name']} selects no workload {name}"


def test_every_icu_workload_has_a_pdb_requests_and_the_shared_config():
    pdb_targets = set()
    for doc in _k8s():
        if doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]
            pdb_targets |= set(selector.get("matchExpressions", [{}])[0].get("values") or [])
            pdb_targets |= {selector.get("matchLabels", {}).get("app.kubernetes.io/name")}
    for doc, container in _icu_containers():
        assert container["resources"]["requests"]["cpu"], container["name"]
        assert {"configMapRef": {"name": "icu-config"}} in container["envFrom"]
        if doc["kind"] != "Job":
            assert doc["metadata"]["name"] in pdb_targets, f"{doc['metadata']['name']} has no PodDisruptionBudget"


# --- env vars and commands ---------------------------------------------------------------------


def test_every_icu_variable_in_the_deployment_is_a_setting(settings_fields):
    for path in [COMPOSE, *K8S_FILES]:
        for doc in yaml.safe_load_all(path.read_text()):
            for text in _strings(doc):
                for name in ENV_VAR.findall(text):
                    assert name in settings_fields or name == SECRETS_DIR_ENV, f"{path.name}: {name} is no setting"


def test_the_config_map_values_pass_settings_validation(settings_fields):
    data = _config_map()
    assert data["ICU_METRICS_PORT"] == "9400"
    from pydantic import TypeAdapter

    for name, value in data.items():
        if name == SECRETS_DIR_ENV or name.endswith("_FILE") or name == "ICU_KAFKA_SSL_CAFILE":
            continue  # paths that exist only inside the pod
        if value:  # an empty value is "unset" (ICU_BEDS: any bed)
            TypeAdapter(settings_fields[name]).validate_strings(value)


def _commands() -> Iterator[tuple[str, list[str]]]:
    for doc, container in _icu_containers():
        yield f"k8s {doc['metadata']['name']}", [str(arg) for arg in container.get("command", []) + container["args"]]
    for name, service in _compose()["services"].items():
        if ICU_IMAGE in service.get("image", ""):
            yield f"compose {name}", [str(arg) for arg in service["command"]]


def test_every_service_command_parses_with_the_real_cli():
    parser = build_parser()
    seen = set()
    for where, argv in _commands():
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `icu {' '.join(argv)}` does not parse")
        assert callable(args.handler), where
        seen.add(tuple(argv[:2]))
    # every service the issue names is deployed
    for needed in [("topics", "create"), ("db", "migrate"), ("infer",), ("alerts",), ("sink",), ("dashboard",),
                   ("ingest", "whip"), ("ingest", "cameras"), ("ingest", "vitals")]:  # fmt: skip
        assert any(argv[: len(needed)] == needed for argv in seen), needed


# --- probes and metrics ------------------------------------------------------------------------


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(match)


def test_probes_point_at_the_observability_endpoints():
    config = _config_map()
    checked = 0
    for doc, container in _icu_containers():
        if doc["kind"] == "Job":
            continue
        if container["args"][0] == "dashboard":
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["path"] == DASHBOARD_HEALTH
            continue
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        metrics_port = int(env.get("ICU_METRICS_PORT") or config["ICU_METRICS_PORT"])
        for probe, path in (("livenessProbe", HEALTH_PATH), ("readinessProbe", READY_PATH)):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{doc['metadata']['name']} {probe}"
            assert _port_number(container, get["port"]) == metrics_port
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == METRICS_PATH
        assert int(annotations["prometheus.io/port"]) == metrics_port
        checked += 1
    assert checked >= 6  # whip, rtsp, vitals, infer, alerts, sink


def test_compose_health_checks_use_the_ready_endpoint():
    services = _compose()["services"]
    for name, service in services.items():
        if ICU_IMAGE not in service.get("image", "") or service.get("restart") == "no":
            continue
        test = " ".join(service["healthcheck"]["test"])
        if service["command"][0] == "dashboard":
            assert DASHBOARD_HEALTH in test
        else:
            port = service.get("environment", {}).get("ICU_METRICS_PORT")
            assert f":{port}{READY_PATH}" in test, name


# --- scaling rules ----------------------------------------------------------------------------


def test_scaling_ceilings_respect_the_partition_count():
    partitions = int(_config_map()["ICU_TOPIC_PARTITIONS"])
    (scaled,) = [doc for doc in _k8s() if doc["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "infer"
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == f"{_config_map()['ICU_TOPIC_PREFIX']}.frames"
    (infer,) = [c for d, c in _icu_containers() if d["metadata"]["name"] == "infer"]
    assert trigger["metadata"]["consumerGroup"] == {e["name"]: e["value"] for e in infer["env"]}["ICU_INFER_GROUP"]
    assert infer["resources"]["limits"]["nvidia.com/gpu"] == 1
    (hpa,) = [doc for doc in _k8s() if doc["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "alerts"
    assert hpa["spec"]["maxReplicas"] <= partitions


# --- secrets ----------------------------------------------------------------------------------


def test_no_secret_value_is_written_in_the_manifests(secret_variables):
    for doc in _k8s():
        assert doc["kind"] != "Secret", "Secrets are created out of band, never committed"
        assert not secret_variables & set(doc.get("data", {})), f"{doc['metadata']['name']} holds a secret"
        spec = _pod_spec(doc)
        for container in (spec or {}).get("containers", []):
            for env in container.get("env", []):
                secretish = env["name"] in secret_variables or SECRET_NAME.search(env["name"])
                assert not (secretish and "value" in env), f"{container['name']}: {env['name']} has a literal value"
    compose = _compose()
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in secret_variables or SECRET_NAME.search(variable):
                pytest.fail(f"compose {name}: {variable}={value!r} is a secret in plain text")
    assert all(set(secret) == {"file"} for secret in compose["secrets"].values())


def test_secret_files_are_named_like_the_settings_they_feed(secret_variables):
    """Mounted secret files are read through ICU_SECRETS_DIR: a file name that is no setting
    would be silently ignored."""
    config = _config_map()
    for doc, container in _icu_containers():
        spec = _pod_spec(doc)
        assert spec is not None
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["secrets"] == config[SECRETS_DIR_ENV]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
        for source in volume["projected"]["sources"]:
            for item in source["secret"]["items"]:
                assert item["path"] in secret_variables, item


def test_the_image_runs_as_a_non_root_user_without_secrets():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users
    assert not users[-1].startswith(("root", "0"))
    assert not re.search(r"^(ENV|ARG)\s+.*(PASSWORD|TOKEN|SECRET|DATABASE_URL)", dockerfile, re.MULTILINE)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for pattern in ("**/*.key", "**/.env", "**/secrets/**"):
        assert pattern in ignore
