"""The alert lifecycle: conditions and acknowledgements in, alert versions out. Pure.

One alert per bed and rule at a time. Its states:

- **open**: raised when its rule's condition starts to hold.
- **escalated**: still open and unacknowledged ``escalate_after_s[priority]`` after it was raised
  (or last escalated); the level rises each time, up to ``max_escalation``.
- **acknowledged**: a clinician acknowledged it (or snoozed it, for at most ``max_snooze_s``).
  It does not escalate while acknowledged. A snooze that runs out while the condition still holds
  opens the alert again, and so does a rise in priority: what was acknowledged is no longer what
  is happening.
- **resolved**: the condition stayed clear for ``hold_s`` (hysteresis: a value hovering at a
  threshold does not raise, resolve and raise again). A later recurrence is a new alert.

Every change is a new version (alert id + version, so consumers upsert). A falling priority makes
no version: the alert keeps the highest priority it reached until it resolves. Alert ids are
derived from bed, rule and raise time, so a worker that reprocesses events after a crash
re-creates the same ids and versions instead of new alerts.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from alerts.rules import Condition
from icu.contracts import AckAction, Alert, AlertAck, AlertKind, AlertPriority, AlertState

ALERT_NAMESPACE = uuid.UUID("6f0d3c0e-5c1a-4c53-9a57-1c2f0b7a9e11")
RANK = {AlertPriority.INFO: 0, AlertPriority.LOW: 1, AlertPriority.MEDIUM: 2, AlertPriority.HIGH: 3}


@dataclass(frozen=True)
class LifecycleSettings:
    hold_s: float = 60.0
    escalate_after_s: dict[str, float] = field(
        default_factory=lambda: {"high": 30.0, "medium": 120.0, "low": 600.0, "info": 3600.0}
    )
    max_escalation: int = 3
    max_snooze_s: int = 1800


@dataclass
class OpenAlert:
    """An alert that is not resolved, as the bed's state keeps it (JSON-serialisable)."""

    alert_id: str
    code: str
    kind: str
    priority: str
    state: str
    version: int
    raised_at: float
    updated_at: float
    explanation: str
    evidence: dict[str, Any]
    news2: int | None
    escalate_at: float
    escalation_level: int = 0
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    snoozed_until: float | None = None
    clear_since: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dt(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def to_contract(record: OpenAlert, bed_id: str, *, resolved_at: float | None = None) -> Alert:
    return Alert(
        bed_id=bed_id,
        alert_id=uuid.UUID(record.alert_id),
        version=record.version,
        code=record.code,
        kind=AlertKind(record.kind),
        priority=AlertPriority(record.priority),
        state=AlertState(record.state),
        raised_at=datetime.fromtimestamp(record.raised_at, UTC),
        updated_at=datetime.fromtimestamp(record.updated_at, UTC),
        explanation=record.explanation,
        evidence=record.evidence,
        news2=record.news2,
        escalation_level=record.escalation_level,
        acknowledged_by=record.acknowledged_by,
        acknowledged_at=_dt(record.acknowledged_at),
        snoozed_until=_dt(record.snoozed_until),
        resolved_at=_dt(resolved_at),
    )


def _bump(record: OpenAlert, now: float, state: AlertState) -> None:
    record.version += 1
    record.state = state.value
    record.updated_at = max(now, record.updated_at)


def _describe(record: OpenAlert, condition: Condition) -> None:
    record.explanation, record.evidence, record.news2 = condition.explanation, condition.evidence, condition.news2


def _delay(settings: LifecycleSettings, priority: str) -> float:
    return settings.escalate_after_s.get(priority, 600.0)


def step(
    bed_id: str, alerts: dict[str, OpenAlert], conditions: list[Condition], now: float, settings: LifecycleSettings
) -> list[Alert]:
    """Advance the bed's alerts (``alerts``: rule code -> open alert, changed in place) to
    ``now`` given the conditions that hold; returns the new versions, oldest first."""
    out: list[Alert] = []
    active = {c.code: c for c in conditions}
    for code, condition in active.items():
        record = alerts.get(code)
        if record is None:
            record = OpenAlert(
                alert_id=str(uuid.uuid5(ALERT_NAMESPACE, f"{bed_id}/{code}/{now:.3f}")),
                code=code,
                kind=condition.kind.value,
                priority=condition.priority.value,
                state=AlertState.OPEN.value,
                version=1,
                raised_at=now,
                updated_at=now,
                explanation=condition.explanation,
                evidence=condition.evidence,
                news2=condition.news2,
                escalate_at=now + _delay(settings, condition.priority.value),
            )
            alerts[code] = record
            out.append(to_contract(record, bed_id))
            continue
        record.clear_since = None
        if RANK[condition.priority] > RANK[AlertPriority(record.priority)]:
            record.priority = condition.priority.value
            _describe(record, condition)
            record.escalate_at = now + _delay(settings, record.priority)
            record.snoozed_until = None
            _bump(record, now, AlertState.OPEN)  # a worse condition than the one acknowledged
            out.append(to_contract(record, bed_id))
    for code, record in list(alerts.items()):
        holding = active.get(code)
        if holding is None:
            if record.clear_since is None:
                record.clear_since = now
            if now - record.clear_since >= settings.hold_s:
                _bump(record, now, AlertState.RESOLVED)
                record.explanation = f"Resolved: clear for {settings.hold_s:.0f} s. Was: {record.explanation}"[:2000]
                out.append(to_contract(record, bed_id, resolved_at=now))
                del alerts[code]
            continue
        if record.state == AlertState.ACKNOWLEDGED.value:
            if record.snoozed_until is not None and now >= record.snoozed_until:
                record.snoozed_until = None
                record.escalate_at = now + _delay(settings, record.priority)
                _describe(record, holding)
                record.explanation = f"Snooze ended, still present: {holding.explanation}"[:2000]
                _bump(record, now, AlertState.OPEN)
                out.append(to_contract(record, bed_id))
            continue
        if now >= record.escalate_at and record.escalation_level < settings.max_escalation:
            record.escalation_level += 1
            record.escalate_at = now + _delay(settings, record.priority)
            _describe(record, holding)
            _bump(record, now, AlertState.ESCALATED)
            out.append(to_contract(record, bed_id))
    return out


def acknowledge(
    bed_id: str, alerts: dict[str, OpenAlert], ack: AlertAck, now: float, settings: LifecycleSettings
) -> tuple[list[Alert], str | None]:
    """Apply an acknowledgement or snooze; returns (new versions, why nothing changed or None)."""
    record = next((r for r in alerts.values() if r.alert_id == str(ack.alert_id)), None)
    if record is None:
        return [], "no such open alert on this bed (already resolved, or another bed's)"
    record.acknowledged_by = ack.user
    record.acknowledged_at = ack.ts.timestamp()
    at = max(now, ack.ts.timestamp())
    if ack.action is AckAction.SNOOZE and ack.snooze_s is not None:
        record.snoozed_until = ack.ts.timestamp() + min(ack.snooze_s, settings.max_snooze_s)
    else:
        record.snoozed_until = None
    _bump(record, at, AlertState.ACKNOWLEDGED)
    return [to_contract(record, bed_id)], None
