"""`icu demo`: the whole pipeline on one machine, from a simulated ward to the dashboard.

A pure plan (:mod:`demo.plan`: beds, scenarios, services and their environments), a thin
process supervisor (:mod:`demo.supervisor`), the simulated bedside devices it runs as one child
(:mod:`demo.bedside`: WebRTC cameras to the WHIP endpoint, monitor vitals to Kafka) and the
guard that keeps the embedded broker's memory bounded (:mod:`demo.broker_memory`).
"""

from __future__ import annotations


class DemoError(Exception):
    """The demo cannot start or went wrong; the message says why and what to do."""
