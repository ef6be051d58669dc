"""Runtime settings, read from the environment (prefix ``CVM_``) and an optional ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything a deployment may change; the defaults run the service from a checkout."""

    model_config = SettingsConfigDict(env_prefix="CVM_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'cvm.db'}",
        description="SQLAlchemy URL: SQLite file by default, postgresql+psycopg://... live.",
    )
    models_dir: Path = Field(default=PROJECT_ROOT / "models")
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description="Pinned version per task, e.g. {'churn': '2'}; unpinned tasks use the newest.",
    )
    service_plans_file: Path = Field(
        default=PROJECT_ROOT / "app" / "resources" / "service_plans.json"
    )
    eligibility_file: Path = Field(default=PROJECT_ROOT / "app" / "resources" / "eligibility.json")
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = Field(default=1000, ge=1)
    group_commit_max_rows: int = Field(default=5000, ge=1)
    group_commit_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait for more rows once one is queued (load batches anyway).",
    )
    log_level: str = "INFO"
    log_json: bool = True


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, built on first use (never at import time)."""
    return Settings()
