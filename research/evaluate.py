"""`icu eval alerts`: the alerts of a recording (or of a replay of it) against its ground truth.

Pure: no Kafka. Definitions (CLINICAL.md, "Event latency" and alarm burden):

- **Truth onsets**: every annotated event with ``alert_expected`` true. An event matches an
  alert of its bed whose code is in the event type's family (:data:`FAMILIES`, or the event's
  own ``codes``) raised between the onset and ``grace_s`` after the event's end; an alert of the
  family already open at the onset matches with time 0.
- **Time to alert**: first matching raise minus onset, seconds; no match within the window is a
  miss.
- **False alerts**: physiological raises (an alert's first version) outside every expected
  event of their bed (onset to end + ``grace_s``, any code); technical alerts (camera lost,
  stale vitals, poor video) are counted apart. Per patient-hour: over the hours each bed was
  watched (first to last input record).
- **Alerts per bed per day**: every raise, physiological and technical, per bed-day watched
  (the burden figure of Drew 2014's 187 alarms per bed per day); escalations alongside.

Only alerts raised within the recording's time range count: a replay's worker keeps running
after the last record and its clock then follows the wall, which the recording did not see.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icu.contracts import Alert, AlertKind, AlertState, Topic, UtcDatetime
from research import ResearchError
from research.store import Recording

FAMILIES: Mapping[str, tuple[str, ...]] = {
    "apnea": ("APNEA_VIDEO",),
    "seizure": ("SEIZURE_VIDEO", "JERK_CLUSTER"),
    "myoclonus": ("JERK_CLUSTER", "SEIZURE_VIDEO"),
    "pain": ("PAIN_SUSTAINED",),
    "respiratory_deterioration": ("NEWS2", "DETERIORATION_TREND"),
    "sepsis": ("NEWS2", "DETERIORATION_TREND"),
    "irregular_breathing": ("APNEA_VIDEO", "NEWS2", "DETERIORATION_TREND"),
}
"""Alert codes that count as catching each simulator episode kind (annotation ``type``)."""


class Annotation(BaseModel):
    """One line of an annotation file (JSON Lines): a true event at a bed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    bed_id: str
    onset: UtcDatetime
    end: UtcDatetime
    type: str = Field(description="Event kind, e.g. apnea, seizure, sepsis (simulator episode kinds).")
    alert_expected: bool = True
    codes: tuple[str, ...] | None = Field(default=None, description="Alert codes that catch it; default by type.")

    def family(self) -> tuple[str, ...]:
        return self.codes if self.codes is not None else FAMILIES.get(self.type, ())


def load_annotations(path: Path) -> list[Annotation]:
    """Annotations from JSON Lines: either one event per line (``bed_id``, ``onset``, ``end``,
    ``type``, optional ``alert_expected`` and ``codes``), or the simulator's truth lines (one bed
    run per line with ``events`` carrying ``onset_ts``/``end_ts``), or both mixed."""
    out: list[Annotation] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if "events" in data:
                    for event in data["events"]:
                        out.append(Annotation(bed_id=data["bed_id"], onset=event["onset_ts"], end=event["end_ts"],
                                              type=event["type"],
                                              alert_expected=event.get("alert_expected", True)))  # fmt: skip
                else:
                    out.append(Annotation.model_validate(data))
            except (json.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
                raise ResearchError(f"{path}:{number}: not an annotation ({exc})") from None
    return out


@dataclass
class Raise:
    """One alert (all its versions folded): when it was raised and how it went."""

    alert_id: str
    bed_id: str
    code: str
    kind: AlertKind
    priority: str  # highest priority it reached
    raised_at: datetime
    resolved_at: datetime | None = None
    escalations: int = 0
    versions: int = 0


_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3}


def fold_alerts(versions: Iterable[Alert]) -> list[Raise]:
    """Alert versions (any order, duplicates allowed) folded into one :class:`Raise` per alert."""
    raises: dict[str, Raise] = {}
    seen: set[tuple[str, int]] = set()
    for alert in versions:
        key = (str(alert.alert_id), alert.version)
        if key in seen:
            continue
        seen.add(key)
        r = raises.get(key[0])
        if r is None:
            r = raises[key[0]] = Raise(alert_id=key[0], bed_id=alert.bed_id, code=alert.code, kind=alert.kind,
                                       priority=alert.priority.value, raised_at=alert.raised_at)  # fmt: skip
        r.versions += 1
        if _RANK[alert.priority.value] > _RANK[r.priority]:
            r.priority = alert.priority.value
        if alert.state is AlertState.ESCALATED:
            r.escalations += 1
        if alert.state is AlertState.RESOLVED:
            r.resolved_at = alert.resolved_at
    return sorted(raises.values(), key=lambda r: (r.raised_at, r.bed_id, r.code))


