"""The dashboard's pure core: what a tile says, how beds are ordered, when data is stale.

No I/O, no clock, no Streamlit: every function takes the time ``now`` it judges against, so the
rules are tested with hand-worked values (tests/unit/test_dashboard_core.py). The Streamlit
pages (:mod:`dashboard.pages`) only lay out what these functions decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

from alerts.news2 import News2, score_news2
from alerts.rules import STALE_AFTER_S
from icu.contracts import MAX_SNOOZE_S, AckAction, AlertAck, finding_present

# --- NEWS2 colour bands --------------------------------------------------------------------

Risk = Literal["low", "low-medium", "medium", "high"]

RISK_COLOURS: Final[Mapping[str, str]] = {
    # The RCP chart's colours: green (no concern), yellow (a single red parameter, urgent
    # ward review), orange (urgent response), red (emergency response).
    "low": "#2e7d32",
    "low-medium": "#f9a825",
    "medium": "#ef6c00",
    "high": "#c62828",
}
UNKNOWN_COLOUR: Final = "#9e9e9e"
"""Grey: no score, or a score from readings too old to stand for the patient now."""

POINT_COLOURS: Final[Mapping[int, str]] = {1: "#fff59d", 2: "#ffcc80", 3: "#ef9a9a"}
"""Chart shading of a NEWS2 parameter band by its points (0 points: no shading)."""

# NEWS2 bands per charted parameter as (low, high, points), half-open [low, high), from the RCP
# 2017 chart (CLINICAL.md); values between printed limits score as the band above, as in
# alerts.news2. Used to shade the patient page's charts.
NEWS2_BANDS: Final[Mapping[str, tuple[tuple[float, float, int], ...]]] = {
    "rr": ((0, 9, 3), (9, 12, 1), (12, 21, 0), (21, 25, 2), (25, 80, 3)),
    "spo2": ((50, 92, 3), (92, 94, 2), (94, 96, 1), (96, 101, 0)),
    "sbp": ((40, 91, 3), (91, 101, 2), (101, 111, 1), (111, 220, 0), (220, 260, 3)),
    "hr": ((20, 41, 3), (41, 51, 1), (51, 91, 0), (91, 111, 1), (111, 131, 2), (131, 200, 3)),
    "temp_c": ((33, 35.05, 3), (35.05, 36.05, 1), (36.05, 38.05, 0), (38.05, 39.05, 1), (39.05, 42, 2)),
}


def risk_colour(risk: str | None, *, current: bool = True) -> str:
    """The NEWS2 band's colour; grey when there is no score or it is not current."""
    if risk is None or not current:
        return UNKNOWN_COLOUR
    return RISK_COLOURS.get(risk, UNKNOWN_COLOUR)


# --- readings and their age ------------------------------------------------------------------

Freshness = Literal["live", "stale", "lost"]

CONTINUOUS: Final = ("hr", "rr", "spo2")
"""Monitored every second or so: stale after ``stale_vitals_s``."""

# Cuff pressure, temperature, oxygen and ACVPU are charted every so often and stand for the
# patient longer: the alerts rules' spans (diastolic goes with systolic).
CHARTED_STALE_S: Final[Mapping[str, float]] = {
    **{name: span for name, span in STALE_AFTER_S.items() if name not in CONTINUOUS},
    "dbp": STALE_AFTER_S["sbp"],
}


@dataclass(frozen=True)
class Reading:
    """One measurement's latest value and when it was taken (UTC)."""

    value: float | str | bool
    ts: datetime

    def age_s(self, now: datetime) -> float:
        return max(0.0, (now - self.ts).total_seconds())


def stale_after_s(measurement: str, stale_vitals_s: float) -> float:
    """How old (seconds) a reading of ``measurement`` may be and still stand for the patient now."""
    return stale_vitals_s if measurement in CONTINUOUS else CHARTED_STALE_S.get(measurement, stale_vitals_s)


def is_current(reading: Reading | None, measurement: str, now: datetime, stale_vitals_s: float) -> bool:
    return reading is not None and reading.age_s(now) <= stale_after_s(measurement, stale_vitals_s)


def vitals_freshness(last_ts: datetime | None, now: datetime, *, stale_s: float, lost_s: float) -> Freshness:
    """live: the monitor sent something within ``stale_s`` seconds; stale: within ``lost_s``;
    lost: longer ago, or never."""
    if last_ts is None:
        return "lost"
    age = (now - last_ts).total_seconds()
    if age <= stale_s:
        return "live"
    return "stale" if age <= lost_s else "lost"


