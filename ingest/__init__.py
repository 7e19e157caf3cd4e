"""Ingest: cameras (WHIP, RTSP, files) and vitals (HL7 v2, JSON) into Kafka. Delivered by its own issue."""