@dataclass
class OnsetResult:
    bed_id: str
    type: str
    onset: datetime
    end: datetime
    detected_by: str | None = None
    time_to_alert_s: float | None = None


@dataclass
class Evaluation:
    onsets: list[OnsetResult]
    raises: list[Raise]
    false_raises: list[Raise]
    patient_hours: float
    beds: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        detected = [o for o in self.onsets if o.time_to_alert_s is not None]
        times = [o.time_to_alert_s for o in detected if o.time_to_alert_s is not None]
        physiological = [r for r in self.raises if r.kind is AlertKind.PHYSIOLOGICAL]
        technical = [r for r in self.raises if r.kind is AlertKind.TECHNICAL]
        bed_days = self.patient_hours / 24.0
        per_family: dict[str, Any] = {}
        for kind in sorted({o.type for o in self.onsets}):
            of_kind = [o for o in self.onsets if o.type == kind]
            found = [o.time_to_alert_s for o in of_kind if o.time_to_alert_s is not None]
            per_family[kind] = {
                "onsets": len(of_kind),
                "detected": len(found),
                "missed": len(of_kind) - len(found),
                "median_time_to_alert_s": _round(statistics.median(found)) if found else None,
                "max_time_to_alert_s": _round(max(found)) if found else None,
                "codes": sorted({o.detected_by for o in of_kind if o.detected_by}),
            }
        return {
            "beds": self.beds,
            "patient_hours": _round(self.patient_hours),
            "onsets": len(self.onsets),
            "detected": len(detected),
            "missed": len(self.onsets) - len(detected),
            "sensitivity": _round(len(detected) / len(self.onsets)) if self.onsets else None,
            "median_time_to_alert_s": _round(statistics.median(times)) if times else None,
            "p90_time_to_alert_s": _round(_quantile(times, 0.9)) if times else None,
            "alerts": len(self.raises),
            "physiological_alerts": len(physiological),
            "technical_alerts": len(technical),
            "false_alerts": len(self.false_raises),
            "false_alerts_per_patient_hour": _round(len(self.false_raises) / self.patient_hours)
            if self.patient_hours
            else None,
            "alerts_per_bed_per_day": _round(len(self.raises) / bed_days) if bed_days else None,
            "physiological_alerts_per_bed_per_day": _round(len(physiological) / bed_days) if bed_days else None,
            "escalations_per_bed_per_day": _round(sum(r.escalations for r in self.raises) / bed_days)
            if bed_days
            else None,
            "by_type": per_family,
            "onset_detail": [
                {
                    "bed_id": o.bed_id,
                    "type": o.type,
                    "onset": o.onset.isoformat(),
                    "detected_by": o.detected_by,
                    "time_to_alert_s": _round(o.time_to_alert_s),
                }
                for o in self.onsets
            ],
            "false_alert_detail": [
                {"bed_id": r.bed_id, "code": r.code, "priority": r.priority, "raised_at": r.raised_at.isoformat()}
                for r in self.false_raises
            ],
            **self.extra,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def evaluate_alerts(
    annotations: Sequence[Annotation],
    raises: Sequence[Raise],
    bed_hours: Mapping[str, float],
    *,
    window: tuple[datetime, datetime] | None = None,
    grace_s: float = 120.0,
) -> Evaluation:
    """Match ``raises`` to the expected onsets of ``annotations`` (see the module doc).

    ``bed_hours``: hours each bed was watched; beds absent from it are not scored. ``window``:
    only alerts raised within it count, and only onsets before its end (the recording's time
    range)."""
    beds = set(bed_hours)
    kept = [r for r in raises if r.bed_id in beds and (window is None or window[0] <= r.raised_at <= window[1])]
    grace = timedelta(seconds=grace_s)
    expected = sorted(
        (a for a in annotations if a.alert_expected and a.bed_id in beds and (window is None or a.onset < window[1])),
        key=lambda a: (a.onset, a.bed_id),
    )
    onsets: list[OnsetResult] = []
    for a in expected:
        result = OnsetResult(bed_id=a.bed_id, type=a.type, onset=a.onset, end=a.end)
        family = a.family()
        candidates = [r for r in kept if r.bed_id == a.bed_id and r.code in family]
        open_at_onset = [r for r in candidates if r.raised_at <= a.onset and (r.resolved_at is None or
                                                                               r.resolved_at > a.onset)]  # fmt: skip
        later = [r for r in candidates if a.onset <= r.raised_at <= a.end + grace]
        if open_at_onset:
            result.detected_by, result.time_to_alert_s = open_at_onset[0].code, 0.0
        elif later:
            first = min(later, key=lambda r: r.raised_at)
            result.detected_by = first.code
            result.time_to_alert_s = (first.raised_at - a.onset).total_seconds()
        onsets.append(result)

    def is_true(r: Raise) -> bool:
        # Any code counts during a real deterioration (a seizure's tachycardia raising NEWS2 is
        # not a false alarm); only matching codes count for time to alert.
        return any(a.bed_id == r.bed_id and a.onset <= r.raised_at <= a.end + grace for a in expected)

    false = [r for r in kept if r.kind is AlertKind.PHYSIOLOGICAL and not is_true(r)]
    return Evaluation(onsets=onsets, raises=kept, false_raises=false, patient_hours=sum(bed_hours.values()),
                      beds=len(bed_hours))  # fmt: skip


def core_alerts(recording: Recording) -> list[Alert]:
    """The alert versions the alerts core (:class:`alerts.processor.AlertProcessor`, default
    settings) raises on the recording's vitals, detections and camera status, no Kafka: what a
    replay through `icu alerts` should give, without the worker's wall-clock ticks."""
    from alerts.processor import AlertProcessor, BedRecord
    from icu.contracts import CameraStatus, Detection, Vitals

    processor = AlertProcessor()
    records: dict[str, BedRecord] = {}
    out: list[Alert] = []
    for event in recording.iter_events([Topic.VITALS, Topic.DETECTIONS, Topic.CAMERA_STATUS]):
        message = event.message
        if isinstance(message, Vitals | Detection | CameraStatus):
            record = records.setdefault(message.bed_id, BedRecord.new(message.bed_id))
            out += processor.on_message(record, message, wall=event.t)
    return out


def evaluate_recording(
    recording: Recording,
    *,
    replay: Recording | None = None,
    annotations: Path | None = None,
    grace_s: float = 120.0,
    core: bool = False,
) -> Evaluation:
    """Score the alerts of ``replay`` (a capture of a replay of ``recording``, times mapped back
    by its shift), or with ``core`` those :func:`core_alerts` computes, or else the alerts
    recorded in ``recording`` itself, against ``annotations`` or the recording's own truth."""
    manifest = recording.manifest
    truth = annotations or recording.truth_path()
    if truth is None:
        raise ResearchError(f"{recording.folder} has no ground truth; give an annotation file")
    source = replay or recording
    if replay is not None:
        info = replay.manifest.replay
        if info is None:
            raise ResearchError(f"{replay.folder} is not a capture of a replay (its manifest has no 'replay')")
        if info.source_id != manifest.id:
            raise ResearchError(f"{replay.folder} replayed recording {info.source_id}, not {manifest.id}")
        shift = timedelta(seconds=info.shift_s)
    else:
        shift = timedelta(0)
    if core:
        versions = core_alerts(recording)
    else:
        versions = [e.message for e in source.iter_topic(Topic.ALERTS) if isinstance(e.message, Alert)]
    raises = fold_alerts(versions)
    for r in raises:
        r.raised_at -= shift
        if r.resolved_at is not None:
            r.resolved_at -= shift
    bed_hours = {b.bed_id: (b.end - b.start).total_seconds() / 3600 for b in manifest.beds}
    window = (manifest.start, manifest.end) if manifest.start and manifest.end else None
    result = evaluate_alerts(load_annotations(truth), raises, bed_hours, window=window, grace_s=grace_s)
    result.extra = {"recording": manifest.id, "replay": None if replay is None else replay.manifest.id,
                    "alerts_from": "core" if core else "replay" if replay is not None else "recording",
                    "grace_s": grace_s, "alert_versions": len(versions)}  # fmt: skip
    return result


def table(summary: Mapping[str, Any]) -> str:
    """The summary as a readable text table."""
    rows = [
        ("beds / patient-hours", f"{summary['beds']} / {summary['patient_hours']}"),
        ("expected onsets", str(summary["onsets"])),
        ("detected / missed", f"{summary['detected']} / {summary['missed']}"),
        ("median time to alert (s)", _fmt(summary["median_time_to_alert_s"])),
        ("p90 time to alert (s)", _fmt(summary["p90_time_to_alert_s"])),
        ("false alerts", str(summary["false_alerts"])),
        ("false alerts / patient-hour", _fmt(summary["false_alerts_per_patient_hour"])),
        ("alerts / bed / day (all)", _fmt(summary["alerts_per_bed_per_day"])),
        ("  physiological", _fmt(summary["physiological_alerts_per_bed_per_day"])),
        ("escalations / bed / day", _fmt(summary["escalations_per_bed_per_day"])),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(f"{'event type':<26} {'onsets':>6} {'found':>6} {'median s':>9} {'max s':>7}  codes")
    for kind, s in summary["by_type"].items():
        lines.append(f"{kind:<26} {s['onsets']:>6} {s['detected']:>6} {_fmt(s['median_time_to_alert_s']):>9} "
                     f"{_fmt(s['max_time_to_alert_s']):>7}  {','.join(s['codes'])}")  # fmt: skip
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
