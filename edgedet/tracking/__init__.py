"""Tracking stage: per-camera tracker, zones, lines, object lifecycle events and snapshots."""
