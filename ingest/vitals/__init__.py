"""Vitals ingest: HL7 v2 ORU^R01 over MLLP and JSON over HTTP, into the ``vitals`` topic.

- :mod:`ingest.vitals.gate`: the admission rules both paths share (pure).
- :mod:`ingest.vitals.hl7map`: ORU^R01 -> vitals candidates, and the ACK (pure).
- :mod:`ingest.vitals.service`: the asyncio listeners and the Kafka adapter.
- :mod:`ingest.vitals.settings`, :mod:`ingest.vitals.cli`: configuration and `icu ingest vitals`.
"""
