"""The REST API under /api: small handlers, one service call each. Bad input is a 4xx
JSON answer {"detail": ..., "errors": [...]} naming the file, row or field."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.core.config import ConfigError
from studio.core.datasets import DatasetError
from studio.models import CheckpointPublic, DatasetPublic, JobPublic, MetricPublic, SamplePublic
from studio.services import datasets as dataset_service
from studio.services import jobs as job_service
from studio.services.context import NotFound, StudioContext

router = APIRouter(prefix="/api")


def get_ctx(request: Request) -> StudioContext:
    return request.app.state.ctx


Ctx = Annotated[StudioContext, Depends(get_ctx)]


class DatasetCreated(DatasetPublic):
    skipped_rows: list[str] = Field(default_factory=list, description="Problems of rows left out.")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset_id: int = Field(ge=1)
    base_model: str = Field(default="demo", min_length=1, max_length=500)
    config: dict[str, Any] = Field(default_factory=dict, description="A partial job config.")
    preset: Optional[str] = Field(default=None, description="A named preset laid under config.")
    name: str = Field(default="", max_length=200)


@router.get("/health")
def health(ctx: Ctx) -> dict[str, Any]:
    from sqlalchemy import text

    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "broker": ctx.settings.celery_broker_url.split("://")[0]}


@router.post("/datasets", status_code=201, response_model=DatasetCreated)
async def upload_dataset(
    ctx: Ctx,
    file: Annotated[UploadFile, File(description="JSON, JSONL, CSV or TSV of instruction rows")],
    name: Annotated[Optional[str], Form(max_length=200)] = None,
    accept_partial: Annotated[bool, Form(description="Keep the valid rows of a partly bad file")] = False,
) -> DatasetCreated:
    limit = int(ctx.settings.max_upload_mb * 1e6)
    data = await file.read(limit + 1)  # one byte over is enough to know it is too big
    dataset, skipped = dataset_service.create_dataset(ctx, file.filename or "upload", data, name, accept_partial)
    return DatasetCreated(**dataset.model_dump(), skipped_rows=skipped)


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(ctx: Ctx) -> list[DatasetPublic]:
    return dataset_service.list_datasets(ctx)


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
def get_dataset(ctx: Ctx, dataset_id: int) -> DatasetPublic:
    return dataset_service.get_dataset(ctx, dataset_id)


@router.get("/datasets/{dataset_id}/rows")
def dataset_rows(
    ctx: Ctx, dataset_id: int, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, str]]:
    return dataset_service.preview_rows(ctx, dataset_id, offset, limit)


@router.post("/jobs", status_code=201, response_model=JobPublic)
def create_job(ctx: Ctx, body: JobCreate) -> JobPublic:
    return job_service.create_job(ctx, body.dataset_id, body.base_model, body.config, body.preset, body.name)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(ctx: Ctx) -> list[JobPublic]:
    return job_service.list_jobs(ctx)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(ctx: Ctx, job_id: int) -> JobPublic:
    return job_service.get_job(ctx, job_id)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricPublic])
def job_metrics(ctx: Ctx, job_id: int, after_step: Annotated[int, Query(ge=-1)] = -1) -> list[MetricPublic]:
    return job_service.job_metrics(ctx, job_id, after_step)


@router.get("/jobs/{job_id}/samples", response_model=list[SamplePublic])
def job_samples(ctx: Ctx, job_id: int) -> list[SamplePublic]:
    return job_service.job_samples(ctx, job_id)


@router.get("/jobs/{job_id}/checkpoints", response_model=list[CheckpointPublic])
def job_checkpoints(ctx: Ctx, job_id: int) -> list[CheckpointPublic]:
    return job_service.job_checkpoints(ctx, job_id)


@router.get("/jobs/{job_id}/logs")
def job_logs(ctx: Ctx, job_id: int) -> list[str]:
    job_service.get_job(ctx, job_id)
    return job_service.job_logs(ctx, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(ctx: Ctx, job_id: int) -> JobPublic:
    return job_service.cancel_job(ctx, job_id)


@router.post("/jobs/{job_id}/clone", status_code=201, response_model=JobPublic)
def clone_job(ctx: Ctx, job_id: int) -> JobPublic:
    return job_service.clone_job(ctx, job_id)


def _error(status: int, errors: list[str]) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": "; ".join(errors), "errors": errors})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_request, exc: NotFound):
        return _error(404, [str(exc)])

    @app.exception_handler(DatasetError)
    async def _bad_dataset(_request, exc: DatasetError):
        return _error(422, exc.errors)

    @app.exception_handler(ConfigError)
    async def _bad_config(_request, exc: ConfigError):
        return _error(422, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path")]
            errors.append(f"{'.'.join(loc) or 'request'}: {err['msg']}")
        return _error(422, errors)
