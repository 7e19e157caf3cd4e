"""HL7 v2 ORU^R01 observations -> ``Vitals`` candidates, and the ACK that answers them.

Bedside monitors and their gateways report vital signs as unsolicited ORU^R01 results: one OBX
segment per numeric, identified by an IEEE 11073-10101 (MDC) or LOINC code, with a unit, a
result status and (usually) its own measurement time. This module turns such a message into
one plain mapping of ``Vitals`` fields per distinct measurement time, which the gate
(:mod:`ingest.vitals.gate`) then admits or refuses, and builds the original-mode ACK
(AA / AE / AR) that tells the sender whether to move on, fix the message, or resend it.

Decisions that are not obvious from the standard:

- An MLLP block holds exactly one message; a batch in one block is refused (AR).
- A mapped observation without a recognised unit is an error (AE), never a guess: 98.6 read
  as °C, or kPa read as mmHg, would be a silently wrong reading.
- Empty values (and the HL7 null ``""``) mean "not measured" and are skipped, as are results
  with status X (cannot be obtained), D (deleted) and W (wrong, replaced).
- A timestamp without a UTC offset is taken as UTC. HL7 says such a time is the sender's
  local time, which the receiver cannot know; monitors should send an offset.
- When several observations give the same field at the same time, the preferred code wins
  (ECG heart rate over pulse-oximeter pulse rate over NIBP pulse rate, and so on); between
  equally preferred ones the first in the message wins.
- The message is accepted or refused whole, since its ACK can only say one thing.

Pure: no I/O, no clock (``now`` is passed in), no logging (codes that were ignored are
returned for the caller to log).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Final

import hl7

from icu.contracts import Vitals
from ingest.vitals.gate import RejectKind, VitalsGate, VitalsRejected

SOURCE: Final = "hl7"
"""``Vitals.source`` of every reading that arrived as HL7 v2."""

# --- what is mapped ------------------------------------------------------------------------


class Reading(StrEnum):
    """The quantities this ingest reads from OBX segments."""

    HEART_RATE = "hr"
    RESP_RATE = "rr"
    SPO2 = "spo2"
    SYSTOLIC = "sbp"
    DIASTOLIC = "dbp"
    MEAN_PRESSURE = "map"
    TEMPERATURE = "temp_c"
    O2_FLOW = "o2_flow"
    FIO2 = "fio2"


@dataclass(frozen=True)
class ObservationCode:
    """One coded observation this ingest understands. Lower ``rank`` wins for the same field."""

    system: str
    code: str
    name: str
    reading: Reading
    rank: int = 0


# IEEE 11073-10101 codes are the 32-bit context-free form (partition << 16 | term code),
# e.g. MDC_ECG_HEART_RATE = partition 2 (SCADA), term 16770 -> 131072 + 16770 = 147842.
OBSERVATION_CODES: Final[tuple[ObservationCode, ...]] = (
    ObservationCode("MDC", "147842", "MDC_ECG_HEART_RATE", Reading.HEART_RATE),
    ObservationCode("MDC", "149530", "MDC_PULS_OXIM_PULS_RATE", Reading.HEART_RATE, rank=1),
    ObservationCode("MDC", "149546", "MDC_PULS_RATE_NON_INV", Reading.HEART_RATE, rank=2),
    ObservationCode("MDC", "151562", "MDC_RESP_RATE", Reading.RESP_RATE),
    ObservationCode("MDC", "151570", "MDC_AWAY_RESP_RATE", Reading.RESP_RATE, rank=1),
    ObservationCode("MDC", "150456", "MDC_PULS_OXIM_SAT_O2", Reading.SPO2),
    ObservationCode("MDC", "150021", "MDC_PRESS_BLD_NONINV_SYS", Reading.SYSTOLIC),
    ObservationCode("MDC", "150022", "MDC_PRESS_BLD_NONINV_DIA", Reading.DIASTOLIC),
    ObservationCode("MDC", "150023", "MDC_PRESS_BLD_NONINV_MEAN", Reading.MEAN_PRESSURE),
    ObservationCode("MDC", "150301", "MDC_PRESS_CUFF_SYS", Reading.SYSTOLIC, rank=1),
    ObservationCode("MDC", "150302", "MDC_PRESS_CUFF_DIA", Reading.DIASTOLIC, rank=1),
    ObservationCode("MDC", "150303", "MDC_PRESS_CUFF_MEAN", Reading.MEAN_PRESSURE, rank=1),
    ObservationCode("MDC", "150364", "MDC_TEMP_BODY", Reading.TEMPERATURE),
    ObservationCode("MDC", "150344", "MDC_TEMP", Reading.TEMPERATURE, rank=1),
    ObservationCode("MDC", "152196", "MDC_CONC_AWAY_O2_INSP", Reading.FIO2),
    ObservationCode("LN", "8867-4", "Heart rate", Reading.HEART_RATE),
    ObservationCode("LN", "9279-1", "Respiratory rate", Reading.RESP_RATE),
    ObservationCode("LN", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", Reading.SPO2),
    ObservationCode("LN", "2708-6", "Oxygen saturation in Arterial blood", Reading.SPO2, rank=1),
    ObservationCode("LN", "8480-6", "Systolic blood pressure", Reading.SYSTOLIC),
    ObservationCode("LN", "8462-4", "Diastolic blood pressure", Reading.DIASTOLIC),
    ObservationCode("LN", "8478-0", "Mean blood pressure", Reading.MEAN_PRESSURE),
    ObservationCode("LN", "8310-5", "Body temperature", Reading.TEMPERATURE),
    ObservationCode("LN", "3151-8", "Inhaled oxygen flow rate", Reading.O2_FLOW),
    ObservationCode("LN", "3150-0", "Inhaled oxygen concentration", Reading.FIO2),
)

_BY_CODE: Final[Mapping[tuple[str, str], ObservationCode]] = {(c.system, c.code): c for c in OBSERVATION_CODES}
_BY_MDC_NAME: Final[Mapping[str, ObservationCode]] = {c.name: c for c in OBSERVATION_CODES if c.system == "MDC"}


@dataclass(frozen=True)
class Unit:
    """A unit of measure and how to convert a value in it to the field's stored unit."""

    name: str
    to_stored: Callable[[float], float] = field(default=lambda value: value)


