"""Every alert version as a FHIR R4 ``DetectedIssue``, for the ``alerts-fhir`` topic.

Pure functions: an :class:`~icu.contracts.Alert` in, a JSON-ready dict (or its UTF-8 JSON) out.
No Kafka, no clock, no settings. The publisher sends :func:`encode_fhir` as the value, keyed by
``bed_id`` like every bed-scoped topic.

The mapping (status, severity, code systems, extensions) is documented in ``docs/fhir.md``; the
tables below are its source of truth. Models are checked with ``fhir.resources.R4B`` (FHIR
4.3.0), whose ``DetectedIssue`` and ``Observation`` are wire-compatible with R4 (4.0.1) for
every element used here.

In short: one ``DetectedIssue`` per alert version, ``id`` = alert id, ``meta.versionId`` =
version. The alert's trigger values become contained ``Observation`` resources (LOINC or SNOMED
CT where a standard code exists, UCUM units) referenced from ``evidence[].detail``. IEC 60601-1-8
priority, alert kind, state, escalation level, snooze and NEWS2 score are kept in extensions;
acknowledgement, snooze and resolution are ``mitigation`` entries.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from fhir.resources.R4B.detectedissue import DetectedIssue
from pydantic import ValidationError

from icu.contracts import Alert, AlertPriority, AlertState, EvidenceValue

# --- systems and URLs ----------------------------------------------------------------------

LOCAL: Final = "https://icu-watch.invalid/fhir"
ALERT_CODE_SYSTEM: Final = f"{LOCAL}/CodeSystem/alert-code"
EVIDENCE_SYSTEM: Final = f"{LOCAL}/CodeSystem/alert-evidence"
VIDEO_FINDING_SYSTEM: Final = f"{LOCAL}/CodeSystem/video-finding"
ACVPU_SYSTEM: Final = f"{LOCAL}/CodeSystem/acvpu"
ALERT_ACTION_SYSTEM: Final = f"{LOCAL}/CodeSystem/alert-action"
LOCAL_CATEGORY_SYSTEM: Final = f"{LOCAL}/CodeSystem/observation-category"
EXTENSION_BASE: Final = f"{LOCAL}/StructureDefinition"
EXT_PRIORITY: Final = f"{EXTENSION_BASE}/alert-priority"
EXT_KIND: Final = f"{EXTENSION_BASE}/alert-kind"
EXT_STATE: Final = f"{EXTENSION_BASE}/alert-state"
EXT_ESCALATION: Final = f"{EXTENSION_BASE}/escalation-level"
EXT_SNOOZED_UNTIL: Final = f"{EXTENSION_BASE}/snoozed-until"
EXT_NEWS2: Final = f"{EXTENSION_BASE}/news2-score"

ALERT_IDENTIFIER_SYSTEM: Final = "urn:icu-watch:alert"
BED_IDENTIFIER_SYSTEM: Final = "urn:icu-watch:bed"

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"
HL7_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

CONTENT_TYPE: Final = "application/fhir+json; fhirVersion=4.0"
"""Media type of an ``alerts-fhir`` value (FHIR R4 JSON, UTF-8)."""

AUTHOR_DISPLAY: Final = "icu-watch alerts"

# --- status and severity -------------------------------------------------------------------

STATUS: Final[Mapping[AlertState, str]] = {
    # Raised by a rule, not yet seen by a clinician: an unverified, interim finding.
    AlertState.OPEN: "preliminary",
    # Still unacknowledged, now at a higher escalation level: still unverified.
    AlertState.ESCALATED: "preliminary",
    # A clinician has seen it: the finding is verified.
    AlertState.ACKNOWLEDGED: "final",
    # The condition no longer holds; the finding itself stays valid (not "cancelled", which means
    # never completed, nor "entered-in-error"). Resolution is the "resolved" mitigation and the
    # alert-state extension.
    AlertState.RESOLVED: "final",
}
"""``DetectedIssue.status`` (ObservationStatus, required binding) per alert state."""

SEVERITY: Final[Mapping[AlertPriority, str]] = {
    AlertPriority.HIGH: "high",
    AlertPriority.MEDIUM: "moderate",
    AlertPriority.LOW: "low",
    AlertPriority.INFO: "low",  # the alert-priority extension keeps "info" apart from "low"
}
"""``DetectedIssue.severity`` (high | moderate | low) per IEC 60601-1-8 priority."""

ALERT_CODE_DISPLAY: Final[Mapping[str, str]] = {
    "NEWS2": "NEWS2 threshold reached",
    "NEWS2_HIGH": "NEWS2 high risk",
    "DETERIORATION_TREND": "Deterioration trend",
    "APNEA_VIDEO": "Apnea seen on video",
    "SEIZURE_VIDEO": "Possible seizure seen on video",
    "JERK_CLUSTER": "Cluster of jerks seen on video",
    "PAIN_SUSTAINED": "Sustained grimacing: pain assessment due",
    "CAMERA_LOST": "Camera lost",
    "VITALS_STALE": "Vital signs stale",
    "VIDEO_QUALITY_LOW": "Video quality low",
}
"""Displays of the known rule codes; an unknown code is its own display."""

# --- evidence ------------------------------------------------------------------------------

Coding = tuple[str, str, str]
"""(system, code, display)"""

_VITAL_SIGNS: Final[Coding] = (HL7_CATEGORY_SYSTEM, "vital-signs", "Vital Signs")
_SURVEY: Final[Coding] = (HL7_CATEGORY_SYSTEM, "survey", "Survey")
_VIDEO: Final[Coding] = (LOCAL_CATEGORY_SYSTEM, "video-findings", "Video findings")
_TECHNICAL: Final[Coding] = (LOCAL_CATEGORY_SYSTEM, "technical", "Technical")
_VIDEO_METHOD: Final = "Video (bedside camera)"


@dataclass(frozen=True, slots=True)
class EvidenceCode:
    """How one known evidence key becomes an ``Observation``."""

    label: str
    standard: tuple[Coding, ...] = ()
    local_system: str = EVIDENCE_SYSTEM
    category: Coding | None = None
    ucum: str | None = None
    unit: str | None = None
    method: str | None = None


EVIDENCE_CODES: Final[Mapping[str, EvidenceCode]] = {
    "rr": EvidenceCode(
        "Respiratory rate",
        ((LOINC, "9279-1", "Respiratory rate"),),
        category=_VITAL_SIGNS,
        ucum="/min",
        unit="breaths/min",
    ),
    "hr": EvidenceCode(
        "Heart rate", ((LOINC, "8867-4", "Heart rate"),), category=_VITAL_SIGNS, ucum="/min", unit="beats/min"
    ),
    "spo2": EvidenceCode(
        "Oxygen saturation (pulse oximetry)",
        (
            (LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            (LOINC, "2708-6", "Oxygen saturation in Arterial blood"),
        ),
        category=_VITAL_SIGNS,
        ucum="%",
        unit="%",
    ),
    "sbp": EvidenceCode(
        "Systolic blood pressure",
        ((LOINC, "8480-6", "Systolic blood pressure"),),
        category=_VITAL_SIGNS,
        ucum="mm[Hg]",
        unit="mmHg",
    ),
    "temp_c": EvidenceCode(
        "Body temperature", ((LOINC, "8310-5", "Body temperature"),), category=_VITAL_SIGNS, ucum="Cel", unit="°C"
    ),
    "consciousness": EvidenceCode(
        "Level of consciousness (ACVPU)",
        ((SNOMED, "1104441000000107", "ACVPU (Alert Confusion Voice Pain Unresponsive) scale score"),),
        category=_SURVEY,
    ),
    "news2": EvidenceCode(
        "NEWS2 total score",
        (
            (
                SNOMED,
                "1104051000000101",
                "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
            ),
        ),
        category=_SURVEY,
        ucum="{score}",
        unit="score",
    ),
    "on_oxygen": EvidenceCode("Supplemental oxygen in use"),
    "video_rr": EvidenceCode(
        "Respiration rate (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="/min",
        unit="breaths/min",
        method=_VIDEO_METHOD,
    ),
    "apnea_s": EvidenceCode(
        "Apnea duration (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="s",
        unit="s",
        method=_VIDEO_METHOD,
    ),
    "apnea_probability": EvidenceCode(
        "Apnea probability (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="1",
        unit="probability",
        method=_VIDEO_METHOD,
    ),
    "grimace_burden": EvidenceCode(
        "Grimace burden (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="1",
        unit="fraction of window",
        method=_VIDEO_METHOD,
    ),
    "twitch_count": EvidenceCode(
        "Twitch episodes (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="{count}",
        unit="episodes",
        method=_VIDEO_METHOD,
    ),
    "twitch_seconds": EvidenceCode(
        "Seconds with twitching (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="s",
        unit="s",
        method=_VIDEO_METHOD,
    ),
    "video_rr_from": EvidenceCode(
        "Respiration rate at the start of the trend (video)",
        local_system=VIDEO_FINDING_SYSTEM,
        category=_VIDEO,
        ucum="/min",
        unit="breaths/min",
        method=_VIDEO_METHOD,
    ),
    "news2_from": EvidenceCode("NEWS2 total score at the start of the trend", ucum="{score}", unit="score"),
    "news2_complete": EvidenceCode("NEWS2 complete (all seven parameters charted)"),
    "vital_rise": EvidenceCode("Vital-sign rise over the bed's baseline"),
    "window_s": EvidenceCode("Rule window", ucum="s", unit="s"),
    "camera_state": EvidenceCode("Camera state", category=_TECHNICAL),
    "bad_share": EvidenceCode("Share of poor-quality video", category=_TECHNICAL, ucum="1", unit="fraction of window"),
    "vitals_age_s": EvidenceCode("Age of the latest vital signs", category=_TECHNICAL, ucum="s", unit="s"),
}
"""Known evidence keys. Any other key becomes a generic ``Observation`` coded ``alert-evidence#<key>``."""

