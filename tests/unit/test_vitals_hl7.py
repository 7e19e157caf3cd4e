"""HL7 v2 ORU^R01 -> Vitals mapping, and the ACK that answers each message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hl7
import pytest

from icu.settings import BedSettings
from ingest.vitals.gate import RejectKind, VitalsGate, VitalsRejected
from ingest.vitals.hl7map import (
    AckCode,
    Hl7Decision,
    MessageHeader,
    build_ack,
    decide,
    parse_hl7_timestamp,
    read_oru,
)

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=1)
GATE = VitalsGate(beds=BedSettings(beds="ICU1-07,ICU1-08"))

# Observation identifiers (OBX-3) as monitors send them.
HR_ECG = "147842^MDC_ECG_HEART_RATE^MDC"
PULSE_OXIM_RATE = "149530^MDC_PULS_OXIM_PULS_RATE^MDC"
RESP = "151562^MDC_RESP_RATE^MDC"
SPO2 = "150456^MDC_PULS_OXIM_SAT_O2^MDC"
NIBP_SYS = "150021^MDC_PRESS_BLD_NONINV_SYS^MDC"
NIBP_DIA = "150022^MDC_PRESS_BLD_NONINV_DIA^MDC"
NIBP_MEAN = "150023^MDC_PRESS_BLD_NONINV_MEAN^MDC"
TEMP_BODY = "150364^MDC_TEMP_BODY^MDC"
BPM = "264864^MDC_DIM_BEAT_PER_MIN^MDC"
RPM = "264928^MDC_DIM_RESP_PER_MIN^MDC"
PERCENT = "262688^MDC_DIM_PERCENT^MDC"
MMHG = "266016^MDC_DIM_MMHG^MDC"
DEGC = "268192^MDC_DIM_DEGC^MDC"


def hl7_ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def obx(code: str, value: str, unit: str, *, ts: str = "", status: str = "F", set_id: int = 1) -> str:
    """One numeric OBX: OBX-3 code, OBX-5 value, OBX-6 unit, OBX-11 status, OBX-14 time."""
    return f"OBX|{set_id}|NM|{code}|1.{set_id}|{value}|{unit}|||||{status}|||{ts}"


def oru_message(
    *observations: str,
    pv1: str | None = "PV1||I|ICU1^^07",
    msh_time: str | None = None,
    obr_time: str = "",
    message_type: str = "ORU^R01^ORU_R01",
    version: str = "2.6",
    control_id: str = "MSG0001",
    separator: str = "\r",
) -> bytes:
    """An ORU^R01 from a monitor (MSH, PID, PV1, OBR, then the OBX segments)."""
    segments = [
        f"MSH|^~\\&|MONITOR|ICU1|ICUWATCH|HOSP|{msh_time or hl7_ts(T0)}||{message_type}|{control_id}|P|{version}",
        "PID|||P12345^^^HOSP^MR||DOE^JANE",
        pv1,
        f"OBR|1|||182777000^monitoring of patient^SCT|||{obr_time}",
        *observations,
    ]
    return (separator.join(s for s in segments if s is not None) + separator).encode()


def mdc_message(ts: datetime = T0, **kwargs: object) -> bytes:
    at = hl7_ts(ts)
    return oru_message(
        obx(HR_ECG, "72", BPM, ts=at, set_id=1),
        obx(RESP, "16", RPM, ts=at, set_id=2),
        obx(SPO2, "97", PERCENT, ts=at, set_id=3),
        obx(NIBP_SYS, "121", MMHG, ts=at, set_id=4),
        obx(NIBP_DIA, "79", MMHG, ts=at, set_id=5),
        obx(NIBP_MEAN, "93", MMHG, ts=at, set_id=6),
        obx(TEMP_BODY, "37.2", DEGC, ts=at, set_id=7),
        **kwargs,
    )


def accepted(raw: bytes, now: datetime = NOW) -> Hl7Decision:
    decision = decide(raw, GATE, now=now)
    assert decision.rejection is None, decision.rejection.reason
    return decision


def refused(raw: bytes, kind: RejectKind, now: datetime = NOW) -> VitalsRejected:
    decision = decide(raw, GATE, now=now)
    assert decision.rejection is not None, f"accepted: {decision.vitals}"
    assert decision.rejection.kind is kind, decision.rejection.reason
    return decision.rejection


def parsed_ack(decision: Hl7Decision) -> hl7.Message:
    return hl7.parse(decision.ack(now=NOW, control_id="ACK1"))


# --- mapping ---------------------------------------------------------------------------------


def test_mdc_coded_message_maps_every_vital_sign():
    (vitals,) = accepted(mdc_message()).vitals
    assert vitals.bed_id == "ICU1-07"
    assert vitals.patient_id == "P12345"
    assert vitals.source == "hl7"
    assert vitals.ts == T0
    assert (vitals.hr, vitals.rr, vitals.spo2) == (72, 16, 97)
    assert (vitals.sbp, vitals.dbp, vitals.map, vitals.temp_c) == (121, 79, 93, 37.2)
    assert vitals.on_oxygen is None


def test_loinc_coded_message_maps_every_vital_sign_and_oxygen():
    at = hl7_ts(T0)
    raw = oru_message(
        obx("8867-4^Heart rate^LN", "88", "/min^/min^UCUM", ts=at),
        obx("9279-1^Respiratory rate^LN", "22", "/min^/min^UCUM", ts=at),
        obx("59408-5^SpO2^LN", "93", "%^%^UCUM", ts=at),
        obx("8480-6^Systolic^LN", "101", "mm[Hg]^mmHg^UCUM", ts=at),
        obx("8462-4^Diastolic^LN", "60", "mm[Hg]^mmHg^UCUM", ts=at),
        obx("8478-0^Mean^LN", "74", "mm[Hg]^mmHg^UCUM", ts=at),
        obx("8310-5^Body temperature^LN", "38.4", "Cel^degC^UCUM", ts=at),
        obx("3150-0^Inhaled oxygen concentration^LN", "35", "%^%^UCUM", ts=at),
    )
    (vitals,) = accepted(raw).vitals
    assert (vitals.hr, vitals.rr, vitals.spo2, vitals.sbp, vitals.dbp, vitals.map) == (88, 22, 93, 101, 60, 74)
    assert vitals.temp_c == 38.4
    assert vitals.on_oxygen is True


def test_arterial_saturation_loinc_is_read_as_spo2():
    (vitals,) = accepted(oru_message(obx("2708-6^SaO2^LN", "95", "%^%^UCUM", ts=hl7_ts(T0)))).vitals
    assert vitals.spo2 == 95


def test_fahrenheit_and_kilopascal_are_converted():
    at = hl7_ts(T0)
    raw = oru_message(
        obx("8310-5^Body temperature^LN", "98.6", "[degF]^degF^UCUM", ts=at),
        obx(NIBP_SYS, "16", "kPa^kPa^UCUM", ts=at),
        obx(NIBP_DIA, "10.5", "265987^MDC_DIM_KILO_PASCAL^MDC", ts=at),
    )
    (vitals,) = accepted(raw).vitals
    assert vitals.temp_c == pytest.approx(37.0)
    assert vitals.sbp == pytest.approx(120.0)
    assert vitals.dbp == pytest.approx(78.8)


@pytest.mark.parametrize("unit", ["MDC_DIM_FAHR", "266560^MDC_DIM_FAHR^MDC", "degF"])
def test_fahrenheit_spellings(unit):
    (vitals,) = accepted(oru_message(obx(TEMP_BODY, "102.2", unit, ts=hl7_ts(T0)))).vitals
    assert vitals.temp_c == pytest.approx(39.0)


def test_pulse_oximeter_rate_is_the_heart_rate_when_there_is_no_ecg():
    (vitals,) = accepted(oru_message(obx(PULSE_OXIM_RATE, "64", BPM, ts=hl7_ts(T0)))).vitals
    assert vitals.hr == 64


def test_ecg_heart_rate_wins_over_pulse_rate_whatever_the_order():
    at = hl7_ts(T0)
    raw = oru_message(obx(PULSE_OXIM_RATE, "64", BPM, ts=at, set_id=1), obx(HR_ECG, "70", BPM, ts=at, set_id=2))
    (vitals,) = accepted(raw).vitals
    assert vitals.hr == 70


def test_one_vitals_per_distinct_observation_time():
    first, second = hl7_ts(T0), hl7_ts(T0 - timedelta(minutes=5))
    raw = oru_message(
        obx(HR_ECG, "70", BPM, ts=first, set_id=1),
        obx(SPO2, "96", PERCENT, ts=first, set_id=2),
        obx(HR_ECG, "75", BPM, ts=second, set_id=3),
        obx(NIBP_SYS, "130", MMHG, ts=second, set_id=4),
    )
    earlier, later = accepted(raw).vitals
    assert (earlier.ts, earlier.hr, earlier.sbp, earlier.spo2) == (T0 - timedelta(minutes=5), 75, 130, None)
    assert (later.ts, later.hr, later.spo2, later.sbp) == (T0, 70, 96, None)


def test_time_falls_back_to_obr7_then_msh7():
    obr_time = hl7_ts(T0 - timedelta(minutes=2))
    (from_obr,) = accepted(oru_message(obx(HR_ECG, "70", BPM), obr_time=obr_time)).vitals
    assert from_obr.ts == T0 - timedelta(minutes=2)
    (from_msh,) = accepted(oru_message(obx(HR_ECG, "70", BPM), msh_time=hl7_ts(T0 - timedelta(minutes=3)))).vitals
    assert from_msh.ts == T0 - timedelta(minutes=3)


def test_timestamps_with_offsets_fractions_and_without_offset():
    assert parse_hl7_timestamp("20261125050000+0200") == T0
    assert parse_hl7_timestamp("20261124223000-0430") == T0
    assert parse_hl7_timestamp("20261125030000") == T0  # no offset: UTC
    assert parse_hl7_timestamp("202611250300") == T0
    assert parse_hl7_timestamp("20261125030001.25+0000") == T0 + timedelta(seconds=1.25)
    for bad in ("20261125", "2026112503", "20261325030000", "20261125030000+2500", "2026-11-25T03:00", "x"):
        with pytest.raises(ValueError, match=r"is not|impossible|seconds"):
            parse_hl7_timestamp(bad)


def test_malformed_observation_time_is_a_content_error():
    rejection = refused(oru_message(obx(HR_ECG, "70", BPM, ts="20261399")), RejectKind.INVALID)
    assert "OBX-14" in rejection.reason


def test_results_with_status_x_d_or_w_and_empty_values_are_skipped():
    at = hl7_ts(T0)
    raw = oru_message(
        obx(HR_ECG, "70", BPM, ts=at, status="X", set_id=1),
        obx(SPO2, "85", PERCENT, ts=at, status="D", set_id=2),
        obx(RESP, "40", RPM, ts=at, status="W", set_id=3),
        obx(NIBP_SYS, '""', MMHG, ts=at, set_id=4),
        obx(PULSE_OXIM_RATE, "66", BPM, ts=at, status="R", set_id=5),
    )
    (vitals,) = accepted(raw).vitals
    assert (vitals.hr, vitals.spo2, vitals.rr, vitals.sbp) == (66, None, None, None)


def test_only_skipped_observations_is_no_supported_observation():
    rejection = refused(oru_message(obx(HR_ECG, "70", BPM, status="X")), RejectKind.NO_OBSERVATIONS)
    assert "no supported vital-sign observations" in rejection.reason
    assert rejection.bed_id == "ICU1-07"


def test_unmapped_codes_are_ignored_and_reported_once_per_message():
    at = hl7_ts(T0)
    raw = oru_message(
        obx("151708^MDC_CONC_AWAY_CO2_ET^MDC", "38", MMHG, ts=at, set_id=1),
        obx("151708^MDC_CONC_AWAY_CO2_ET^MDC", "39", MMHG, ts=at, set_id=2),
        obx(HR_ECG, "70", BPM, ts=at, set_id=3),
    )
    decision = accepted(raw)
    assert decision.ignored_codes == {"151708^MDC"}
    (vitals,) = decision.vitals
    assert vitals.hr == 70


def test_message_with_only_unmapped_codes_is_a_content_error():
    raw = oru_message(obx("151708^MDC_CONC_AWAY_CO2_ET^MDC", "38", MMHG, ts=hl7_ts(T0)))
    decision = decide(raw, GATE, now=NOW)
    assert decision.rejection is not None
    assert decision.rejection.kind is RejectKind.NO_OBSERVATIONS
    assert "codes not mapped: 151708^MDC" in decision.rejection.reason


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        ([obx("3151-8^O2 flow^LN", "0", "L/min^L/min^UCUM")], False),
        ([obx("3151-8^O2 flow^LN", "2", "L/min^L/min^UCUM")], True),
        ([obx("3150-0^FiO2^LN", "21", "%^%^UCUM")], False),
        ([obx("152196^MDC_CONC_AWAY_O2_INSP^MDC", "40", PERCENT)], True),
        ([obx("3151-8^O2 flow^LN", "0", "L/min"), obx("3150-0^FiO2^LN", "60", "%")], True),
    ],
)
def test_supplemental_oxygen(observations, expected):
    (vitals,) = accepted(oru_message(*observations, msh_time=hl7_ts(T0))).vitals
    assert vitals.on_oxygen is expected


def test_impossible_oxygen_flow_is_refused():
    rejection = refused(oru_message(obx("3151-8^O2 flow^LN", "-1", "L/min")), RejectKind.IMPOSSIBLE_VALUE)
    assert "o2 flow -1 L/min" in rejection.reason


def test_line_feeds_between_segments_are_accepted():
    (vitals,) = accepted(mdc_message(separator="\r\n")).vitals
    assert vitals.hr == 72


def test_alternate_coding_triplet_is_used():
    code = "HR^Heart rate^99LOCAL^147842^MDC_ECG_HEART_RATE^MDC"
    (vitals,) = accepted(oru_message(obx(code, "81", BPM, ts=hl7_ts(T0)))).vitals
    assert vitals.hr == 81


# --- content errors (AE) ---------------------------------------------------------------------


def test_missing_pv1_is_a_content_error():
    rejection = refused(oru_message(obx(HR_ECG, "70", BPM), pv1=None), RejectKind.INVALID)
    assert "PV1" in rejection.reason


def test_empty_location_is_a_content_error():
    rejection = refused(oru_message(obx(HR_ECG, "70", BPM), pv1="PV1||I|"), RejectKind.INVALID)
    assert "PV1-3" in rejection.reason


@pytest.mark.parametrize(
    ("location", "bed"), [("ICU1^^07", "ICU1-07"), ("ICU1^A^08", "ICU1-A-08"), ("^^ICU1-08", "ICU1-08")]
)
def test_bed_is_the_present_parts_of_pv1_3(location, bed):
    content = read_oru(oru_message(obx(HR_ECG, "70", BPM), pv1=f"PV1||I|{location}"))
    assert content.bed_id == bed


def test_unknown_unit_is_a_content_error_naming_the_unit():
    rejection = refused(oru_message(obx(TEMP_BODY, "310", "K^kelvin^UCUM")), RejectKind.UNKNOWN_UNIT)
    assert "'K^kelvin'" in rejection.reason
    assert "temp_c" in rejection.reason


def test_missing_unit_is_a_content_error():
    rejection = refused(oru_message(obx(TEMP_BODY, "37", "")), RejectKind.UNKNOWN_UNIT)
    assert "unit 'none'" in rejection.reason


def test_unit_of_another_quantity_is_a_content_error():
    refused(oru_message(obx(SPO2, "97", MMHG)), RejectKind.UNKNOWN_UNIT)


def test_non_numeric_value_is_a_content_error():
    rejection = refused(oru_message(obx(HR_ECG, "seventy", BPM)), RejectKind.INVALID)
    assert "'seventy'" in rejection.reason


def test_impossible_spo2_is_refused_by_the_gate():
    raw = oru_message(obx(SPO2, "140", PERCENT, ts=hl7_ts(T0)), obx(HR_ECG, "70", BPM, ts=hl7_ts(T0)))
    rejection = refused(raw, RejectKind.IMPOSSIBLE_VALUE)
    assert "spo2 140" in rejection.reason
    assert rejection.bed_id == "ICU1-07"


def test_unknown_bed_is_refused():
    rejection = refused(oru_message(obx(HR_ECG, "70", BPM), pv1="PV1||I|ICU9^^01"), RejectKind.UNKNOWN_BED)
    assert "ICU9-01" in rejection.reason


def test_future_measurement_time_is_refused():
    raw = oru_message(obx(HR_ECG, "70", BPM, ts=hl7_ts(NOW + timedelta(hours=1))))
    refused(raw, RejectKind.FUTURE_TIMESTAMP)


# --- form errors (AR) ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"hello", b"MSH", b"MSH|", b"\x00\xff\xfe garbage", b"PID|||1\rMSH|^~\\&|"])
def test_unparseable_input_is_rejected(raw):
    decision = decide(raw, GATE, now=NOW)
    assert decision.rejection is not None
    assert decision.rejection.kind is RejectKind.UNPARSEABLE
    assert parsed_ack(decision).segment("MSA")(1)[0] == "AR"


def test_wrong_message_type_is_rejected():
    rejection = refused(mdc_message(message_type="ADT^A01^ADT_A01"), RejectKind.UNSUPPORTED)
    assert "ADT^A01" in rejection.reason


def test_two_messages_in_one_block_are_rejected():
    rejection = refused(mdc_message() + mdc_message(), RejectKind.UNSUPPORTED)
    assert "2 messages" in rejection.reason


# --- ACK ---------------------------------------------------------------------------------------


def _field(message: hl7.Message, segment: str, number: int) -> str:
    return str(message.segment(segment)(number))


def test_aa_swaps_applications_and_echoes_control_id_and_version():
    ack = parsed_ack(accepted(mdc_message(control_id="CTRL42", version="2.6")))
    assert [_field(ack, "MSH", n) for n in (3, 4, 5, 6)] == ["ICUWATCH", "HOSP", "MONITOR", "ICU1"]
    assert _field(ack, "MSH", 9) == "ACK^R01^ACK"
    assert _field(ack, "MSH", 10) == "ACK1"
    assert _field(ack, "MSH", 12) == "2.6"
    assert _field(ack, "MSA", 1) == "AA"
    assert _field(ack, "MSA", 2) == "CTRL42"
    assert len(ack) == 2  # MSH and MSA, no ERR


def test_ae_carries_the_reason_in_msa3_and_err():
    raw = oru_message(obx(SPO2, "140", PERCENT, ts=hl7_ts(T0)), control_id="C7")
    decision = decide(raw, GATE, now=NOW)
    text = decision.ack(now=NOW, control_id="ACK1")
    assert text.endswith("\r")
    ack = hl7.parse(text)
    assert _field(ack, "MSA", 1) == "AE"
    assert _field(ack, "MSA", 2) == "C7"
    assert "spo2 140" in _field(ack, "MSA", 3)
    err = ack.segment("ERR")
    assert str(err(3)) == "207^Application internal error^HL70357"
    assert str(err(4)) == "E"
    assert "spo2 140" in err.extract_field(1, 8)


def test_long_reasons_are_cut_in_msa3_but_whole_in_err():
    reason = "x" * 200
    decision = Hl7Decision(header=MessageHeader(control_id="C1"), rejection=VitalsRejected(RejectKind.INVALID, reason))
    ack = parsed_ack(decision)
    assert len(_field(ack, "MSA", 3)) == 80
    assert ack.segment("ERR").extract_field(1, 8) == reason


def test_delimiters_in_reasons_are_escaped():
    reason = "type ADT^A01 | bad & worse ~ \\ end"
    decision = Hl7Decision(header=MessageHeader(control_id="C1"), rejection=VitalsRejected(RejectKind.INVALID, reason))
    ack = parsed_ack(decision)
    assert len(ack.segment("MSA")) == 4
    assert ack.unescape(_field(ack, "MSA", 3)) == reason


def test_version_2_3_uses_the_old_err_layout():
    raw = oru_message(obx(SPO2, "140", PERCENT, ts=hl7_ts(T0)), version="2.3.1")
    ack = parsed_ack(decide(raw, GATE, now=NOW))
    assert _field(ack, "MSH", 12) == "2.3.1"
    assert _field(ack, "ERR", 1) == "^^^207&Application internal error&HL70357"


def test_ar_for_garbage_has_a_default_header_and_empty_msa2():
    ack = parsed_ack(decide(b"not hl7 at all", GATE, now=NOW))
    assert _field(ack, "MSH", 9) == "ACK"
    assert _field(ack, "MSH", 3) == "ICU-WATCH"
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "MSA", 2) == ""
    assert _field(ack, "ERR", 3).startswith("100^")


def test_wrong_type_ack_echoes_its_trigger_event():
    ack = parsed_ack(decide(mdc_message(message_type="ADT^A01"), GATE, now=NOW))
    assert _field(ack, "MSH", 9) == "ACK^A01^ACK"
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "ERR", 3).startswith("200^")


def test_store_failure_ack_is_ar_so_the_sender_resends():
    decision = accepted(mdc_message(control_id="C9"))
    ack = hl7.parse(decision.store_failed_ack(now=NOW))
    assert _field(ack, "MSA", 1) == "AR"
    assert _field(ack, "MSA", 2) == "C9"
    assert "resend" in _field(ack, "MSA", 3)


def test_ack_time_is_utc_with_offset():
    text = build_ack(MessageHeader(), AckCode.ACCEPT, now=T0)
    assert "|20261125030000+0000|" in text