PER_MINUTE_BEATS = Unit("beats/min")
PER_MINUTE_BREATHS = Unit("breaths/min")
PER_MINUTE = Unit("/min")
PERCENT = Unit("%")
MMHG = Unit("mmHg")
KPA = Unit("kPa", lambda kpa: round(kpa * 7.500617, 1))  # 1 kPa = 7.500617 mmHg
CELSIUS = Unit("Cel")
FAHRENHEIT = Unit("[degF]", lambda f: round((f - 32.0) * 5.0 / 9.0, 2))
LITRE_PER_MINUTE = Unit("L/min")

# Spellings seen in OBX-6 (identifier or text component): UCUM, the MDC reference ids and
# their 32-bit codes (partition 4, e.g. MDC_DIM_MMHG = 262144 + 3872 = 266016), and a few
# unambiguous common forms.
UNIT_SPELLINGS: Final[Mapping[str, Unit]] = {
    "/min": PER_MINUTE,
    "1/min": PER_MINUTE,
    "{beats}/min": PER_MINUTE_BEATS,
    "{beat}/min": PER_MINUTE_BEATS,
    "bpm": PER_MINUTE_BEATS,
    "MDC_DIM_BEAT_PER_MIN": PER_MINUTE_BEATS,
    "264864": PER_MINUTE_BEATS,
    "{breaths}/min": PER_MINUTE_BREATHS,
    "{breath}/min": PER_MINUTE_BREATHS,
    "MDC_DIM_RESP_PER_MIN": PER_MINUTE_BREATHS,
    "264928": PER_MINUTE_BREATHS,
    "%": PERCENT,
    "MDC_DIM_PERCENT": PERCENT,
    "262688": PERCENT,
    "mm[Hg]": MMHG,
    "mmHg": MMHG,
    "MDC_DIM_MMHG": MMHG,
    "266016": MMHG,
    "kPa": KPA,
    "MDC_DIM_KILO_PASCAL": KPA,
    "265987": KPA,
    "Cel": CELSIUS,
    "degC": CELSIUS,
    "°C": CELSIUS,
    "MDC_DIM_DEGC": CELSIUS,
    "268192": CELSIUS,
    "[degF]": FAHRENHEIT,
    "degF": FAHRENHEIT,
    "°F": FAHRENHEIT,
    "MDC_DIM_FAHR": FAHRENHEIT,
    "266560": FAHRENHEIT,
    "L/min": LITRE_PER_MINUTE,
    "l/min": LITRE_PER_MINUTE,
    "MDC_DIM_L_PER_MIN": LITRE_PER_MINUTE,
    "265216": LITRE_PER_MINUTE,
}

