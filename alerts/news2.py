"""NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017).

A pure function: vital signs in, a :class:`News2` out. No I/O, no clock, no settings.

The RCP chart prints integer bands (respiration rate, SpO2, blood pressure, pulse) and
one-decimal bands (temperature). Monitors send floats, so every band here is defined by its
printed upper limit: a value belongs to the first band whose upper limit it does not exceed.
A value between two printed limits therefore scores as the band above the lower limit it has
passed, e.g. respiration rate 20.5 breaths/min scores like 21 (2 points), 8.5 like 9 (1 point),
temperature 35.05 C like 35.1 (1 point), 38.02 C like 38.1 (1 point). No rounding takes place.

A parameter that is not given is not scored; the aggregate is then a lower bound and
``complete`` is false. The RCP uses the aggregate only when all seven parameters are charted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from icu.contracts import Consciousness, Vitals

Risk = Literal["low", "low-medium", "medium", "high"]
SpO2Scale = Literal[1, 2]

PARAMETERS: Final = (
    "respiration_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)
"""The seven NEWS2 parameters, in chart order; the keys of :attr:`News2.parameters`."""

RED_POINTS: Final = 3
"""Points of a single parameter that make a "red score" (low-medium risk at least)."""


class News2Error(ValueError):
    """An input NEWS2 cannot score: wrong type, not finite, or outside the physiological range."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        """The keyword argument of :func:`score_news2` at fault, e.g. ``temp_c``."""
        self.problem = problem
        """What is wrong, naming the parameter and the allowed range."""


@dataclass(frozen=True, slots=True)
class News2:
    """A NEWS2 result.

    ``parameters`` maps each scored parameter (names from :data:`PARAMETERS`) to its points;
    parameters that were not given are absent from it.
    """

    score: int
    risk: Risk
    parameters: Mapping[str, int]
    complete: bool
    red_parameters: tuple[str, ...] = field(default=())

    @property
    def red_parameter(self) -> str | None:
        """The first parameter (chart order) scoring 3, or None when none does."""
        return self.red_parameters[0] if self.red_parameters else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"score", "risk", "parameters", "complete", "red_parameters"}``."""
        return {
            "score": self.score,
            "risk": self.risk,
            "parameters": dict(self.parameters),
            "complete": self.complete,
            "red_parameters": list(self.red_parameters),
        }


# --- bands -----------------------------------------------------------------------------------
# (inclusive upper limit, points), ascending; a value above every limit scores `above`.

_Bands = tuple[tuple[float, int], ...]

_RR: Final[_Bands] = ((8, 3), (11, 1), (20, 0), (24, 2))
_RR_ABOVE: Final = 3
_SPO2_SCALE_1: Final[_Bands] = ((91, 3), (93, 2), (95, 1))
_SPO2_SCALE_2: Final[_Bands] = ((83, 3), (85, 2), (87, 1), (92, 0))
# Scale 2 above the 88-92% target: 0 on air, rising with saturation on oxygen (over-oxygenation
# risks CO2 retention in hypercapnic respiratory failure).
_SPO2_SCALE_2_ON_OXYGEN: Final[_Bands] = ((94, 1), (96, 2))
_SPO2_SCALE_2_ON_OXYGEN_ABOVE: Final = 3
_SBP: Final[_Bands] = ((90, 3), (100, 2), (110, 1), (219, 0))
_SBP_ABOVE: Final = 3
_PULSE: Final[_Bands] = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2))
_PULSE_ABOVE: Final = 3
_TEMP: Final[_Bands] = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1))
_TEMP_ABOVE: Final = 2
_OXYGEN_POINTS: Final = 2

# Physiologically possible ranges, inclusive; the same as the vitals contract's except the
# temperature floor (20 C, deep accidental hypothermia is survivable below the contract's 25 C).
_RANGES: Final[dict[str, tuple[str, float, float, str]]] = {
    "rr": ("respiration rate", 0, 100, "breaths/min"),
    "spo2": ("SpO2", 0, 100, "%"),
    "sbp": ("systolic blood pressure", 0, 300, "mmHg"),
    "hr": ("pulse", 0, 300, "beats/min"),
    "temp_c": ("temperature", 20, 45, "degrees C"),
}


def _band(value: float, bands: _Bands, above: int) -> int:
    for upper, points in bands:
        if value <= upper:
            return points
    return above


