"""Research tooling: record what happened at a bed, replay it through the pipeline, and score the
alerts it raises against ground truth.

- :mod:`research.manifest` and :mod:`research.store`: the portable recording format (a manifest,
  JSON Lines per topic, MJPEG video per camera with a timestamp sidecar) and its streaming
  writer and lazy reader; no Kafka.
- :mod:`research.blur`: face blurring of frames for sharing.
- :mod:`research.record`, :mod:`research.replay`: the thin Kafka adapters (`icu record`,
  `icu replay`); :mod:`research.simulate` writes a recording straight from the simulator.
- :mod:`research.evaluate`, :mod:`research.plot`: `icu eval alerts` (pure core, table, PNG).
"""

from __future__ import annotations


class ResearchError(Exception):
    """A recording, annotation file or option that cannot be used; the message says why."""