ALLOWED_UNITS: Final[Mapping[Reading, frozenset[Unit]]] = {
    Reading.HEART_RATE: frozenset({PER_MINUTE, PER_MINUTE_BEATS}),
    Reading.RESP_RATE: frozenset({PER_MINUTE, PER_MINUTE_BREATHS}),
    Reading.SPO2: frozenset({PERCENT}),
    Reading.SYSTOLIC: frozenset({MMHG, KPA}),
    Reading.DIASTOLIC: frozenset({MMHG, KPA}),
    Reading.MEAN_PRESSURE: frozenset({MMHG, KPA}),
    Reading.TEMPERATURE: frozenset({CELSIUS, FAHRENHEIT}),
    Reading.O2_FLOW: frozenset({LITRE_PER_MINUTE}),
    Reading.FIO2: frozenset({PERCENT}),
}

SKIPPED_RESULT_STATUSES: Final = frozenset({"X", "D", "W"})
"""OBX-11 values whose result is not a reading: cannot obtain, deleted, wrong (replaced)."""

ROOM_AIR_FIO2_PERCENT: Final = 21.0
MAX_O2_FLOW_L_MIN: Final = 100.0  # high-flow nasal cannula tops out around 60-80 L/min

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_HL7_TS = re.compile(
    r"(?P<date>\d{12})(?P<seconds>\d{2}(?:\.\d{1,4})?)?(?P<offset>[+-]\d{4})?",
)


# --- message header and ACK ---------------------------------------------------------------


class AckCode(StrEnum):
    """MSA-1 in original acknowledgement mode (HL7 table 0008)."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


# HL7 table 0357 (message error condition codes) as used in ERR.
HL7_ERROR_CODES: Final[Mapping[RejectKind, tuple[str, str]]] = {
    RejectKind.UNPARSEABLE: ("100", "Segment sequence error"),
    RejectKind.TOO_LARGE: ("100", "Segment sequence error"),
    RejectKind.UNSUPPORTED: ("200", "Unsupported message type"),
    RejectKind.INVALID: ("102", "Data type error"),
    RejectKind.IMPOSSIBLE_VALUE: ("207", "Application internal error"),
    RejectKind.UNKNOWN_UNIT: ("103", "Table value not found"),
    RejectKind.UNKNOWN_BED: ("204", "Unknown key identifier"),
    RejectKind.FUTURE_TIMESTAMP: ("207", "Application internal error"),
    RejectKind.NO_OBSERVATIONS: ("101", "Required field missing"),
}
STORE_FAILED_ERROR: Final = ("207", "Application internal error")
DEFAULT_VERSION: Final = "2.5"
MSA_TEXT_MAX: Final = 80  # MSA-3 is ST(80) in v2.3-2.5; the full reason goes in ERR


@dataclass(frozen=True)
class MessageHeader:
    """The MSH fields an ACK needs, kept as raw (still escaped) text to echo them verbatim."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_time: str = ""
    message_code: str = ""
    trigger_event: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = DEFAULT_VERSION
    codec: str = "utf-8"

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[0] if self.encoding_characters else "^"

    @property
    def escape_character(self) -> str:
        return self.encoding_characters[2] if len(self.encoding_characters) > 2 else "\\"


def _raw_field(segment: hl7.Segment, index: int) -> str:
    try:
        return str(segment(index))
    except IndexError:
        return ""


def _component(segment: hl7.Segment, field_num: int, component_num: int = 1, repeat_num: int = 1) -> str:
    """A component's unescaped text; '' when absent (python-hl7 raises for some absent paths)."""
    try:
        return str(segment.extract_field(1, field_num, repeat_num, component_num, 1)).strip()
    except IndexError:
        return ""