CameraHealth = Literal["live", "degraded", "lost", "unknown"]


def camera_health(state: str | None, status_ts: datetime | None, now: datetime, *, stale_s: float) -> CameraHealth:
    """What the tile says about the camera. ``state`` is the latest camera-status state; a status
    older than ``stale_s`` seconds means ingest itself stopped reporting, so the camera is lost."""
    if state is None or status_ts is None:
        return "unknown"
    if (now - status_ts).total_seconds() > stale_s:
        return "lost"
    if state == "live":
        return "live"
    if state in ("stalled", "connecting"):
        return "degraded"
    return "lost"


def format_age(seconds: float | None) -> str:
    """Compact age for a glance: '4 s', '12 min', '3 h 05 min', '2 d'; '—' when unknown."""
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        hours, rest = divmod(s, 3600)
        return f"{hours} h {rest // 60:02d} min"
    return f"{s // 86400} d"


# --- alerts ---------------------------------------------------------------------------------

PRIORITY_RANK: Final[Mapping[str, int]] = {"high": 3, "medium": 2, "low": 1, "info": 0}
PRIORITY_COLOURS: Final[Mapping[str, str]] = {
    "high": "#c62828",
    "medium": "#ef6c00",
    "low": "#f9a825",
    "info": "#1565c0",
}


@dataclass(frozen=True)
class AlertRow:
    """An alert's current state (the ``alerts`` table)."""

    alert_id: uuid.UUID
    bed_id: str
    code: str
    kind: str
    priority: str
    state: str
    raised_at: datetime
    updated_at: datetime
    explanation: str
    evidence: Mapping[str, object]
    news2: int | None
    escalation_level: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    snoozed_until: datetime | None
    resolved_at: datetime | None
    version: int

    @property
    def escalated(self) -> bool:
        return self.state == "escalated" or self.escalation_level > 0

    @property
    def needs_action(self) -> bool:
        """Open or escalated: nobody has taken it yet."""
        return self.state in ("open", "escalated")


def alert_urgency(alert: AlertRow) -> tuple[int, int, int]:
    """Sort key, most urgent first when sorted ascending: unanswered before acknowledged, then
    priority, then escalation level."""
    return (0 if alert.needs_action else 1, -PRIORITY_RANK.get(alert.priority, 0), -alert.escalation_level)


def order_alerts(alerts: Iterable[AlertRow]) -> list[AlertRow]:
    """Open alerts by urgency (see :func:`alert_urgency`), oldest first among equals."""
    return sorted(alerts, key=lambda a: (*alert_urgency(a), a.raised_at, str(a.alert_id)))


def highest_alert(alerts: Iterable[AlertRow]) -> AlertRow | None:
    ordered = order_alerts(a for a in alerts if a.state != "resolved")
    return ordered[0] if ordered else None


# --- the ward tile --------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFindings:
    """The latest detection of a bed's camera: probabilities 0-1, respiration in breaths/min."""

    ts: datetime
    grimace: float
    twitch: float
    apnea: float
    resp_rate: float | None
    baseline_resp_rate: float | None
    degraded: bool = False
    # The findings the model's decision rules held present; None from producers without them
    # (then a probability of 0.5 or more counts as present).
    findings: tuple[str, ...] | None = None

    def present(self, finding: str) -> bool:
        probability: float = getattr(self, finding)
        return finding_present(finding, self.findings, probability)


@dataclass(frozen=True)
class BedSnapshot:
    """Everything the database says about one bed right now (input of :func:`build_tile`)."""

    bed_id: str
    ward: str
    label: str | None
    readings: Mapping[str, Reading]
    """Latest value per measurement: hr, rr, spo2, sbp, dbp, temp_c, on_oxygen, consciousness."""
    spo2_scale: int = 1
    last_vitals_ts: datetime | None = None
    video: VideoFindings | None = None
    camera_state: str | None = None
    camera_status_ts: datetime | None = None
    alerts: Sequence[AlertRow] = ()


@dataclass(frozen=True)
class Thresholds:
    """Staleness rules, seconds (DashboardSettings builds this)."""

    stale_vitals_s: float = 60.0
    lost_vitals_s: float = 300.0
    stale_camera_s: float = 30.0
    stale_video_s: float = 30.0


