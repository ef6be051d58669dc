"""The alert processor in a process of its own, started by each service worker.

Recording a candidate on an alert is Python work (a few hundred µs a candidate); in a thread of
the worker it held the requests' GIL in bursts every poll and the churn p99 doubled
(bench/README.md). The child gets plain values on its stdin (a pickled ``WorkerConfig``),
processes the inbox every poll, and ends, after a last pass, when the parent closes the pipe or
dies. SIGINT and SIGTERM are left to the parent, which ends it by closing the pipe.
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass

from sqlalchemy import Engine

from app.alerts.service import AlertProcessor, ChurnAlerts, ProcessSummary, process_pending
from app.config import Settings
from app.db.session import create_db_engine
from app.observability import configure_logging


@dataclass(frozen=True)
class WorkerConfig:
    """What the child needs: where the inbox is and what to decide (no settings to rebuild)."""

    database_url: str
    alerts: ChurnAlerts
    poll_s: float
    batch_size: int
    log_level: str
    log_json: bool


class AlertProcessorProcess:
    """Starts and stops the child; ``run_once`` processes in the caller's thread (tests)."""

    def __init__(self, engine: Engine, config: WorkerConfig) -> None:
        self.engine = engine
        self.config = config
        self._child: subprocess.Popen[bytes] | None = None

    def run_once(self) -> ProcessSummary:
        """Process what is pending now, in this process."""
        config = self.config
        return process_pending(self.engine, alerts=config.alerts, batch_size=config.batch_size)

    def start(self) -> None:
        """Start the child and hand it its configuration."""
        if self._child is not None:
            raise RuntimeError("alert processor already started")
        child = subprocess.Popen([sys.executable, "-m", "app.alerts.worker"], stdin=subprocess.PIPE)
        assert child.stdin is not None
        child.stdin.write(pickle.dumps(self.config))
        child.stdin.flush()
        self._child = child

    def stop(self, timeout: float | None = None) -> None:
        """Close the pipe: the child makes a last pass and ends; killed if it overstays."""
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    @property
    def alive(self) -> bool:
        """Whether the child is running."""
        return self._child is not None and self._child.poll() is None


def build_alert_processor(
    settings: Settings, engine: Engine
) -> AlertProcessor | AlertProcessorProcess | None:
    """The processor the settings ask the service to run (None: alerts off, or run by
    `cvm alerts process`); a thread when the database lives in this process."""
    alerts = ChurnAlerts.from_settings(settings)
    if alerts is None or not settings.alert_processor_in_process:
        return None
    in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
    if settings.alert_processor_mode == "thread" or in_memory:
        return AlertProcessor(
            engine,
            alerts=alerts,
            poll_s=settings.alert_processor_poll_s,
            batch_size=settings.alert_processor_batch_size,
        )
    config = WorkerConfig(
        database_url=settings.database_url,
        alerts=alerts,
        poll_s=settings.alert_processor_poll_s,
        batch_size=settings.alert_processor_batch_size,
        log_level=settings.log_level,
        log_json=settings.log_json,
    )
    return AlertProcessorProcess(engine, config)


def main() -> None:
    """The child: process the inbox every poll until stdin closes."""
    for received in (signal.SIGINT, signal.SIGTERM):
        signal.signal(received, signal.SIG_IGN)
    config: WorkerConfig = pickle.load(sys.stdin.buffer)
    configure_logging(config.log_level, config.log_json)
    engine = create_db_engine(config.database_url)
    processor = AlertProcessor(
        engine, alerts=config.alerts, poll_s=config.poll_s, batch_size=config.batch_size
    )
    processor.start()
    try:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
    finally:
        processor.stop()
        engine.dispose()


if __name__ == "__main__":
    main()
