import json
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest

from icu.contracts import (
    FRAME_HEADER_NAMES,
    JSON_MODELS,
    MAX_FRAME_BYTES,
    NON_CONTRACT_TOPICS,
    SCHEMA_VERSION,
    Alert,
    AlertAck,
    CameraStatus,
    ContractError,
    DeadLetter,
    Evidence,
    Frame,
    Topic,
    Vitals,
    decode,
    decode_frame,
    decode_record,
    encode,
    json_schemas,
)
from tests import samples


@pytest.mark.parametrize("message", samples.every_json_message(), ids=lambda m: type(m).__name__)
def test_json_messages_round_trip(message):
    wire = encode(message)
    decoded = decode(type(message), wire)
    assert decoded == message
    assert json.loads(wire)["schema_version"] == SCHEMA_VERSION


def test_every_json_topic_has_a_model_and_every_model_its_topic():
    assert set(JSON_MODELS) == set(Topic) - {Topic.FRAMES} - NON_CONTRACT_TOPICS
    for topic, model in JSON_MODELS.items():
        assert model.topic is topic


def test_timestamps_are_written_in_utc_whatever_zone_they_were_given_in():
    cet = timezone(timedelta(hours=1))
    v = samples.vitals(ts=datetime(2026, 11, 25, 4, 0, tzinfo=cet))
    assert v.ts == datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert v.ts.utcoffset() == timedelta(0)
    assert json.loads(encode(v))["ts"].endswith("Z")


def test_dead_letter_bytes_survive_as_base64():
    letter = samples.dead_letter()
    wire = json.loads(encode(letter))
    assert wire["value"] == "AG5vdCBqc29u"
    assert decode(DeadLetter, encode(letter)).value == b"\x00not json"


def _vitals_json(**changes):
    body = json.loads(encode(samples.vitals()))
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "Input should be an object"),
        (None, "no value"),
        (_vitals_json(schema_version=2), "unsupported schema_version 2"),
        (_vitals_json(schema_version=...), "schema_version is missing"),
        (_vitals_json(ts="2026-11-25T03:00:00"), "timezone"),
        (_vitals_json(ts="1970-01-01T00:00:00Z"), "outside 2000-2100"),
        (_vitals_json(hr=-5), "hr: Input should be greater than or equal to 0"),
        (_vitals_json(spo2=140), "spo2"),
        (_vitals_json(hr="fast"), "hr"),
        (_vitals_json(bed_id="bed 1; DROP TABLE"), "bed_id"),
        (_vitals_json(sbp=80, dbp=120), "diastolic 120.0 mmHg is above systolic 80.0"),
        (_vitals_json(colour="blue"), "colour: Extra inputs are not permitted"),
        (
            _vitals_json(
                hr=None,
                rr=None,
                spo2=None,
                sbp=None,
                dbp=None,
                map=None,
                temp_c=None,
                on_oxygen=None,
                consciousness=None,
            ),
            "at least one measurement",
        ),
        (_vitals_json(consciousness="X"), "consciousness"),
        (_vitals_json(ts="0001-01-01T00:00:00+14:00"), "cannot be expressed in UTC"),
        (_vitals_json(schema_version=True), "unsupported schema_version True"),
        (_vitals_json(patient_id="p\u0000x"), "patient_id contains a NUL character"),
    ],
)
def test_malformed_vitals_are_rejected_with_a_reason(payload, expected):
    with pytest.raises(ContractError) as raised:
        decode(Vitals, payload)
    assert expected in raised.value.reason


def test_alert_and_ack_invariants_are_enforced():
    body = json.loads(encode(samples.alert()))
    body["state"] = "resolved"
    with pytest.raises(ContractError, match="resolved alert needs resolved_at"):
        decode(Alert, json.dumps(body).encode())
    body = json.loads(encode(samples.ack()))
    body["snooze_s"] = 60
    with pytest.raises(ContractError, match="only allowed with action 'snooze'"):
        decode(AlertAck, json.dumps(body).encode())
    body["action"] = "snooze"
    body["snooze_s"] = 99_999
    body["reason"] = "x"
    with pytest.raises(ContractError, match="snooze_s"):
        decode(AlertAck, json.dumps(body).encode())


