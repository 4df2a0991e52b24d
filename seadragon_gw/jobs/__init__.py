"""Async jobs: inference requests that are answered "queued" at once and run in the background.

A job is written to SQLite before its 202, waits in the same aging queue as HTTP requests (with
its credential's priority, aging from its submission) and runs through the same lifecycle
(`RequestService.admit` then `lifecycle.consume.complete`). No HTTP here: `api/jobs_routes.py`
speaks HTTP and calls `JobService`.
"""
