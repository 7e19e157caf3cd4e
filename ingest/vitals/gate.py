"""The one admission check every vitals message passes, whatever door it came in by.

HL7 v2 observations (after mapping) and JSON objects both end up here as a plain mapping of
``Vitals`` fields, so a reading is judged by the same rules whether a monitor or a script sent
it: the ``vitals`` contract (types, ranges, the diastolic-above-systolic check), a bed this
deployment monitors (``ICU_BEDS``), and a timestamp that is not in the future beyond the
allowed clock skew. A refusal is a :class:`VitalsRejected` whose ``reason`` names the field and
the value, because that text goes back to the sender (MSA-3 / the 422 body) and onto the
dead-letter topic, where a person has to act on it.

Pure: no I/O, no clock of its own (``now`` is passed in), no logging.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import annotated_types
from pydantic import ValidationError

from icu.contracts import Vitals
from icu.settings import BED_ID_PATTERN, BedSettings

MEASUREMENT_UNITS: Final[Mapping[str, str]] = {
    "hr": "beats/min",
    "rr": "breaths/min",
    "spo2": "%",
    "sbp": "mmHg",
    "dbp": "mmHg",
    "map": "mmHg",
    "temp_c": "°C",
}
"""The unit each numeric ``Vitals`` field is stored in (what reasons quote)."""


def _contract_bounds() -> dict[str, tuple[float, float]]:
    # Read the ranges from the contract itself so the gate's wording never drifts from the
    # limits actually enforced.
    bounds: dict[str, tuple[float, float]] = {}
    for name in MEASUREMENT_UNITS:
        low = high = None
        for constraint in Vitals.model_fields[name].metadata:
            if isinstance(constraint, annotated_types.Ge):
                low = constraint.ge
            elif isinstance(constraint, annotated_types.Le):
                high = constraint.le
        if low is not None and high is not None:
            bounds[name] = (float(low), float(high))  # type: ignore[arg-type]
    return bounds


CONTRACT_BOUNDS: Final = _contract_bounds()
"""Field -> (lowest, highest) value the ``vitals`` contract accepts, in MEASUREMENT_UNITS."""

_BOUND_ERRORS: Final = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})


class RejectKind(StrEnum):
    """Why a vitals message was refused. Decides the HL7 ACK code and the dead letter's error_type."""

    UNPARSEABLE = "unparseable"
    """Not HL7 v2 / not JSON at all, or an MLLP frame that cannot be read."""
    UNSUPPORTED = "unsupported"
    """Well-formed, but not something this endpoint takes (e.g. an ADT instead of ORU^R01)."""
    INVALID = "invalid"
    """Breaks the vitals contract or HL7 field rules (missing field, bad type, bad timestamp)."""
    IMPOSSIBLE_VALUE = "impossible-value"
    UNKNOWN_UNIT = "unknown-unit"
    UNKNOWN_BED = "unknown-bed"
    FUTURE_TIMESTAMP = "future-timestamp"
    NO_OBSERVATIONS = "no-observations"
    TOO_LARGE = "too-large"

    @property
    def error_type(self) -> str:
        """The dead letter's ``error_type``: 'unparseable', 'unsupported', or 'contract' for content."""
        if self in (RejectKind.UNPARSEABLE, RejectKind.TOO_LARGE):
            return "unparseable"
        if self is RejectKind.UNSUPPORTED:
            return "unsupported"
        return "contract"

    @property
    def is_content_error(self) -> bool:
        """True for problems in what the message says (HL7 AE); False for its form (HL7 AR)."""
        return self.error_type == "contract"


