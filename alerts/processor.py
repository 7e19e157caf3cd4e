"""One bed's alerting, message by message: the pure core the Faust app drives.

A :class:`BedRecord` (rules state + open alerts + the bed's clock) is what the app keeps per bed
in its table. Each message updates it and returns the alert versions it caused. Time is the
messages' own (event time), so a replay gives the same alerts as the live run. Vitals and
detections come from different topics, which Kafka does not order against each other, so a
bed's messages wait in a small reorder buffer until the other stream has caught up with them
(at most ``max_skew_s`` of event time, and never less than ``reorder_min_wait_s`` of wall time;
ticks stop waiting for a stream gone quiet): the rules see both in time order, and a lagging
video pipeline delays vitals alerts by ``max_skew_s`` at most. The wall-time floor is for
replays: at 30x, 5 s of event time pass in 0.17 s, less than a busy consumer may read one
topic ahead of another. Between messages,
ticks move a quiet bed's clock on by the wall-clock time since its last message, so
escalations, snooze ends, resolutions and stale-vitals alerts happen when nothing arrives too.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from alerts.lifecycle import LifecycleSettings, OpenAlert, acknowledge, step
from alerts.rules import BedState, RuleThresholds, add_camera_status, add_detection, add_vitals, evaluate
from icu.contracts import Alert, AlertAck, CameraStatus, Detection, Vitals

QUIET_S = 3.0  # a stream with no message for this long (wall clock) is not waited for
MAX_PENDING = 2000  # messages held per bed while the other stream catches up (the hard bound)
STREAM_ORDER = {"vitals": 0, "detections": 1, "camera": 2}
CONTRACTS: dict[str, type[Vitals] | type[Detection] | type[CameraStatus]] = {
    "vitals": Vitals,
    "detections": Detection,
    "camera": CameraStatus,
}


@dataclass
class BedRecord:
    rules: BedState
    alerts: dict[str, OpenAlert] = field(default_factory=dict)
    now: float = 0.0  # the bed's clock: newest event time, moved on by ticks
    arrival: float = 0.0  # wall-clock time the newest event arrived
    # (ts, order, stream, message, wall-clock arrival): waiting for the other stream; JSON only in snapshots.
    pending: list[tuple[float, int, str, Vitals | Detection | CameraStatus, float]] = field(default_factory=list)
    latest: dict[str, float] = field(default_factory=dict)  # stream -> newest event time seen
    seen: dict[str, float] = field(default_factory=dict)  # stream -> wall-clock time of its newest message

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": self.rules.to_dict(),
            "alerts": {code: a.to_dict() for code, a in self.alerts.items()},
            "now": self.now,
            "arrival": self.arrival,
            "pending": [(t, o, k, m.model_dump_json(), a) for t, o, k, m, a in self.pending],
            "latest": self.latest,
            "seen": self.seen,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BedRecord:
        return cls(
            rules=BedState.from_dict(data["rules"]),
            alerts={code: OpenAlert(**a) for code, a in data.get("alerts", {}).items()},
            now=float(data.get("now", 0.0)),
            arrival=float(data.get("arrival", 0.0)),
            pending=[
                # Snapshots from before arrival times were kept have four fields: long arrived.
                (
                    float(p[0]),
                    int(p[1]),
                    str(p[2]),
                    CONTRACTS[p[2]].model_validate_json(p[3]),
                    float(p[4]) if len(p) > 4 else 0.0,
                )
                for p in data.get("pending", [])
            ],
            latest={k: float(v) for k, v in data.get("latest", {}).items()},
            seen={k: float(v) for k, v in data.get("seen", {}).items()},
        )

    @classmethod
    def new(cls, bed_id: str) -> BedRecord:
        return cls(rules=BedState(bed_id=bed_id))


@dataclass(frozen=True)
class AlertProcessor:
    thresholds: RuleThresholds = field(default_factory=RuleThresholds)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    max_skew_s: float = 5.0
    reorder_min_wait_s: float = 2.0  # wall seconds a message waits for the other stream, whatever max_skew_s

    def on_message(self, record: BedRecord, message: Vitals | Detection | CameraStatus, *, wall: float) -> list[Alert]:
        stream = (
            "vitals" if isinstance(message, Vitals) else "detections" if isinstance(message, Detection) else "camera"
        )
        t = message.ts.timestamp()
        record.latest[stream] = max(record.latest.get(stream, t), t)
        record.seen[stream] = wall
        record.arrival = wall
        bisect.insort(record.pending, (t, STREAM_ORDER[stream], stream, message, wall), key=lambda p: (p[0], p[1]))
        return self._release(record, wall, quiet_by_wall=False)

    def _release(self, record: BedRecord, wall: float, *, quiet_by_wall: bool) -> list[Alert]:
        """Apply the buffered messages the watermark has passed, in event-time order. A message
        releases by event time alone (every stream the bed has had is waited for, up to
        ``max_skew_s``); only a tick (``quiet_by_wall``) stops waiting for a stream silent for
        QUIET_S of wall time, which a worker far behind a backlog can also see (README, Research)."""
        if not record.pending:
            return []
        waited_for = [
            s
            for s in ("vitals", "detections")
            if s in record.latest and (not quiet_by_wall or wall - record.seen[s] < QUIET_S)
        ]
        newest = max(record.latest.values())
        watermark = min((record.latest[s] for s in waited_for), default=newest)
        count = bisect.bisect_right(record.pending, watermark, key=lambda p: p[0])
        # Past max_skew_s of event time a message stops waiting for the other stream, once it has
        # also waited reorder_min_wait_s of wall time (in order: a message still waiting holds
        # back the ones after it).
        skew_floor, waited_since = newest - self.max_skew_s, wall - self.reorder_min_wait_s
        pending = record.pending
        while count < len(pending) and pending[count][0] <= skew_floor and pending[count][4] <= waited_since:
            count += 1
        count = max(count, len(pending) - MAX_PENDING)
        ready, record.pending = record.pending[:count], record.pending[count:]
        out: list[Alert] = []
        for i, (t, _, _, message, _) in enumerate(ready):
            if isinstance(message, Vitals):
                add_vitals(record.rules, message, self.thresholds)
            elif isinstance(message, Detection):
                add_detection(record.rules, message, self.thresholds)
            else:
                add_camera_status(record.rules, message)
            # The rules read the bed as it stands once every message of an instant is in (the
            # monitor's and the camera's reading of the same second), not after each of them.
            if i + 1 == len(ready) or ready[i + 1][0] != t:
                out += self._advance(record, max(t, record.rules.clock))
        return out

    def on_ack(self, record: BedRecord, ack: AlertAck, *, wall: float) -> tuple[list[Alert], str | None]:
        at = max(record.now, ack.ts.timestamp())
        versions, problem = acknowledge(record.rules.bed_id, record.alerts, ack, at, self.lifecycle)
        record.now = max(record.now, at)
        return versions, problem

    def on_tick(self, record: BedRecord, *, wall: float) -> list[Alert]:
        # While messages flow, they move the clock; a tick only speaks for a bed gone quiet, so a
        # replay faster than real time decides exactly what the live run decided.
        out = self._release(record, wall, quiet_by_wall=True)  # a stream gone quiet is no longer waited for
        if record.arrival <= 0 or wall - record.arrival < QUIET_S:
            return out
        return out + self._advance(record, record.rules.clock + max(0.0, wall - record.arrival))

    def _advance(self, record: BedRecord, t: float) -> list[Alert]:
        record.now = max(record.now, t)
        conditions = evaluate(record.rules, record.now, self.thresholds)
        return step(record.rules.bed_id, record.alerts, conditions, record.now, self.lifecycle)
