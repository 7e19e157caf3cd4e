"""alerts.fhir: every alert version as a FHIR R4 DetectedIssue (validated with fhir.resources R4B)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.detectedissue import DetectedIssue
from fhir.resources.R4B.observation import Observation

import alerts.fhir as fhir
from alerts.fhir import alert_to_fhir, encode_fhir, first_sentence
from icu.contracts import Alert, AlertKind, AlertPriority, AlertState
from tests import samples

DOC = Path(__file__).resolve().parents[2] / "docs" / "fhir.md"
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def make_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = samples.alert().model_dump()
    fields.update(changes)
    return Alert.model_validate(fields)


def news2_alert() -> Alert:
    return make_alert(
        code="NEWS2",
        explanation="NEWS2 9, high risk (7 or more): emergency response. Points: respiration_rate 3, spo2 2.",
        evidence={
            "rr": 26.0,
            "spo2": 91.0,
            "hr": 118,
            "sbp": 96.0,
            "temp_c": 38.7,
            "consciousness": "C",
            "on_oxygen": False,
            "news2": 9,
        },
        news2=9,
    )


def apnea_alert() -> Alert:
    return make_alert(
        code="APNEA_VIDEO",
        explanation="No breathing movement seen on video for 24 s.",
        evidence={"apnea_s": 24.0, "video_rr": None},
        news2=None,
    )


def example_alert() -> Alert:
    """The alert whose resource docs/fhir.md shows."""
    return make_alert(
        version=4,
        code="NEWS2",
        state=AlertState.ACKNOWLEDGED,
        raised_at=samples.T0,
        updated_at=samples.T0 + timedelta(minutes=3),
        explanation="NEWS2 8, high risk (7 or more): emergency response. Points: respiration_rate 3, spo2 2, "
        "consciousness 3.",
        evidence={"rr": 26.0, "spo2": 91.0, "consciousness": "C", "news2": 8, "news2_complete": True},
        news2=8,
        escalation_level=1,
        acknowledged_by="nurse.a",
        acknowledged_at=samples.T0 + timedelta(minutes=3),
    )


def extension(resource: dict[str, Any], name: str) -> Any:
    url = f"https://icu-watch.invalid/fhir/StructureDefinition/{name}"
    values = [
        value
        for ext in resource.get("extension", [])
        if ext["url"] == url
        for key, value in ext.items()
        if key != "url"
    ]
    assert len(values) <= 1
    return values[0] if values else None


def contained(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {obs["id"]: obs for obs in resource.get("contained", [])}


def codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def validate(resource: dict[str, Any]) -> DetectedIssue:
    model = DetectedIssue.model_validate(resource)
    for obs in resource.get("contained", []):
        Observation.model_validate(obs)
    # Every contained resource is referenced (dom-3) and every reference resolves.
    refs = [d["reference"] for e in resource.get("evidence", []) for d in e["detail"]]
    assert sorted(refs) == sorted(f"#{obs_id}" for obs_id in contained(resource))
    assert all(FHIR_ID.fullmatch(obs_id) for obs_id in contained(resource))
    return model


# --- states, priorities, versions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (AlertState.OPEN, "preliminary"),
        (AlertState.ESCALATED, "preliminary"),
        (AlertState.ACKNOWLEDGED, "final"),
        (AlertState.RESOLVED, "final"),
    ],
)
def test_every_state_maps_to_its_status_and_validates(state: AlertState, status: str) -> None:
    alert = samples.alert(2, state)
    resource = alert_to_fhir(alert)
    validate(resource)
    assert DetectedIssue.model_validate_json(encode_fhir(alert)).status == status
    assert resource["resourceType"] == "DetectedIssue"
    assert resource["status"] == status
    assert extension(resource, "alert-state") == state.value
    actions = [m["action"]["coding"][0]["code"] for m in resource.get("mitigation", [])]
    assert ("resolved" in actions) is (state is AlertState.RESOLVED)
    assert ("acknowledged" in actions) is (state is AlertState.ACKNOWLEDGED)


def test_resolved_alert_is_distinguishable_from_acknowledged() -> None:
    resolved = alert_to_fhir(samples.alert(3, AlertState.RESOLVED))
    assert resolved["status"] == "final"
    assert extension(resolved, "alert-state") == "resolved"
    (mitigation,) = resolved["mitigation"]
    assert mitigation["action"]["coding"] == [
        {"system": fhir.ALERT_ACTION_SYSTEM, "code": "resolved", "display": "Resolved"}
    ]
    assert mitigation["date"] == "2026-11-25T03:05:00Z"


def test_acknowledgement_is_a_mitigation_kept_after_resolution() -> None:
    acked = alert_to_fhir(samples.alert(2, AlertState.ACKNOWLEDGED))
    (mitigation,) = acked["mitigation"]
    assert mitigation["action"]["text"] == "Acknowledged by nurse.a"
    assert mitigation["action"]["coding"][0]["code"] == "acknowledged"
    assert mitigation["date"] == "2026-11-25T03:00:30Z"
    assert mitigation["author"] == {"display": "nurse.a"}

    later = make_alert(
        version=3,
        state=AlertState.RESOLVED,
        updated_at=samples.T0 + timedelta(minutes=5),
        acknowledged_by="nurse.a",
        acknowledged_at=samples.T0 + timedelta(seconds=30),
        resolved_at=samples.T0 + timedelta(minutes=5),
    )
    resource = alert_to_fhir(later)
    validate(resource)
    assert [m["action"]["coding"][0]["code"] for m in resource["mitigation"]] == ["acknowledged", "resolved"]


def test_escalation_and_snooze_survive() -> None:
    alert = make_alert(
        state=AlertState.ESCALATED,
        escalation_level=2,
        snoozed_until=samples.T0 + timedelta(minutes=10),
    )
    resource = alert_to_fhir(alert)
    validate(resource)
    assert resource["status"] == "preliminary"
    assert extension(resource, "escalation-level") == 2
    assert extension(resource, "snoozed-until") == "2026-11-25T03:10:00Z"
    (snooze,) = resource["mitigation"]
    assert snooze["action"]["coding"][0]["code"] == "snoozed"
    assert snooze["action"]["text"] == "Snoozed until 2026-11-25T03:10:00Z"


@pytest.mark.parametrize(
    ("priority", "severity"),
    [
        (AlertPriority.HIGH, "high"),
        (AlertPriority.MEDIUM, "moderate"),
        (AlertPriority.LOW, "low"),
        (AlertPriority.INFO, "low"),
    ],
)
@pytest.mark.parametrize("kind", list(AlertKind))
def test_priority_maps_to_severity_and_iec_priority_and_kind_survive(
    priority: AlertPriority, severity: str, kind: AlertKind
) -> None:
    resource = alert_to_fhir(make_alert(priority=priority, kind=kind))
    validate(resource)
    assert resource["severity"] == severity
    assert extension(resource, "alert-priority") == priority.value
    assert extension(resource, "alert-kind") == kind.value


@pytest.mark.parametrize("version", [1, 2, 17, 2**31 - 1])
def test_version_is_meta_version_id_and_id_is_the_alert(version: int) -> None:
    alert = make_alert(version=version, updated_at=samples.T0 + timedelta(seconds=5))
    resource = alert_to_fhir(alert)
    validate(resource)
    assert resource["id"] == str(samples.ALERT_ID)
    assert resource["identifier"] == [{"system": "urn:icu-watch:alert", "value": str(samples.ALERT_ID)}]
    assert resource["meta"] == {"versionId": str(version), "lastUpdated": "2026-11-25T03:00:05Z"}


def test_header_fields() -> None:
    resource = alert_to_fhir(news2_alert())
    assert resource["code"] == {
        "coding": [{"system": fhir.ALERT_CODE_SYSTEM, "code": "NEWS2", "display": "NEWS2 threshold reached"}],
        "text": "NEWS2 9, high risk (7 or more): emergency response.",
    }
    assert resource["detail"] == news2_alert().explanation
    assert resource["identifiedDateTime"] == "2026-11-25T03:00:00Z"
    assert resource["patient"] == {
        "type": "Patient",
        "identifier": {"system": "urn:icu-watch:bed", "value": "icu1-bed01"},
        "display": "Patient in bed icu1-bed01",
    }
    assert resource["author"] == {"type": "Device", "display": "icu-watch alerts"}
    assert extension(resource, "news2-score") == 9
    unknown_code = alert_to_fhir(make_alert(code="SOMETHING_NEW"))
    assert unknown_code["code"]["coding"][0]["display"] == "SOMETHING_NEW"


# --- evidence -----------------------------------------------------------------------------


def test_news2_evidence_becomes_coded_observations() -> None:
    alert = news2_alert()
    resource = alert_to_fhir(alert)
    validate(resource)
    obs = contained(resource)
    loinc, snomed, ucum = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
    expected_quantities = {
        "obs-rr": ((loinc, "9279-1"), "/min", 26.0),
        "obs-spo2": ((loinc, "59408-5"), "%", 91.0),
        "obs-hr": ((loinc, "8867-4"), "/min", 118),
        "obs-sbp": ((loinc, "8480-6"), "mm[Hg]", 96.0),
        "obs-temp-c": ((loinc, "8310-5"), "Cel", 38.7),
        "obs-news2": ((snomed, "1104051000000101"), "{score}", 9),
    }
    for obs_id, (coding, unit, value) in expected_quantities.items():
        observation = obs[obs_id]
        assert observation["status"] == "final"
        assert coding in codes(observation["code"])
        quantity = observation["valueQuantity"]
        assert (quantity["system"], quantity["code"], quantity["value"]) == (ucum, unit, value)
        assert observation["effectiveDateTime"] == "2026-11-25T03:00:01Z"
        assert observation["subject"] == resource["patient"]
    assert (loinc, "2708-6") in codes(obs["obs-spo2"]["code"])
    for vital in ("obs-rr", "obs-spo2", "obs-hr", "obs-sbp", "obs-temp-c"):
        assert codes(obs[vital]["category"][0]) == {(fhir.HL7_CATEGORY_SYSTEM, "vital-signs")}
    assert codes(obs["obs-news2"]["category"][0]) == {(fhir.HL7_CATEGORY_SYSTEM, "survey")}

    consciousness = obs["obs-consciousness"]
    assert (snomed, "1104441000000107") in codes(consciousness["code"])
    assert codes(consciousness["valueCodeableConcept"]) == {(fhir.ACVPU_SYSTEM, "C")}
    assert consciousness["valueCodeableConcept"]["text"] == "New confusion"

    assert obs["obs-on-oxygen"]["valueBoolean"] is False
    assert (fhir.EVIDENCE_SYSTEM, "on_oxygen") in codes(obs["obs-on-oxygen"]["code"])
    # Every evidence key stays recoverable from a local coding.
    for key in alert.evidence:
        assert any((fhir.EVIDENCE_SYSTEM, key) in codes(o["code"]) for o in obs.values())


def test_video_apnea_evidence() -> None:
    resource = alert_to_fhir(apnea_alert())
    validate(resource)
    (observation,) = resource["contained"]  # video_rr is None: skipped
    assert observation["id"] == "obs-apnea-s"
    assert codes(observation["code"]) == {(fhir.VIDEO_FINDING_SYSTEM, "apnea_s")}
    assert codes(observation["category"][0]) == {(fhir.LOCAL_CATEGORY_SYSTEM, "video-findings")}
    assert observation["valueQuantity"] == {
        "value": 24.0,
        "unit": "s",
        "system": "http://unitsofmeasure.org",
        "code": "s",
    }
    assert observation["method"] == {"text": "Video (bedside camera)"}
    assert resource["evidence"] == [{"detail": [{"reference": "#obs-apnea-s", "display": "Apnea duration (video)"}]}]
    assert "news2-score" not in json.dumps(resource)


@pytest.mark.parametrize(
    ("key", "value", "unit"),
    [("video_rr", 31.5, "/min"), ("grimace_burden", 0.42, "1"), ("twitch_count", 6, "{count}")],
)
def test_other_video_findings(key: str, value: float, unit: str) -> None:
    resource = alert_to_fhir(make_alert(code="PAIN_SUSTAINED", evidence={key: value}))
    validate(resource)
    (observation,) = resource["contained"]
    assert codes(observation["code"]) == {(fhir.VIDEO_FINDING_SYSTEM, key)}
    assert (observation["valueQuantity"]["code"], observation["valueQuantity"]["value"]) == (unit, value)


def test_rr_from_video_is_marked_in_method() -> None:
    resource = alert_to_fhir(make_alert(evidence={"rr": 24.0, "rr_source": "video", "news2": 5}))
    validate(resource)
    obs = contained(resource)
    assert obs["obs-rr"]["method"] == {"text": "Video (bedside camera)"}
    assert "obs-rr-source" not in obs


def test_technical_evidence() -> None:
    resource = alert_to_fhir(
        make_alert(
            code="CAMERA_LOST",
            kind=AlertKind.TECHNICAL,
            priority=AlertPriority.LOW,
            evidence={"camera_state": "lost", "vitals_age_s": 420},
        )
    )
    validate(resource)
    obs = contained(resource)
    assert obs["obs-camera-state"]["valueString"] == "lost"
    assert obs["obs-vitals-age-s"]["valueQuantity"]["code"] == "s"
    assert codes(obs["obs-camera-state"]["category"][0]) == {(fhir.LOCAL_CATEGORY_SYSTEM, "technical")}


def test_unknown_and_odd_evidence_does_not_crash() -> None:
    evidence: dict[str, Any] = {
        "mystery": 300.0,
        "twitch_seconds": 7,
        "vital_rise": "heart rate +25%",
        "news2_complete": False,
        "huge": 2**40,
        "": 1,
        "two  spaces": 2.5,
        "temp-c": 1.0,
        "temp_c": float("nan"),
        "hr": float("inf"),
        "rr": "twenty",
        "sbp": True,
        "consciousness": "Z",
        "ünïcode ключ": "значение",
        "empty": "",
        "x" * 64: 3,
        "gone": None,
    }
    alert = make_alert(evidence=evidence)
    resource = alert_to_fhir(alert)
    validate(resource)
    obs = contained(resource)
    assert len(obs) == len(evidence) - 2  # None and "" are skipped
    assert obs["obs-mystery"]["valueQuantity"] == {"value": 300.0}
    assert obs["obs-mystery"]["code"] == {
        "coding": [{"system": fhir.EVIDENCE_SYSTEM, "code": "mystery"}],
        "text": "mystery",
    }
    assert obs["obs-twitch-seconds"]["valueQuantity"]["code"] == "s"
    assert obs["obs-news2-complete"]["valueBoolean"] is False
    assert obs["obs-huge"]["valueQuantity"] == {"value": 2**40}
    assert obs["obs-value"]["valueInteger"] == 1
    # ids follow the evidence order: "temp-c" came first, "temp_c" gets the suffix
    assert obs["obs-temp-c"]["code"]["text"] == "temp-c"
    assert obs["obs-temp-c-2"]["code"]["text"] == "Body temperature"
    assert obs["obs-temp-c-2"]["dataAbsentReason"]["coding"][0]["code"] == "not-a-number"
    assert obs["obs-hr"]["dataAbsentReason"]["coding"][0]["code"] == "positive-infinity"
    assert obs["obs-rr"]["valueString"] == "twenty"
    assert obs["obs-sbp"]["valueBoolean"] is True
    assert obs["obs-consciousness"]["valueString"] == "Z"
    assert obs["obs-vital-rise"]["valueString"] == "heart rate +25%"
    assert obs["obs-two-spaces"]["code"] == {"text": "two  spaces"}  # not a valid FHIR code: text only
    json.loads(encode_fhir(alert))


def test_no_evidence_means_no_contained_resources() -> None:
    resource = alert_to_fhir(make_alert(evidence={}, news2=None))
    validate(resource)
    assert "contained" not in resource
    assert "evidence" not in resource
    assert "mitigation" not in resource


# --- encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alert",
    [
        news2_alert(),
        apnea_alert(),
        example_alert(),
        samples.alert(),
        samples.alert(2, AlertState.ACKNOWLEDGED),
        samples.alert(3, AlertState.RESOLVED),
    ],
)
def test_encode_round_trips(alert: Alert) -> None:
    data = encode_fhir(alert)
    assert isinstance(data, bytes)
    assert json.loads(data.decode("utf-8")) == alert_to_fhir(alert)
    model = DetectedIssue.model_validate_json(data)
    assert model.id == str(alert.alert_id)
    assert model.meta is not None
    assert model.meta.versionId == str(alert.version)


def test_encode_is_utf8_not_ascii_escaped() -> None:
    alert = make_alert(explanation="Temperature 38.7 °C ≥ threshold.", evidence={"temp_c": 38.7})
    data = encode_fhir(alert)
    assert "38.7 °C ≥".encode() in data
    assert b"\\u" not in data


def test_invalid_resource_raises_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fhir, "_instant", lambda value: "not a date")
    with pytest.raises(ValueError, match="not a valid FHIR DetectedIssue"):
        alert_to_fhir(samples.alert())


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("NEWS2 7 (RR 26, SpO2 91, HR 118)", "NEWS2 7 (RR 26, SpO2 91, HR 118)"),
        ("Temperature 38.5 C. Points: 1.", "Temperature 38.5 C."),
        ("Camera lost! No video.", "Camera lost!"),
        ("  padded.  ", "padded."),
    ],
)
def test_first_sentence(text: str, first: str) -> None:
    assert first_sentence(text) == first


def test_docs_example_is_generated_from_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Example", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    assert json.loads(block.group(1)) == alert_to_fhir(example_alert())