ACVPU: Final[Mapping[str, str]] = {
    "A": "Alert",
    "C": "New confusion",
    "V": "Responds to voice",
    "P": "Responds to pain",
    "U": "Unresponsive",
}

RR_SOURCE_KEY: Final = "rr_source"
"""``rr_source: "video"`` (NEWS2 scored with the video RR) becomes ``method`` of the rr Observation."""

_INT32 = 2**31 - 1
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")  # FHIR code
_NOT_ID = re.compile(r"[^A-Za-z0-9.-]+")  # characters a FHIR id cannot hold
_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)", re.DOTALL)


# --- public API ----------------------------------------------------------------------------


def alert_to_fhir(alert: Alert) -> dict[str, Any]:
    """The FHIR R4 ``DetectedIssue`` of this alert version, as a JSON-ready dict.

    Validated with ``fhir.resources`` (R4B models); raises :class:`ValueError` if the resource
    does not validate, which would be a bug here, not a bad alert.
    """
    observations = _observations(alert)
    resource: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "id": str(alert.alert_id),
        "meta": {"versionId": str(alert.version), "lastUpdated": _instant(alert.updated_at)},
    }
    if observations:
        resource["contained"] = [obs for obs, _ in observations]
    resource["extension"] = list(_extensions(alert))
    resource["identifier"] = [{"system": ALERT_IDENTIFIER_SYSTEM, "value": str(alert.alert_id)}]
    resource["status"] = STATUS[alert.state]
    resource["code"] = {
        "coding": [
            {"system": ALERT_CODE_SYSTEM, "code": alert.code, "display": ALERT_CODE_DISPLAY.get(alert.code, alert.code)}
        ],
        "text": first_sentence(alert.explanation) or alert.code,
    }
    resource["severity"] = SEVERITY[alert.priority]
    resource["patient"] = _patient(alert.bed_id)
    resource["identifiedDateTime"] = _instant(alert.raised_at)
    resource["author"] = {"type": "Device", "display": AUTHOR_DISPLAY}
    if observations:
        resource["evidence"] = [
            {"detail": [{"reference": f"#{obs['id']}", "display": label}]} for obs, label in observations
        ]
    resource["detail"] = alert.explanation
    mitigation = list(_mitigation(alert))
    if mitigation:
        resource["mitigation"] = mitigation
    try:
        DetectedIssue.model_validate(resource)
    except ValidationError as exc:
        raise ValueError(f"alert {alert.alert_id} v{alert.version} is not a valid FHIR DetectedIssue: {exc}") from exc
    return resource


