"""Alerts: Faust fusion of vitals and video findings, NEWS2, alert lifecycle. Delivered by its own issue."""
