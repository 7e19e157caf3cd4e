"""The admission gate shared by the HL7 and JSON paths, and the settings that configure it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from icu.contracts import encode
from icu.settings import BedSettings, ConfigError, load_settings
from ingest.vitals.gate import (
    CONTRACT_BOUNDS,
    RejectKind,
    VitalsGate,
    VitalsRejected,
    judge_json_body,
)
from ingest.vitals.settings import VitalsIngestSettings
from tests import samples

NOW = samples.T0 + timedelta(minutes=1)
GATE = VitalsGate(beds=BedSettings(beds="icu1-bed01,icu1-bed02"), max_future_skew_s=300)


def candidate(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "bed_id": "icu1-bed01",
        "ts": samples.T0,
        "source": "hl7",
        "hr": 80.0,
        "spo2": 97.0,
    }
    fields.update(changes)
    return fields


def refusal(**changes: object) -> VitalsRejected:
    with pytest.raises(VitalsRejected) as caught:
        GATE.admit(candidate(**changes), now=NOW)
    return caught.value


def test_valid_reading_is_admitted_as_vitals():
    vitals = GATE.admit(candidate(), now=NOW)
    assert (vitals.bed_id, vitals.ts, vitals.source) == ("icu1-bed01", samples.T0, "hl7")
    assert (vitals.hr, vitals.spo2) == (80, 97)


def test_spo2_of_140_is_impossible_and_the_reason_names_field_and_value():
    rejection = refusal(spo2=140)
    assert rejection.kind is RejectKind.IMPOSSIBLE_VALUE
    assert rejection.reason == "spo2 140 % is impossible (must be 0-100 %)"
    assert rejection.bed_id == "icu1-bed01"
    assert rejection.kind.error_type == "contract"


def test_negative_heart_rate_is_impossible():
    rejection = refusal(hr=-5)
    assert rejection.kind is RejectKind.IMPOSSIBLE_VALUE
    assert rejection.reason == "hr -5 beats/min is impossible (must be 0-300 beats/min)"


def test_diastolic_above_systolic_is_impossible():
    rejection = refusal(sbp=80, dbp=120)
    assert rejection.kind is RejectKind.IMPOSSIBLE_VALUE
    assert "diastolic 120.0 mmHg is above systolic 80.0 mmHg" in rejection.reason


def test_bounds_come_from_the_contract():
    assert CONTRACT_BOUNDS["spo2"] == (0, 100)
    assert CONTRACT_BOUNDS["temp_c"] == (25, 45)


def test_timestamp_beyond_the_allowed_skew_is_refused():
    GATE.admit(candidate(ts=NOW + timedelta(seconds=299)), now=NOW)
    rejection = refusal(ts=NOW + timedelta(seconds=301))
    assert rejection.kind is RejectKind.FUTURE_TIMESTAMP
    assert "301 s ahead" in rejection.reason
    assert "limit 300 s" in rejection.reason


def test_unknown_bed_is_refused():
    rejection = refusal(bed_id="icu9-bed99")
    assert rejection.kind is RejectKind.UNKNOWN_BED
    assert "'icu9-bed99'" in rejection.reason
    assert rejection.bed_id == "icu9-bed99"


def test_without_icu_beds_any_well_formed_bed_is_accepted():
    gate = VitalsGate(beds=BedSettings())
    assert gate.admit(candidate(bed_id="anywhere-7"), now=NOW).bed_id == "anywhere-7"


def test_contract_violations_name_the_field_and_value():
    rejection = refusal(bed_id="bed 7", hr="fast", colour="blue")
    assert rejection.kind is RejectKind.INVALID
    assert "bed_id: String should match pattern" in rejection.reason
    assert "(got 'bed 7')" in rejection.reason
    assert "hr: Input should be a valid number" in rejection.reason
    assert "(got 'fast')" in rejection.reason
    assert "colour" in rejection.reason
    assert rejection.bed_id is None  # not a usable Kafka key


def test_naive_timestamp_and_no_measurement_are_refused():
    assert "timezone" in refusal(ts=datetime(2026, 11, 25, 3, 0)).reason  # noqa: DTZ001 - the point of the test
    assert "at least one measurement" in refusal(hr=None, spo2=None).reason


def test_reject_kinds_map_to_dead_letter_error_types():
    assert RejectKind.UNPARSEABLE.error_type == "unparseable"
    assert RejectKind.UNSUPPORTED.error_type == "unsupported"
    assert not RejectKind.UNPARSEABLE.is_content_error
    for kind in (RejectKind.IMPOSSIBLE_VALUE, RejectKind.UNKNOWN_BED, RejectKind.FUTURE_TIMESTAMP):
        assert kind.error_type == "contract"
        assert kind.is_content_error


# --- JSON bodies -------------------------------------------------------------------------------


def vitals_json(**changes: object) -> dict[str, object]:
    return json.loads(encode(samples.vitals(**changes)))


def test_json_object_body_is_one_item_keeping_the_original_bytes():
    body = encode(samples.vitals())
    (item,) = judge_json_body(GATE, body, now=NOW)
    assert item.index == 0
    assert item.raw == body
    assert item.vitals == samples.vitals()


def test_json_array_is_judged_item_by_item():
    impossible = {**vitals_json(), "spo2": 140.0}
    body = json.dumps([vitals_json(), impossible, vitals_json(bed_id="icu1-bed02")]).encode()
    items = judge_json_body(GATE, body, now=NOW)
    assert [item.index for item in items] == [0, 1, 2]
    assert [item.vitals is not None for item in items] == [True, False, True]
    rejected = items[1]
    assert rejected.rejection is not None
    assert "spo2 140" in rejected.rejection.reason
    assert json.loads(rejected.raw)["spo2"] == 140


@pytest.mark.parametrize("body", [b"not json", b'{"hr": NaN}', b"[" * 100_000, b'"a string"', b"\xff\xfe"])
def test_unreadable_json_bodies_are_unparseable(body):
    (item,) = judge_json_body(GATE, body, now=NOW)
    assert item.index is None
    assert item.raw == body
    assert item.rejection is not None
    assert item.rejection.kind is RejectKind.UNPARSEABLE


def test_empty_array_and_non_object_items_are_refused():
    (empty,) = judge_json_body(GATE, b"[]", now=NOW)
    assert empty.rejection is not None
    assert "no vitals" in empty.rejection.reason
    _, number = judge_json_body(GATE, json.dumps([vitals_json(), 5]).encode(), now=NOW)
    assert number.rejection is not None
    assert "item 1 is a JSON int" in number.rejection.reason


def test_json_must_state_its_schema_version():
    body = vitals_json()
    del body["schema_version"]
    (item,) = judge_json_body(GATE, json.dumps(body).encode(), now=NOW)
    assert item.rejection is not None
    assert "schema_version is missing" in item.rejection.reason


def test_json_source_is_whatever_the_sender_says():
    (item,) = judge_json_body(GATE, json.dumps(vitals_json(source="bedside-app")).encode(), now=NOW)
    assert item.vitals is not None
    assert item.vitals.source == "bedside-app"


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_env(monkeypatch):
    monkeypatch.setenv("ICU_BEDS", "icu1-01, icu1-02")
    monkeypatch.setenv("ICU_VITALS_MLLP_PORT", "0")
    settings = load_settings(VitalsIngestSettings, vitals_http_port=9000)
    assert (settings.vitals_mllp_host, settings.vitals_mllp_port) == ("127.0.0.1", 0)
    assert (settings.vitals_http_host, settings.vitals_http_port) == ("127.0.0.1", 9000)
    assert settings.beds == {"icu1-01", "icu1-02"}
    assert settings.vitals_max_future_skew_s == 300
    assert settings.vitals_max_message_bytes == 1024 * 1024
    assert settings.is_known_bed("icu1-01")
    assert not settings.is_known_bed("icu1-03")


def test_placeholder_token_is_refused_outside_demo_mode():
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(VitalsIngestSettings, vitals_http_token="changeme")
    assert load_settings(VitalsIngestSettings, vitals_http_token="changeme", demo=True).demo


def test_anonymous_http_off_loopback_is_refused_outside_demo_mode():
    with pytest.raises(ConfigError, match="ICU_VITALS_HTTP_TOKEN is unset"):
        load_settings(VitalsIngestSettings, vitals_http_host="0.0.0.0")
    settings = load_settings(VitalsIngestSettings, vitals_http_host="0.0.0.0", vitals_http_token="t" * 32)
    assert settings.vitals_http_token is not None
    assert "t" * 32 not in repr(settings)


def test_at_least_one_listener():
    with pytest.raises(ConfigError, match="nothing to run"):
        load_settings(VitalsIngestSettings, vitals_mllp_enabled=False, vitals_http_enabled=False)