def encode_fhir(alert: Alert) -> bytes:
    """The ``alerts-fhir`` record value of this alert version: UTF-8 FHIR JSON (key: ``bed_id``)."""
    resource = alert_to_fhir(alert)
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (up to ., ! or ? followed by whitespace), else all of it, stripped."""
    match = _FIRST_SENTENCE.match(text.strip())
    return (match.group(1) if match else text).strip()


# --- pieces --------------------------------------------------------------------------------


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _patient(bed_id: str) -> dict[str, Any]:
    # Only the bed is known: a logical reference the receiver resolves to whoever occupies the bed.
    return {
        "type": "Patient",
        "identifier": {"system": BED_IDENTIFIER_SYSTEM, "value": bed_id},
        "display": f"Patient in bed {bed_id}",
    }


def _coding(coding: Coding) -> dict[str, str]:
    system, code, display = coding
    return {"system": system, "code": code, "display": display}


def _extensions(alert: Alert) -> Iterator[dict[str, Any]]:
    yield {"url": EXT_PRIORITY, "valueCode": alert.priority.value}
    yield {"url": EXT_KIND, "valueCode": alert.kind.value}
    yield {"url": EXT_STATE, "valueCode": alert.state.value}
    yield {"url": EXT_ESCALATION, "valueInteger": alert.escalation_level}
    if alert.snoozed_until is not None:
        yield {"url": EXT_SNOOZED_UNTIL, "valueDateTime": _instant(alert.snoozed_until)}
    if alert.news2 is not None:
        yield {"url": EXT_NEWS2, "valueInteger": alert.news2}


def _action(code: str, display: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": ALERT_ACTION_SYSTEM, "code": code, "display": display}], "text": text}


def _mitigation(alert: Alert) -> Iterator[dict[str, Any]]:
    """Acknowledgement, snooze and resolution, in that order, each once they have happened.

    An acknowledgement stays listed in later versions (e.g. once the alert is resolved)."""
    if alert.acknowledged_by is not None:
        ack: dict[str, Any] = {
            "action": _action("acknowledged", "Acknowledged", f"Acknowledged by {alert.acknowledged_by}")
        }
        if alert.acknowledged_at is not None:
            ack["date"] = _instant(alert.acknowledged_at)
        ack["author"] = {"display": alert.acknowledged_by}
        yield ack
    if alert.snoozed_until is not None:
        yield {"action": _action("snoozed", "Snoozed", f"Snoozed until {_instant(alert.snoozed_until)}")}
    if alert.resolved_at is not None:
        yield {"action": _action("resolved", "Resolved", "Resolved"), "date": _instant(alert.resolved_at)}


def _observations(alert: Alert) -> list[tuple[dict[str, Any], str]]:
    """The contained Observations of the alert's evidence, each with its label; None values skipped."""
    evidence = dict(alert.evidence)
    rr_method = None
    if evidence.get("rr") is not None and evidence.get(RR_SOURCE_KEY) == "video":
        rr_method = _VIDEO_METHOD
        del evidence[RR_SOURCE_KEY]
    used: set[str] = set()
    out: list[tuple[dict[str, Any], str]] = []
    for key, value in evidence.items():
        value_element = _value(key, value, EVIDENCE_CODES.get(key))
        if value_element is None:
            continue
        obs, label = _observation(key, value_element, alert, _unique_id(key, used))
        if key == "rr" and rr_method is not None:
            obs["method"] = {"text": rr_method}
        out.append((obs, label))
    return out