def read_header(message: hl7.Message) -> MessageHeader:
    msh = message.segment("MSH")
    version = _component(msh, 12) or DEFAULT_VERSION
    return MessageHeader(
        field_separator=_raw_field(msh, 1) or "|",
        encoding_characters=_raw_field(msh, 2) or "^~\\&",
        sending_application=_raw_field(msh, 3),
        sending_facility=_raw_field(msh, 4),
        receiving_application=_raw_field(msh, 5),
        receiving_facility=_raw_field(msh, 6),
        message_time=_component(msh, 7),
        message_code=_component(msh, 9, 1),
        trigger_event=_component(msh, 9, 2),
        control_id=_component(msh, 10),
        processing_id=_component(msh, 11) or "P",
        version=version,
    )


def _escape(text: str, header: MessageHeader) -> str:
    # Free text inside the ACK: escape the delimiters (HL7 v2 section 2.7) and keep it ASCII
    # on one line so any receiver can show it.
    esc = header.escape_character
    replacements = {esc: f"{esc}E{esc}", header.field_separator: f"{esc}F{esc}"}
    names = ("S", "R", "E", "T")
    for char, name in zip(header.encoding_characters, names, strict=False):
        if name != "E":
            replacements[char] = f"{esc}{name}{esc}"
    out = []
    for char in text.replace("\r", " ").replace("\n", " "):
        if char in replacements:
            out.append(replacements[char])
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("?")
    return "".join(out)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def build_ack(
    header: MessageHeader | None,
    code: AckCode,
    *,
    now: datetime,
    text: str = "",
    error: tuple[str, str] | None = None,
    control_id: str | None = None,
) -> str:
    """An original-mode ACK for the message with ``header`` (None when it had no readable MSH).

    The ACK swaps sending and receiving application/facility, echoes MSH-10 in MSA-2, takes
    the trigger event and version of the incoming message (ACK^R01^ACK for an ORU^R01), and
    for AE/AR carries ``text`` in MSA-3 (cut to 80 characters) and in full in an ERR segment
    with the HL7 table 0357 ``error`` (code, name). Segments end with a carriage return.
    """
    source = header or MessageHeader()
    sep = source.field_separator
    comp = source.component_separator
    sub = source.encoding_characters[3] if len(source.encoding_characters) > 3 else "&"
    message_type = f"ACK{comp}{source.trigger_event}{comp}ACK" if source.trigger_event else "ACK"
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "+0000"
    msh = [
        "MSH",
        source.encoding_characters,
        source.receiving_application or "ICU-WATCH",
        source.receiving_facility,
        source.sending_application,
        source.sending_facility,
        stamp,
        "",
        message_type,
        control_id or uuid.uuid4().hex[:20].upper(),
        source.processing_id or "P",
        source.version or DEFAULT_VERSION,
    ]
    # MSH-1 is the separator itself, so the segment starts "MSH|^~\&|...".
    segments = [msh[0] + sep + sep.join(msh[1:])]
    short_text = _escape(text[:MSA_TEXT_MAX], source) if text else ""
    msa = ["MSA", code.value, _escape(source.control_id, source)]
    if short_text:
        msa.append(short_text)
    segments.append(sep.join(msa))
    if error is not None and code is not AckCode.ACCEPT:
        number, name = error
        full_text = _escape(text, source)
        if _version_tuple(source.version) and _version_tuple(source.version) < (2, 5):
            # v2.1-2.4: ERR-1 is "segment^sequence^field^code" with the code as subcomponents.
            segments.append(sep.join(["ERR", f"{comp}{comp}{comp}{number}{sub}{name}{sub}HL70357"]))
        else:
            # v2.5+: ERR-3 error code, ERR-4 severity, ERR-8 user message.
            fields = ["ERR", "", "", f"{number}{comp}{name}{comp}HL70357", "E", "", "", "", full_text]
            segments.append(sep.join(fields))
    return "\r".join(segments) + "\r"


# --- parsing --------------------------------------------------------------------------------