@dataclass(frozen=True)
class Tile:
    """What one bed's tile shows, decided once here."""

    bed_id: str
    ward: str
    label: str
    news2: News2 | None
    news2_current: bool
    """False when a reading the score needs is stale: the score is then shown grey, with a flag."""
    colour: str
    vitals: Freshness
    camera: CameraHealth
    video_current: bool
    findings: tuple[str, ...]
    """Video findings present in the latest current detection, e.g. ('apnea',)."""
    top_alert: AlertRow | None
    open_alerts: int
    readings: Mapping[str, Reading] = field(default_factory=dict)
    current: Mapping[str, bool] = field(default_factory=dict)
    video: VideoFindings | None = None
    last_vitals_ts: datetime | None = None

    @property
    def data_problem(self) -> bool:
        """The tile cannot be trusted as live: vitals stale or lost, or the camera not live."""
        return self.vitals != "live" or self.camera in ("lost", "degraded") or not self.video_current

    def problems(self) -> list[str]:
        out = []
        if self.vitals != "live":
            out.append(f"vitals {self.vitals.upper()}")
        if self.camera in ("lost", "degraded"):
            out.append(f"camera {'LOST' if self.camera == 'lost' else 'DEGRADED'}")
        elif self.camera == "live" and not self.video_current:
            out.append("video findings STALE")
        return out


def build_tile(bed: BedSnapshot, now: datetime, thresholds: Thresholds) -> Tile:
    """Decide a bed's tile: NEWS2 from the current readings, staleness, findings, top alert."""
    readings = dict(bed.readings)
    current = {name: is_current(r, name, now, thresholds.stale_vitals_s) for name, r in readings.items()}

    def value(name: str) -> float | None:
        reading = readings.get(name)
        return float(reading.value) if reading is not None and not isinstance(reading.value, str) else None

    news2: News2 | None = None
    if any(name in readings for name in ("hr", "rr", "spo2", "sbp", "temp_c")):
        consciousness = readings.get("consciousness")
        oxygen = readings.get("on_oxygen")
        news2 = score_news2(
            rr=value("rr"),
            spo2=value("spo2"),
            spo2_scale=2 if bed.spo2_scale == 2 else 1,
            on_oxygen=bool(oxygen.value) if oxygen is not None else None,
            sbp=value("sbp"),
            hr=value("hr"),
            consciousness=str(consciousness.value) if consciousness is not None else None,
            temp_c=value("temp_c"),
        )
    # The score stands for the patient only when every reading it used is current.
    news2_current = news2 is not None and all(current.get(name, True) for name in readings)
    vitals = vitals_freshness(
        bed.last_vitals_ts, now, stale_s=thresholds.stale_vitals_s, lost_s=thresholds.lost_vitals_s
    )
    camera = camera_health(bed.camera_state, bed.camera_status_ts, now, stale_s=thresholds.stale_camera_s)
    video_current = bed.video is not None and (now - bed.video.ts).total_seconds() <= thresholds.stale_video_s
    findings: tuple[str, ...] = ()
    if bed.video is not None and video_current:
        findings = tuple(name for name in ("apnea", "twitch", "grimace") if bed.video.present(name))
    open_alerts = [a for a in bed.alerts if a.state != "resolved"]
    return Tile(
        bed_id=bed.bed_id,
        ward=bed.ward,
        label=bed.label or bed.bed_id,
        news2=news2,
        news2_current=news2_current,
        colour=risk_colour(news2.risk if news2 else None, current=news2_current),
        vitals=vitals,
        camera=camera,
        video_current=video_current,
        findings=findings,
        top_alert=highest_alert(open_alerts),
        open_alerts=len(open_alerts),
        readings=readings,
        current=current,
        video=bed.video,
        last_vitals_ts=bed.last_vitals_ts,
    )


RISK_RANK: Final[Mapping[str, int]] = {"high": 3, "medium": 2, "low-medium": 1, "low": 0}


def tile_urgency(tile: Tile) -> tuple[int, ...]:
    """Sort key, most urgent first when sorted ascending.

    1. the highest open alert: unanswered before acknowledged, then priority, then escalation;
    2. the NEWS2 band, then the score (a stale score counts, as the last thing known);
    3. a bed whose data stopped (nobody can see that patient) before a quiet, watched one;
    4. video findings present.
    """
    alert = tile.top_alert
    alert_key = alert_urgency(alert) if alert is not None else (2, 0, 0)
    risk = RISK_RANK.get(tile.news2.risk, 0) if tile.news2 else -1
    score = tile.news2.score if tile.news2 else -1
    return (*alert_key, -risk, -score, 0 if tile.data_problem else 1, -len(tile.findings))