def _measurement(argument: str, value: object) -> float | None:
    if value is None:
        return None
    label, low, high, unit = _RANGES[argument]
    # bool is an int subclass: True must not pass for 1 breath/min.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise News2Error(argument, f"{label} must be a number in {unit}, got {value!r}")
    if not math.isfinite(value):
        raise News2Error(argument, f"{label} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise News2Error(argument, f"{label} must be within {low:g}-{high:g} {unit}, got {value:g}")
    return float(value)


def _consciousness(value: object) -> Consciousness | None:
    if value is None or isinstance(value, Consciousness):
        return value
    letters = ", ".join(c.value for c in Consciousness)
    if isinstance(value, str):
        try:
            return Consciousness(value.strip().upper())
        except ValueError:
            pass
    raise News2Error("consciousness", f"consciousness must be one of {letters} (ACVPU), got {value!r}")


def _spo2_points(spo2: float, scale: SpO2Scale, on_oxygen: bool | None) -> int:
    if scale == 1:
        return _band(spo2, _SPO2_SCALE_1, 0)
    if spo2 <= _SPO2_SCALE_2[-1][0]:
        return _band(spo2, _SPO2_SCALE_2, 0)
    if on_oxygen is None:
        # 0 or up to 3 points depending on oxygen: guessing either way would misreport risk.
        raise News2Error("on_oxygen", f"SpO2 {spo2:g}% on scale 2 scores by air or oxygen: say whether oxygen is given")
    if not on_oxygen:
        return 0
    return _band(spo2, _SPO2_SCALE_2_ON_OXYGEN, _SPO2_SCALE_2_ON_OXYGEN_ABOVE)


def _risk(score: int, red: bool) -> Risk:
    if score >= 7:
        return "high"
    if score >= 5:
        return "medium"
    return "low-medium" if red else "low"


def score_news2(
    *,
    rr: float | None = None,
    spo2: float | None = None,
    spo2_scale: SpO2Scale = 1,
    on_oxygen: bool | None = None,
    sbp: float | None = None,
    hr: float | None = None,
    consciousness: Consciousness | str | None = None,
    temp_c: float | None = None,
) -> News2:
    """Score vital signs with NEWS2 (RCP 2017).

    Arguments take the vitals contract's names and units: ``rr`` respiration rate in
    breaths/min, ``spo2`` peripheral oxygen saturation in %, ``spo2_scale`` 1 or 2 (2 only when
    a clinician prescribed the 88-92% target, e.g. hypercapnic respiratory failure),
    ``on_oxygen`` supplemental oxygen in use (False = air), ``sbp`` systolic blood pressure in
    mmHg, ``hr`` pulse in beats/min, ``consciousness`` ACVPU (a :class:`Consciousness` or its
    letter, any case; C is new confusion), ``temp_c`` temperature in degrees Celsius.

    None means not measured: that parameter is not scored and the result is not ``complete``.
    Floats between the chart's printed limits score as the band above (see the module docstring).

    Risk: aggregate 7 or more high, 5-6 medium, otherwise low-medium when any single parameter
    scores 3, else low.

    Raises :class:`News2Error` for non-numbers, non-finite values, values outside the
    physiological range (rr 0-100, spo2 0-100, sbp 0-300, hr 0-300, temp_c 20-45), a scale other
    than 1 or 2, an unknown consciousness letter, and SpO2 above 92% on scale 2 without
    ``on_oxygen`` (its points depend on it).
    """
    rr_value = _measurement("rr", rr)
    spo2_value = _measurement("spo2", spo2)
    sbp_value = _measurement("sbp", sbp)
    hr_value = _measurement("hr", hr)
    temp_value = _measurement("temp_c", temp_c)
    acvpu = _consciousness(consciousness)
    if isinstance(spo2_scale, bool) or spo2_scale not in (1, 2):
        raise News2Error("spo2_scale", f"SpO2 scale must be 1 or 2, got {spo2_scale!r}")
    if on_oxygen is not None and not isinstance(on_oxygen, bool):
        raise News2Error("on_oxygen", f"on_oxygen must be true, false or absent, got {on_oxygen!r}")

    points: dict[str, int] = {}
    if rr_value is not None:
        points["respiration_rate"] = _band(rr_value, _RR, _RR_ABOVE)
    if spo2_value is not None:
        points["spo2"] = _spo2_points(spo2_value, spo2_scale, on_oxygen)
    if on_oxygen is not None:
        points["air_or_oxygen"] = _OXYGEN_POINTS if on_oxygen else 0
    if sbp_value is not None:
        points["systolic_bp"] = _band(sbp_value, _SBP, _SBP_ABOVE)
    if hr_value is not None:
        points["pulse"] = _band(hr_value, _PULSE, _PULSE_ABOVE)
    if acvpu is not None:
        points["consciousness"] = 0 if acvpu is Consciousness.ALERT else RED_POINTS
    if temp_value is not None:
        points["temperature"] = _band(temp_value, _TEMP, _TEMP_ABOVE)

    score = sum(points.values())
    red = tuple(name for name, value in points.items() if value == RED_POINTS)
    return News2(
        score=score,
        risk=_risk(score, bool(red)),
        parameters=MappingProxyType(points),
        complete=len(points) == len(PARAMETERS),
        red_parameters=red,
    )


def score_vitals(vitals: Vitals) -> News2:
    """NEWS2 of one vitals message; its absent measurements are not scored."""
    return score_news2(
        rr=vitals.rr,
        spo2=vitals.spo2,
        spo2_scale=vitals.spo2_scale,
        on_oxygen=vitals.on_oxygen,
        sbp=vitals.sbp,
        hr=vitals.hr,
        consciousness=vitals.consciousness,
        temp_c=vitals.temp_c,
    )