def test_values_the_database_cannot_hold_are_refused_at_the_edge():
    body = json.loads(encode(samples.camera_status()))
    body["reconnects"] = 3_000_000_000
    with pytest.raises(ContractError, match="reconnects"):
        decode(CameraStatus, json.dumps(body).encode())
    body = json.loads(encode(samples.alert()))
    body["evidence"] = {"note": "a\u0000b"}
    with pytest.raises(ContractError, match="NUL"):
        decode(Alert, json.dumps(body).encode())


def test_messages_are_frozen():
    v = samples.vitals()
    with pytest.raises(ValueError, match="frozen"):
        v.hr = 10  # type: ignore[misc]


def test_frames_round_trip_through_headers():
    frame = samples.frame(seq=42)
    headers = frame.kafka_headers()
    assert dict(headers)["content-type"] == b"image/jpeg"
    decoded = decode_record(Topic.FRAMES, frame.jpeg, headers)
    assert isinstance(decoded, Frame)
    assert decoded == frame
    assert decoded.header.seq == 42
    assert frame.key() == b"icu1-bed01"


def _frame_headers(**changes):
    headers = dict(samples.frame().kafka_headers())
    for name, value in changes.items():
        header = FRAME_HEADER_NAMES.get(name, name)
        if value is None:
            del headers[header]
        else:
            headers[header] = value
    return list(headers.items())


@pytest.mark.parametrize(
    ("value", "headers", "expected"),
    [
        (None, _frame_headers(), "no value"),
        (b"GIF89a....", _frame_headers(), "not a JPEG"),
        (samples.frame().jpeg[:-10], _frame_headers(), "truncated"),
        (b"\xff\xd8\xff" + b"\x00" * MAX_FRAME_BYTES + b"\xff\xd9", _frame_headers(), "limit"),
        (samples.frame().jpeg, _frame_headers(bed_id=None), "'icu-bed' is missing"),
        (samples.frame().jpeg, _frame_headers(seq=b"-1"), "seq"),
        (samples.frame().jpeg, _frame_headers(width=b"wide"), "width"),
        (samples.frame().jpeg, _frame_headers(capture_ts=b"2026-11-25T03:00:00"), "timezone"),
        (samples.frame().jpeg, _frame_headers(schema_version=b"9"), "unsupported schema_version"),
        (samples.frame().jpeg, _frame_headers(camera_id=b"\xff\xfe"), "not UTF-8"),
        (samples.frame().jpeg, _frame_headers(**{"content-type": b"image/png"}), "content-type"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(value, headers, expected):
    with pytest.raises(ContractError) as raised:
        decode_frame(value, headers)
    assert expected in raised.value.reason


def test_exported_schemas_accept_real_messages_and_reject_broken_ones():
    schemas = json_schemas()
    for message in samples.every_json_message():
        schema = schemas[f"{message.topic.value}.v1.schema.json"]
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        body = json.loads(encode(message))
        validator.validate(body)
        broken = dict(body)
        broken.pop("schema_version")
        assert not validator.is_valid(broken)
        broken = dict(body, unexpected_field=1)
        assert not validator.is_valid(broken)
    headers_schema = schemas["frames-headers.v1.schema.json"]
    headers = {k: v.decode() for k, v in samples.frame().kafka_headers()}
    jsonschema.validate(headers, headers_schema)
    headers.pop("icu-bed")
    assert not jsonschema.Draft202012Validator(headers_schema).is_valid(headers)


def test_evidence_keyframe_travels_as_base64_and_checks_its_grid():
    evidence = samples.evidence()
    body = json.loads(encode(evidence))
    assert isinstance(body["keyframe_jpeg"], str)  # URL-safe base64 in JSON
    assert decode(Evidence, encode(evidence)).keyframe_jpeg == evidence.keyframe_jpeg
    with pytest.raises(ContractError, match="4 values for a 2x3 grid"):
        decode(Evidence, json.dumps({**body, "saliency_cols": 3}).encode())
    with pytest.raises(ContractError, match="ts must lie within"):
        decode(Evidence, json.dumps({**body, "ts": "2026-01-01T00:00:00Z"}).encode())