def _unique_id(key: str, used: set[str]) -> str:
    slug = _NOT_ID.sub("-", key).strip("-.")[:40] or "value"
    candidate, n = f"obs-{slug}", 1
    while candidate in used:
        n += 1
        candidate = f"obs-{slug}-{n}"
    used.add(candidate)
    return candidate


def _observation(key: str, value_element: dict[str, Any], alert: Alert, obs_id: str) -> tuple[dict[str, Any], str]:
    known = EVIDENCE_CODES.get(key)
    label = known.label if known is not None else (key.strip() or "(unnamed evidence)")
    codings = [_coding(c) for c in known.standard] if known is not None else []
    if _CODE.fullmatch(key):
        system = known.local_system if known is not None else EVIDENCE_SYSTEM
        codings.append({"system": system, "code": key})
    code: dict[str, Any] = {"coding": codings, "text": label} if codings else {"text": label}
    obs: dict[str, Any] = {"resourceType": "Observation", "id": obs_id, "status": "final"}
    if known is not None and known.category is not None:
        obs["category"] = [{"coding": [_coding(known.category)]}]
    obs["code"] = code
    obs["subject"] = _patient(alert.bed_id)
    obs["effectiveDateTime"] = _instant(alert.updated_at)
    obs.update(value_element)
    if known is not None and known.method is not None:
        obs["method"] = {"text": known.method}
    return obs, label


def _value(key: str, value: EvidenceValue, known: EvidenceCode | None) -> dict[str, Any] | None:
    """The ``value[x]`` (or ``dataAbsentReason``) element of one evidence value; None to skip it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, str):
        text = str(value)  # a StrEnum's value, not its repr
        if key == "consciousness" and text in ACVPU:
            return {
                "valueCodeableConcept": {
                    "coding": [{"system": ACVPU_SYSTEM, "code": text, "display": ACVPU[text]}],
                    "text": ACVPU[text],
                }
            }
        return {"valueString": text} if text else None
    if isinstance(value, float) and not math.isfinite(value):
        reason = "not-a-number" if math.isnan(value) else ("positive-infinity" if value > 0 else "negative-infinity")
        return {"dataAbsentReason": {"coding": [{"system": DATA_ABSENT_SYSTEM, "code": reason}]}}
    if known is not None and known.ucum is not None:
        return {"valueQuantity": {"value": value, "unit": known.unit or known.ucum, "system": UCUM, "code": known.ucum}}
    if isinstance(value, int) and -_INT32 - 1 <= value <= _INT32:
        return {"valueInteger": value}
    return {"valueQuantity": {"value": value}}
