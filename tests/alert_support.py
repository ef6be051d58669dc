"""Helpers for tests that score churn and then read alerts: the alert processor runs beside
the scores (in the app's background, or here), so a test waits for the inbox to drain."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine

from app.alerts.service import AlertProcessor, pending_candidates
from app.alerts.worker import AlertProcessorProcess


def settle_alerts(app: Any, timeout_s: float = 10.0) -> None:
    """Return once every candidate committed so far is recorded on alerts.

    ``app`` is the FastAPI app (a test client's ``app``). Runs the app's processor here as
    well: on PostgreSQL a candidate the background thread is recording is skipped (SKIP
    LOCKED), so this waits until the inbox is empty, which it is only once every processing
    transaction has committed.
    """
    processor: AlertProcessor | AlertProcessorProcess | None = app.state.alert_processor
    if processor is None:
        return
    engine: Engine = app.state.engine
    deadline = time.monotonic() + timeout_s
    while True:
        processor.run_once()
        if pending_candidates(engine) == 0:
            return
        assert time.monotonic() < deadline, "alert candidates still pending"
        time.sleep(0.02)
