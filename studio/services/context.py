"""What every service call needs: settings, the DB engine and the queue producer."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from sqlalchemy.engine import Engine

from studio.db import engine_for
from studio.settings import Settings


class NotFound(LookupError):
    """The id a user asked for does not exist."""


@dataclass(frozen=True)
class StudioContext:
    settings: Settings
    engine: Engine
    celery: Celery

    @classmethod
    def from_settings(cls, settings: Settings) -> "StudioContext":
        from worker.celery_app import make_celery  # Celery settings only: no torch

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.artifacts_root.mkdir(parents=True, exist_ok=True)
        return cls(settings, engine_for(settings.db_url), make_celery(settings))
