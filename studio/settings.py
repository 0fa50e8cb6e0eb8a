"""One settings object for the studio and its workers (environment prefix STUDIO_)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    worker_calibrate: bool = Field(
        default=True,
        description="A worker times a few seconds of training when it starts, for time estimates before any job finished.",
    )
    visibility_timeout_seconds: int = Field(
        default=3600, ge=1, description="Redis broker: seconds before an unacked job id is redelivered."
    )
    event_channel: Literal["db", "redis"] = Field(
        default="db", description="How workers report: straight into the DB, or over a Redis stream."
    )
    events_url: str | None = Field(default=None, description="Redis for the event stream; default: the broker.")
    broker_poll_seconds: float = Field(default=0.1, gt=0, description="Embedded broker poll.")

    # --- accounts and web security ---
    no_auth: bool = Field(
        default=False, description="Serve a non-loopback address with no users and no login (dangerous)."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the web app answers to, besides the bound address and localhost; '*' for any.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed to call the API from another site (CORS); none by default."
    )
    session_hours: float = Field(default=12.0, gt=0, le=24 * 90, description="How long a browser login lasts.")
    login_failures_per_account: int = Field(
        default=5, ge=1, description="Failed logins for one account within 15 minutes before it waits."
    )
    login_failures_per_ip: int = Field(
        default=20, ge=1, description="Failed logins from one address within 15 minutes before it waits."
    )
    admin_user: str | None = Field(
        default=None, description="With admin_password_file: the admin created at start when there are no users yet."
    )
    admin_password_file: Path | None = Field(
        default=None, description="A file (e.g. a Docker secret) holding that first admin's password."
    )
    # --- limits (hardening) ---
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders local base models must lie under (JSON list or os.pathsep-separated); "
        "empty: <data_dir>/models and the Hugging Face cache.",
    )
    trust_remote_code_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Base model folders or hub ids allowed to run their own code (trust_remote_code).",
    )
    max_rows: int = Field(default=1_000_000, ge=1, description="Rows a dataset file may hold.")
    max_columns: int = Field(default=200, ge=1, description="Columns (fields) a dataset file may hold.")
    max_json_depth: int = Field(default=64, ge=2, le=10_000, description="Nesting depth of JSON in a dataset file.")
    max_decompressed_mb: float = Field(
        default=2000.0, gt=0, description="Size a compressed (Parquet) dataset file may expand to."
    )
    template_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time a custom template may take to render one row."
    )
    template_max_chars: int = Field(
        default=1_000_000, ge=1000, description="Text a custom template may write for one row."
    )
    prepare_timeout_seconds: float = Field(
        default=1800.0, gt=0, description="Time a job may spend preparing data and loading the model."
    )
    # --- chat and the model host (studio infer) ---
    infer_url: str = Field(
        default="http://127.0.0.1:7862", description="The model host the web app sends chat and /v1 requests to."
    )
    infer_token: str | None = Field(
        default=None, description="A shared secret the model host requires from the web app (split deployments)."
    )
    infer_memory_gb: float = Field(
        default=0.0, ge=0, description="Memory the model host may fill with models; 0: 90% of the GPU or half the RAM."
    )
    infer_load_in: Literal["none", "8bit", "4bit"] = Field(
        default="none", description="Load base models in the model host in 8 or 4 bits (bitsandbytes; GPU)."
    )
    infer_cache_entries: int = Field(default=2048, ge=0, description="Deterministic answers the model host keeps.")
    chat_timeout_seconds: float = Field(default=300.0, gt=0, description="Longest a chat or /v1 request may take.")
    safety_classifier: str | None = Field(
        default=None, description="module:function called with each request and reply text; a string it returns "
        "blocks that text (a hook for a local classifier model)."
    )

    @field_validator("model_dirs", "trust_remote_code_models", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # env values: a JSON list, or paths joined like PATH
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        # env values: a JSON list, or names joined by commas
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def as_env(self) -> dict[str, str]:
        """Environment variables that give a subprocess exactly these settings."""
        return {
            f"STUDIO_{name.upper()}": json.dumps([str(v) for v in value]) if isinstance(value, list) else str(value)
            for name, value in self.model_dump(exclude_none=True).items()
        }

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
    def model_roots(self) -> list[Path]:
        """Folders local base models must lie under, resolved."""
        if self.model_dirs:
            return [Path(p).expanduser().resolve() for p in self.model_dirs]
        from huggingface_hub.constants import HF_HUB_CACHE

        return [(self.data_dir / "models").resolve(), Path(HF_HUB_CACHE).expanduser().resolve()]

    @property
    def gradio_dir(self) -> Path:
        """This studio's own Gradio upload and cache folder."""
        return (self.data_dir / "gradio").resolve()

    @property
    def artifacts_root(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
