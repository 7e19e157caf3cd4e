"""Alerts: Faust fusion of vitals and video findings, NEWS2, alert lifecycle.

In place: the NEWS2 score (:mod:`alerts.news2`, also ``icu news2``). The stream processor and
the alert lifecycle are delivered by their own issue.
"""