def order_tiles(tiles: Iterable[Tile]) -> list[Tile]:
    """Tiles by urgency (:func:`tile_urgency`), then bed id for a stable layout."""
    return sorted(tiles, key=lambda t: (*tile_urgency(t), t.bed_id))


# --- acknowledgements -----------------------------------------------------------------------


class AckError(ValueError):
    """An acknowledgement or snooze the dashboard refuses to send (the message says why)."""


def build_ack(
    alert: AlertRow,
    *,
    user: str,
    now: datetime,
    action: AckAction,
    snooze_s: int | None = None,
    reason: str | None = None,
    max_snooze_s: int = MAX_SNOOZE_S,
    ack_id: uuid.UUID | None = None,
) -> AlertAck:
    """The ``alert-acks`` message for ``user`` acknowledging or snoozing ``alert`` at ``now``.

    A snooze needs a reason and is capped at ``max_snooze_s`` seconds (the alerts service's
    ICU_ALERT_MAX_SNOOZE_S, itself at most the contract's cap): a longer request is refused
    rather than silently shortened, so the nurse knows what was sent.
    """
    user = user.strip()
    if not user:
        raise AckError("an acknowledgement needs the user's name")
    if alert.state == "resolved":
        raise AckError("the alert is already resolved")
    reason = reason.strip() if reason else None
    if action is AckAction.SNOOZE:
        cap = min(max_snooze_s, MAX_SNOOZE_S)
        if snooze_s is None or snooze_s < 1:
            raise AckError("a snooze needs a length")
        if snooze_s > cap:
            raise AckError(f"a snooze is capped at {cap // 60} min")
        if not reason:
            raise AckError("a snooze needs a reason")
    else:
        snooze_s = None
    return AlertAck(
        ack_id=ack_id or uuid.uuid4(),
        alert_id=alert.alert_id,
        bed_id=alert.bed_id,
        user=user[:200],
        ts=now,
        action=action,
        snooze_s=snooze_s,
        reason=reason[:500] if reason else None,
    )


# --- the patient page's timeline and evidence -----------------------------------------------

ALERT_FINDINGS: Final[Mapping[str, str]] = {
    # Which video finding's evidence explains an alert of this rule code (alerts/rules.py).
    "APNEA_VIDEO": "apnea",
    "SEIZURE_VIDEO": "twitch",
    "JERK_CLUSTER": "twitch",
    "PAIN_SUSTAINED": "grimace",
}
EVIDENCE_LEAD_S: Final = 600.0
"""Evidence up to this long before an alert was raised can explain it (a finding starts first)."""


@dataclass(frozen=True)
class EvidenceRef:
    """An evidence record without its image: enough to pick and fetch it."""

    ts: datetime
    finding: str
    probability: float


def evidence_for_alert(alert: AlertRow, evidence: Iterable[EvidenceRef]) -> EvidenceRef | None:
    """The evidence that explains a video alert: its finding, from ``EVIDENCE_LEAD_S`` before the
    alert was raised to its last update, the one nearest the raise. None for other alerts."""
    finding = ALERT_FINDINGS.get(alert.code) or (
        str(alert.evidence.get("finding")) if alert.evidence.get("finding") else None
    )
    if finding is None:
        return None
    candidates = [
        e
        for e in evidence
        if e.finding == finding
        and (e.ts - alert.raised_at).total_seconds() >= -EVIDENCE_LEAD_S
        and e.ts <= alert.updated_at
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda e: abs((e.ts - alert.raised_at).total_seconds()))


@dataclass(frozen=True)
class Event:
    """One line of the patient page's timeline."""

    ts: datetime
    kind: Literal["alert", "ack", "evidence", "camera"]
    text: str


def alert_event_text(code: str, priority: str, state: str, version: int, escalation_level: int) -> str:
    if version == 1:
        what = "raised"
    elif state == "escalated":
        what = f"escalated (level {escalation_level})"
    else:
        what = state
    return f"{code} ({priority}) {what}"


def build_timeline(events: Iterable[Event]) -> list[Event]:
    """Newest first; among events at the same time alerts before acks before evidence."""
    order = {"alert": 0, "ack": 1, "evidence": 2, "camera": 3}
    return sorted(events, key=lambda e: (-e.ts.timestamp(), order[e.kind], e.text))


__all__ = [
    "AckError",
    "AlertRow",
    "BedSnapshot",
    "Reading",
    "Thresholds",
    "Tile",
    "VideoFindings",
    "build_ack",
    "build_tile",
    "order_alerts",
    "order_tiles",
]