def decode_message(raw: bytes) -> tuple[str, str]:
    """(text, codec): UTF-8, else ISO-8859-1 (which HL7 senders use when they say 8859/1).

    Line feeds are normalised to the carriage returns HL7 separates segments with, since test
    tools and some gateways send CR LF or LF.
    """
    try:
        text, codec = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, codec = raw.decode("latin-1"), "latin-1"
    text = text.removeprefix("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    return text.strip(), codec


def parse_message(raw: bytes) -> tuple[MessageHeader, hl7.Message]:
    """Parse one HL7 v2 message; raise :class:`VitalsRejected` (UNPARSEABLE/UNSUPPORTED) if it is not one."""
    text, codec = decode_message(raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise VitalsRejected(RejectKind.UNPARSEABLE, "not an HL7 v2 message: it does not start with an MSH segment")
    try:
        message = hl7.parse(text)
        header = read_header(message)
    except Exception as exc:  # python-hl7 raises IndexError, ParseException, ... on garbage
        raise VitalsRejected(RejectKind.UNPARSEABLE, f"not a parseable HL7 v2 message ({exc})") from None
    header = MessageHeader(**{**header.__dict__, "codec": codec})
    msh_count = sum(1 for segment in message if str(segment[0]) == "MSH")
    if msh_count > 1:
        raise VitalsRejected(
            RejectKind.UNSUPPORTED, f"one MLLP block holds {msh_count} messages; send one message per block"
        )
    return header, message


def parse_hl7_timestamp(value: str) -> datetime:
    """HL7 TS/DTM ``YYYYMMDDHHMM[SS[.S[S[S[S]]]]][+/-ZZZZ]`` -> aware datetime.

    No offset means UTC (see the module docstring). At least minute precision is required:
    a vital sign timed to the day or hour cannot be placed on a bed's timeline.
    """
    match = _HL7_TS.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not an HL7 timestamp YYYYMMDDHHMM[SS[.SSSS]][+/-ZZZZ]")
    date = match["date"]
    seconds = float(match["seconds"] or 0)
    offset = match["offset"]
    tz = UTC
    if offset:
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if hours > 14 or minutes > 59:
            raise ValueError(f"{value!r} has an impossible UTC offset {offset}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        base = datetime(int(date[0:4]), int(date[4:6]), int(date[6:8]), int(date[8:10]), int(date[10:12]), tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date and time ({exc})") from None
    if seconds >= 60:
        raise ValueError(f"{value!r} has {seconds:g} seconds")
    return (base + timedelta(seconds=seconds)).astimezone(UTC)


@dataclass(frozen=True)
class Observation:
    """One mapped OBX: value already converted to the stored unit."""

    reading: Reading
    value: float
    code: ObservationCode
    ts: datetime


@dataclass(frozen=True)
class OruContent:
    """What an ORU^R01 says, before the gate: one candidate mapping per measurement time."""

    header: MessageHeader
    bed_id: str
    patient_id: str | None
    candidates: tuple[dict[str, Any], ...]
    ignored_codes: frozenset[str] = frozenset()


def _match_code(obx: hl7.Segment) -> tuple[ObservationCode | None, str]:
    """The mapped code of OBX-3 (primary or alternate triplet) and a label for logs."""
    label = ""
    for first in (1, 4):  # CE/CWE: identifier^text^system^alt identifier^alt text^alt system
        identifier = _component(obx, 3, first)
        text = _component(obx, 3, first + 1)
        system = _component(obx, 3, first + 2).upper()
        if not (identifier or text):
            continue
        label = label or f"{identifier or text}^{system}"
        if system in ("LN", "LOINC") and (found := _BY_CODE.get(("LN", identifier))):
            return found, label
        if system in ("MDC", "") and (found := _BY_CODE.get(("MDC", identifier)) or _BY_MDC_NAME.get(text)):
            return found, label
        if system == "MDC" and (found := _BY_MDC_NAME.get(identifier)):
            return found, label
    return None, label


def _unit_of(obx: hl7.Segment, code: ObservationCode) -> Unit:
    spellings = [s for s in (_component(obx, 6, 1), _component(obx, 6, 2)) if s]
    for spelling in spellings:
        unit = UNIT_SPELLINGS.get(spelling)
        if unit is not None and unit in ALLOWED_UNITS[code.reading]:
            return unit
    shown = "^".join(spellings) or "none"
    allowed = ", ".join(sorted(u.name for u in ALLOWED_UNITS[code.reading]))
    raise VitalsRejected(
        RejectKind.UNKNOWN_UNIT,
        f"OBX {code.code}^{code.name}: unit {shown!r} is not one this ingest reads for {code.reading.value} "
        f"(expected {allowed})",
    )


def _observation_time(obx: hl7.Segment, fallbacks: Sequence[tuple[str, str]]) -> datetime:
    for where, value in (("OBX-14", _component(obx, 14)), *fallbacks):
        if value:
            try:
                return parse_hl7_timestamp(value)
            except ValueError as exc:
                raise VitalsRejected(RejectKind.INVALID, f"{where}: {exc}") from None
    raise VitalsRejected(RejectKind.INVALID, "no measurement time: OBX-14, OBR-7 and MSH-7 are all empty")


def _bed_id(message: hl7.Message) -> str:
    pv1 = next((segment for segment in message if str(segment[0]) == "PV1"), None)
    if pv1 is None:
        raise VitalsRejected(RejectKind.INVALID, "no PV1 segment: the bed (PV1-3 assigned patient location) is unknown")
    # PV1-3 (PL): point of care ^ room ^ bed; join what is present, e.g. ICU1^^07 -> ICU1-07.
    parts = [_component(pv1, 3, n) for n in (1, 2, 3)]
    bed = "-".join(part for part in parts if part)
    if not bed:
        raise VitalsRejected(RejectKind.INVALID, "PV1-3 (assigned patient location) is empty: no bed to file under")
    return bed


def _patient_id(message: hl7.Message) -> str | None:
    pid = next((segment for segment in message if str(segment[0]) == "PID"), None)
    if pid is None:
        return None
    return _component(pid, 3, 1) or None


def _number(text: str, code: ObservationCode) -> float:
    if not _NUMBER.fullmatch(text):
        raise VitalsRejected(
            RejectKind.INVALID, f"OBX {code.code}^{code.name}: value {text[:40]!r} is not a number (OBX-5)"
        )
    value = float(text)
    if not math.isfinite(value):  # pragma: no cover - the pattern admits only finite numbers
        raise VitalsRejected(RejectKind.INVALID, f"OBX {code.code}^{code.name}: value {text!r} is not finite")
    return value


def read_observations(message: hl7.Message, header: MessageHeader) -> tuple[list[Observation], set[str], int]:
    """(mapped observations, labels of unmapped codes, number of mapped ones skipped)."""
    observations: list[Observation] = []
    ignored: set[str] = set()
    skipped = 0
    obr_time = ""
    for segment in message:
        kind = str(segment[0])
        if kind == "OBR":
            obr_time = _component(segment, 7)
            continue
        if kind != "OBX":
            continue
        code, label = _match_code(segment)
        if code is None:
            if label:
                ignored.add(label)
            continue
        status = _component(segment, 11).upper()
        value_text = _component(segment, 5)
        if status in SKIPPED_RESULT_STATUSES or value_text in ("", '""'):
            skipped += 1
            continue
        unit = _unit_of(segment, code)
        value = unit.to_stored(_number(value_text, code))
        ts = _observation_time(segment, [("OBR-7", obr_time), ("MSH-7", header.message_time)])
        observations.append(Observation(code.reading, value, code, ts))
    return observations, ignored, skipped


def _oxygen_from(flows: Iterable[float], fio2s: Iterable[float]) -> bool | None:
    """Supplemental oxygen: any flow > 0 L/min or FiO2 > 21 % means yes; 0 L/min or 21 % means no."""
    evidence: list[bool] = []
    for flow in flows:
        if flow < 0 or flow > MAX_O2_FLOW_L_MIN:
            raise VitalsRejected(
                RejectKind.IMPOSSIBLE_VALUE,
                f"o2 flow {flow:g} L/min is impossible (must be 0-{MAX_O2_FLOW_L_MIN:g} L/min)",
            )
        evidence.append(flow > 0)
    for fio2 in fio2s:
        if not 0 <= fio2 <= 100:
            raise VitalsRejected(RejectKind.IMPOSSIBLE_VALUE, f"fio2 {fio2:g} % is impossible (must be 0-100 %)")
        evidence.append(fio2 > ROOM_AIR_FIO2_PERCENT)
    if not evidence:
        return None
    return any(evidence)


def _candidate(bed_id: str, patient_id: str | None, ts: datetime, group: list[Observation]) -> dict[str, Any]:
    best: dict[Reading, Observation] = {}
    for observation in group:
        current = best.get(observation.reading)
        if current is None or observation.code.rank < current.code.rank:
            best[observation.reading] = observation
    candidate: dict[str, Any] = {"bed_id": bed_id, "ts": ts, "source": SOURCE, "patient_id": patient_id}
    for reading, observation in best.items():
        if reading not in (Reading.O2_FLOW, Reading.FIO2):
            candidate[reading.value] = observation.value
    on_oxygen = _oxygen_from(
        [o.value for o in group if o.reading is Reading.O2_FLOW], [o.value for o in group if o.reading is Reading.FIO2]
    )
    if on_oxygen is not None:
        candidate["on_oxygen"] = on_oxygen
    return candidate


def read_oru(raw: bytes) -> OruContent:
    """Map one ORU^R01 to ``Vitals`` candidates; raise :class:`VitalsRejected` if it cannot be."""
    header, message = parse_message(raw)
    _require_oru_r01(header)
    return _read_oru_content(header, message)


def _require_oru_r01(header: MessageHeader) -> None:
    if (header.message_code, header.trigger_event) != ("ORU", "R01"):
        shown = f"{header.message_code}^{header.trigger_event}" if header.message_code else "none"
        raise VitalsRejected(
            RejectKind.UNSUPPORTED, f"message type {shown} (MSH-9) is not supported; this endpoint takes ORU^R01"
        )


def _read_oru_content(header: MessageHeader, message: hl7.Message) -> OruContent:
    bed_id = _bed_id(message)
    patient_id = _patient_id(message)
    try:
        observations, ignored, skipped = read_observations(message, header)
        if not observations:
            details = [f"{skipped} mapped ones had status X/D/W or no value"] if skipped else []
            if ignored:
                details.append("codes not mapped: " + ", ".join(sorted(ignored)[:5]))
            detail = f" ({'; '.join(details)})" if details else ""
            raise VitalsRejected(RejectKind.NO_OBSERVATIONS, f"no supported vital-sign observations{detail}")
        by_time: dict[datetime, list[Observation]] = {}
        for observation in observations:
            by_time.setdefault(observation.ts, []).append(observation)
        candidates = tuple(_candidate(bed_id, patient_id, ts, by_time[ts]) for ts in sorted(by_time))
    except VitalsRejected as rejection:
        rejection.bed_id = rejection.bed_id or bed_id
        raise
    return OruContent(header, bed_id, patient_id, candidates, frozenset(ignored))


# --- the whole decision --------------------------------------------------------------------


@dataclass(frozen=True)
class Hl7Decision:
    """What to do with one received HL7 message: publish ``vitals`` or dead-letter ``rejection``."""

    header: MessageHeader | None
    vitals: tuple[Vitals, ...] = ()
    rejection: VitalsRejected | None = None
    ignored_codes: frozenset[str] = frozenset()

    @property
    def bed_id(self) -> str | None:
        if self.vitals:
            return self.vitals[0].bed_id
        return self.rejection.bed_id if self.rejection else None

    def ack(self, *, now: datetime, control_id: str | None = None) -> str:
        """The ACK to send once the vitals (or the dead letter) are safely stored."""
        if self.rejection is None:
            return build_ack(self.header, AckCode.ACCEPT, now=now, control_id=control_id)
        kind = self.rejection.kind
        code = AckCode.ERROR if kind.is_content_error else AckCode.REJECT
        return build_ack(
            self.header,
            code,
            now=now,
            text=self.rejection.reason,
            error=HL7_ERROR_CODES[kind],
            control_id=control_id,
        )

    def store_failed_ack(self, *, now: datetime, control_id: str | None = None) -> str:
        """AR: the message could not be stored (Kafka unavailable); the sender should resend it."""
        return build_ack(
            self.header,
            AckCode.REJECT,
            now=now,
            text="could not store the message (message bus unavailable); resend it",
            error=STORE_FAILED_ERROR,
            control_id=control_id,
        )


def decide(raw: bytes, gate: VitalsGate, *, now: datetime) -> Hl7Decision:
    """Parse, map and admit one HL7 message. Never raises for bad input."""
    header: MessageHeader | None = None
    try:
        header, message = parse_message(raw)
        _require_oru_r01(header)
        content = _read_oru_content(header, message)
    except VitalsRejected as rejection:
        return Hl7Decision(header=header, rejection=rejection)
    try:
        vitals = tuple(gate.admit(candidate, now=now) for candidate in content.candidates)
    except VitalsRejected as rejection:
        return Hl7Decision(header=header, rejection=rejection, ignored_codes=content.ignored_codes)
    return Hl7Decision(header=header, vitals=vitals, ignored_codes=content.ignored_codes)
