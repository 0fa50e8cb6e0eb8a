"""One settings object for the studio and its workers (environment prefix STUDIO_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(
        default=Path("./data"), description="Folder holding the DB, broker and artifacts."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data dir."
    )
    broker_url: str | None = Field(
        default=None,
        # REDIS_URL is what operators of a compose stack set; honour it too.
        validation_alias=AliasChoices("STUDIO_BROKER_URL", "REDIS_URL"),
        description="Celery broker; default: kombu filesystem transport in the data dir.",
    )
    artifacts_dir: Path | None = Field(
        default=None, description="Artifact root (shared mount for remote workers)."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=7860, ge=1, le=65535)
    max_upload_mb: float = Field(default=200.0, gt=0, description="Upload size limit.")
    lease_seconds: float = Field(
        default=60.0, gt=0, description="A running job's lease; renewed every third of it."
    )
    max_attempts: int = Field(default=3, ge=1, description="Runs of a job before it fails.")
    worker_heartbeat_seconds: float = Field(
        default=30.0, gt=0, description="How often a worker refreshes its row in the worker registry."
    )
    visibility_timeout_seconds: int = Field(
        default=3600, ge=1, description="Redis broker: seconds before an unacked job id is redelivered."
    )
    event_channel: Literal["db", "redis"] = Field(
        default="db", description="How workers report: straight into the DB, or over a Redis stream."
    )
    events_url: str | None = Field(default=None, description="Redis for the event stream; default: the broker.")
    broker_poll_seconds: float = Field(default=0.1, gt=0, description="Embedded broker poll.")

    def as_env(self) -> dict[str, str]:
        """Environment variables that give a subprocess exactly these settings."""
        return {f"STUDIO_{name.upper()}": str(value) for name, value in self.model_dump(exclude_none=True).items()}

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def events_redis_url(self) -> str:
        url = self.events_url or self.broker_url
        if not url or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("STUDIO_EVENT_CHANNEL=redis needs a Redis URL (STUDIO_EVENTS_URL or the broker URL)")
        return url

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def artifacts_root(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