class VitalsRejected(Exception):
    """A vitals message refused for good: resending it unchanged cannot succeed."""

    def __init__(self, kind: RejectKind, reason: str, *, bed_id: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.bed_id = bed_id


def _describe_input(value: object) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return type(value).__name__


def explain_validation_error(exc: ValidationError, limit: int = 3) -> tuple[RejectKind, str]:
    """Turn pydantic's errors into (kind, one-line reason) naming each field and value."""
    errors = exc.errors(include_url=False)
    kind = RejectKind.IMPOSSIBLE_VALUE
    parts = []
    for error in errors:
        loc = [str(part) for part in error["loc"]]
        field = loc[0] if loc else ""
        value = error.get("input")
        if error["type"] in _BOUND_ERRORS and field in CONTRACT_BOUNDS and len(loc) == 1:
            low, high = CONTRACT_BOUNDS[field]
            unit = MEASUREMENT_UNITS[field]
            parts.append(f"{field} {_describe_input(value)} {unit} is impossible (must be {low:g}-{high:g} {unit})")
            continue
        if not loc:
            # A whole-model rule (diastolic above systolic, no measurement at all).
            parts.append(error["msg"].removeprefix("Value error, "))
            if "diastolic" not in error["msg"]:
                kind = RejectKind.INVALID
            continue
        kind = RejectKind.INVALID
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(loc)
        if error["type"] == "missing":
            parts.append(f"{where} is missing")
        else:
            parts.append(f"{where}: {message} (got {_describe_input(value)})")
    shown = parts[:limit]
    if len(parts) > limit:
        shown.append(f"and {len(parts) - limit} more")
    return kind, "; ".join(shown)


def _bed_hint(candidate: Mapping[str, Any]) -> str | None:
    bed = candidate.get("bed_id")
    return bed if isinstance(bed, str) and BED_ID_PATTERN.match(bed) else None


@dataclass(frozen=True)
class VitalsGate:
    """Admission rules for vitals entering the pipeline at the edge.

    ``max_future_skew_s`` is how far (seconds) a measurement time may be ahead of this
    receiver's clock: monitors' clocks drift, but a reading from tomorrow is a wrong clock or
    a wrong timezone, and would sort after every real reading of that bed.
    """

    beds: BedSettings
    max_future_skew_s: float = 300.0

    def admit(self, candidate: Mapping[str, Any], *, now: datetime, wire: bool = False) -> Vitals:
        """Validate one message's fields into :class:`Vitals` or raise :class:`VitalsRejected`.

        ``wire=True`` for bytes from a sender (JSON), which must state ``schema_version``.
        """
        bed_hint = _bed_hint(candidate)
        try:
            vitals = Vitals.model_validate(candidate, context={"wire": wire})
        except ValidationError as exc:
            kind, reason = explain_validation_error(exc)
            raise VitalsRejected(kind, reason, bed_id=bed_hint) from None
        if not self.beds.is_known_bed(vitals.bed_id):
            raise VitalsRejected(
                RejectKind.UNKNOWN_BED,
                f"bed {vitals.bed_id!r} is not one this deployment monitors (ICU_BEDS)",
                bed_id=vitals.bed_id,
            )
        ahead_s = (vitals.ts - now).total_seconds()
        if ahead_s > self.max_future_skew_s:
            raise VitalsRejected(
                RejectKind.FUTURE_TIMESTAMP,
                f"ts {vitals.ts.isoformat()} is {ahead_s:.0f} s ahead of the receiver's clock "
                f"(limit {self.max_future_skew_s:g} s); check the sender's clock and timezone",
                bed_id=vitals.bed_id,
            )
        return vitals

    def latest_allowed(self, now: datetime) -> datetime:
        """The latest measurement time accepted at ``now``."""
        return now + timedelta(seconds=self.max_future_skew_s)


# --- JSON bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonItem:
    """One vitals object of a JSON body, judged.

    ``index`` is its position in the body's array (0 for a body holding a single object;
    None when the body could not be split into items at all). ``raw`` is what a dead letter
    keeps: the whole body for a single object or garbage, the item re-serialised for arrays.
    """

    index: int | None
    raw: bytes
    vitals: Vitals | None = None
    rejection: VitalsRejected | None = None


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def split_json_body(body: bytes) -> list[tuple[int | None, bytes, object]]:
    """(index, raw bytes, parsed value) per item of a JSON body: one object or an array of them.

    Raises :class:`VitalsRejected` (UNPARSEABLE) when the body is not JSON or is neither an
    object nor an array, and (INVALID) for an empty array.
    """
    try:
        parsed = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise VitalsRejected(RejectKind.UNPARSEABLE, f"body is not valid JSON ({exc})") from None
    if isinstance(parsed, dict):
        return [(0, body, parsed)]
    if isinstance(parsed, list):
        if not parsed:
            raise VitalsRejected(RejectKind.INVALID, "the array holds no vitals")
        return [
            (index, json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode(), item)
            for index, item in enumerate(parsed)
        ]
    raise VitalsRejected(
        RejectKind.UNPARSEABLE, f"body is a JSON {type(parsed).__name__}; expected a vitals object or an array of them"
    )


def judge_json_body(gate: VitalsGate, body: bytes, *, now: datetime) -> list[JsonItem]:
    """Every item of a JSON body with its verdict; never raises for bad input."""
    try:
        split = split_json_body(body)
    except VitalsRejected as rejection:
        return [JsonItem(index=None, raw=body, rejection=rejection)]
    items = []
    for index, raw, value in split:
        if not isinstance(value, dict):
            not_object = VitalsRejected(
                RejectKind.INVALID, f"item {index} is a JSON {type(value).__name__}, not a vitals object"
            )
            items.append(JsonItem(index=index, raw=raw, rejection=not_object))
            continue
        try:
            items.append(JsonItem(index=index, raw=raw, vitals=gate.admit(value, now=now, wire=True)))
        except VitalsRejected as refused:
            items.append(JsonItem(index=index, raw=raw, rejection=refused))
    return items
