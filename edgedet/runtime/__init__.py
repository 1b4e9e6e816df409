"""The bottom layer every stage may use: workers with heartbeats, the latest-item slot, rate limits.

Nothing here imports a stage (sources, preprocess, backends, models, publish, telemetry, service).
"""
