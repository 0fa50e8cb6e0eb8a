"""The REST API under /api: small handlers, one service call each. Bad input is a 4xx
JSON answer {"detail": ..., "errors": [...]} naming the file, row or field."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from studio.access import Role, public, require
from studio.core.config import ConfigError, TemplateSection
from studio.core.quality import FIXES
from studio.core.datasets import SCHEMAS, UNICODE_PROBLEM, DatasetError, ParseOptions, bad_unicode
from studio.models import (
    CheckpointPublic,
    DatasetPublic,
    DatasetVersionPublic,
    JobPublic,
    MetricPublic,
    SamplePublic,
    WorkerPublic,
)
from studio.services import datasets as dataset_service
from studio.services import compare as compare_service
from studio.services import jobs as job_service
from studio.services.compare import Comparison
from studio.services.context import NotFound, StudioContext
from studio.services.datasets import FileInspection, RowPage, VersionConflict

# Datasets, jobs and workers are the trainers' (admins pass every rule); health is open.
router = APIRouter(prefix="/api", dependencies=[Depends(require(Role.trainer))])
public_router = APIRouter(prefix="/api", dependencies=[Depends(public())])


MAX_ID = 2**63 - 1  # ids are 64-bit signed in SQLite and PostgreSQL: a bigger one is a 422, not an overflow
DatasetId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="A dataset id")]
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="A job id")]
RowIndex = Annotated[int, PathParam(ge=0, le=MAX_ID, description="A row's position in the version")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
OptionalId = Optional[Annotated[int, Field(ge=1, le=MAX_ID)]]


def first_bad_text(value: Any, where: str = "") -> str | None:
    """The path of the first string holding a lone surrogate (JSON can say "\\ud800",
    UTF-8 cannot store it), in keys or values, or None."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if bad_unicode(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and bad_unicode(key):
                    return path or "body"
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


class Body(BaseModel):
    """A JSON request body: unknown fields are refused, and so is text that is not valid
    Unicode (it could not be stored)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = first_bad_text(data)
        if where is not None:
            raise ValueError(f"{where} {UNICODE_PROBLEM}")
        return data


def get_ctx(request: Request) -> StudioContext:
    return request.app.state.ctx


Ctx = Annotated[StudioContext, Depends(get_ctx)]


class DatasetCreated(DatasetPublic):
    skipped_rows: list[str] = Field(default_factory=list, description="Problems of rows left out.")


class JobCreate(Body):
    dataset_id: int = Field(ge=1, le=MAX_ID)
    base_model: str = Field(default="demo", min_length=1, max_length=500)
    config: dict[str, Any] = Field(default_factory=dict, description="A partial job config.")
    preset: Optional[str] = Field(default=None, description="A named preset laid under config.")
    name: str = Field(default="", max_length=200)


@public_router.get("/health")
def health(ctx: Ctx) -> dict[str, Any]:
    from sqlalchemy import text

    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "broker": ctx.settings.celery_broker_url.split("://")[0]}


FileType = Literal["json", "jsonl", "csv", "tsv", "parquet"]
Schema = Literal[SCHEMAS]  # type: ignore[valid-type]
FILE_DESCRIPTION = "JSON, JSONL, CSV, TSV or Parquet of Alpaca, chat (messages) or ShareGPT rows"
COLUMNS_DESCRIPTION = 'Column mapping as JSON, Alpaca field -> column in the file: {"instruction": "question"}'


def _parse_options(file_type: str | None, schema: str | None, columns: str | None) -> ParseOptions:
    mapping: Any = {}
    if columns and columns.strip():
        try:
            mapping = json.loads(columns)
        except json.JSONDecodeError as exc:
            raise DatasetError([f"columns: not valid JSON ({exc.msg} at column {exc.colno})"]) from None
        except RecursionError:
            raise DatasetError(["columns: nested too deeply; expected a flat object"]) from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise DatasetError(['columns: expected an object like {"instruction": "question", "output": "answer"}'])
        where = first_bad_text(mapping)
        if where is not None:
            raise DatasetError([f"columns: {where} {UNICODE_PROBLEM}"])
    return ParseOptions(file_type=file_type or None, schema=schema or None, columns=mapping)


async def _read_upload(ctx: StudioContext, file: UploadFile) -> bytes:
    limit = int(ctx.settings.max_upload_mb * 1e6)
    return await file.read(limit + 1)  # one byte over is enough to know it is too big


@router.post("/datasets", status_code=201, response_model=DatasetCreated)
async def upload_dataset(
    ctx: Ctx,
    file: Annotated[UploadFile, File(description=FILE_DESCRIPTION)],
    name: Annotated[Optional[str], Form(max_length=200)] = None,
    accept_partial: Annotated[bool, Form(description="Keep the valid rows of a partly bad file")] = False,
    file_type: Annotated[Optional[FileType], Form(description="Override the type the extension says")] = None,
    row_schema: Annotated[Optional[Schema], Form(alias="schema", description="Override the detected row schema")] = None,
    columns: Annotated[Optional[str], Form(description=COLUMNS_DESCRIPTION)] = None,
) -> DatasetCreated:
    options = _parse_options(file_type, row_schema, columns)
    data = await _read_upload(ctx, file)
    # Parsing a big file takes seconds: off the event loop, so other requests keep flowing.
    dataset, skipped = await run_in_threadpool(
        dataset_service.create_dataset, ctx, file.filename or "upload", data, name, accept_partial, options
    )
    return DatasetCreated(**dataset.model_dump(), skipped_rows=skipped)


@router.post("/datasets/inspect", response_model=FileInspection)
async def inspect_dataset_file(
    ctx: Ctx,
    file: Annotated[UploadFile, File(description=FILE_DESCRIPTION)],
    file_type: Annotated[Optional[FileType], Form()] = None,
    row_schema: Annotated[Optional[Schema], Form(alias="schema")] = None,
    columns: Annotated[Optional[str], Form(description=COLUMNS_DESCRIPTION)] = None,
) -> FileInspection:
    """What auto-detection makes of a file (type, schema, columns, a sample); stores nothing."""
    options = _parse_options(file_type, row_schema, columns)
    data = await _read_upload(ctx, file)
    return await run_in_threadpool(dataset_service.inspect_file, ctx, file.filename or "upload", data, options)


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(ctx: Ctx) -> list[DatasetPublic]:
    return dataset_service.list_datasets(ctx)


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
def get_dataset(ctx: Ctx, dataset_id: DatasetId) -> DatasetPublic:
    return dataset_service.get_dataset(ctx, dataset_id)


@router.get("/datasets/{dataset_id}/rows")
def dataset_rows(
    ctx: Ctx, dataset_id: DatasetId, offset: Offset = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[dict[str, Any]]:
    return dataset_service.preview_rows(ctx, dataset_id, offset, limit)


VersionQuery = Annotated[Optional[int], Query(ge=1, le=MAX_ID, description="A version id; default: the newest")]


@router.get("/datasets/{dataset_id}/versions", response_model=list[DatasetVersionPublic])
def dataset_versions(ctx: Ctx, dataset_id: DatasetId) -> list[DatasetVersionPublic]:
    """The dataset's history, newest first."""
    return dataset_service.list_versions(ctx, dataset_id)


@router.get("/datasets/{dataset_id}/page", response_model=RowPage)
def dataset_page(
    ctx: Ctx,
    dataset_id: DatasetId,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    search: Annotated[str, Query(max_length=500, description="Case-insensitive text in any field")] = "",
    category: Annotated[Optional[str], Query(max_length=500, description="Only rows with this category")] = None,
    category_column: Annotated[str, Query(max_length=100)] = "category",
    version_id: VersionQuery = None,
) -> RowPage:
    """One page of the rows that match the search and the category filter."""
    return dataset_service.page_rows(ctx, dataset_id, offset, limit, search, category, category_column, version_id)


@router.get("/datasets/{dataset_id}/categories")
def dataset_categories(
    ctx: Ctx, dataset_id: DatasetId, column: Annotated[str, Query(max_length=100)] = "category", version_id: VersionQuery = None
) -> dict[str, int]:
    """Rows per value of a category column."""
    return dataset_service.category_counts(ctx, dataset_id, column, version_id)


class CellEdit(Body):
    column: str = Field(min_length=1, max_length=100)
    value: Any = Field(description="Text; for a chat row's 'messages', the list (or its JSON)")
    base_version_id: OptionalId = Field(default=None, description="The version edited; refused if no longer newest")


class RowAdd(Body):
    row: dict[str, Any]
    base_version_id: OptionalId = None


class RowsDelete(Body):
    indices: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(min_length=1, max_length=100_000)
    base_version_id: OptionalId = None


class Revert(Body):
    version_id: int = Field(ge=1, le=MAX_ID, description="The version whose rows become the newest version")


class SplitRequest(Body):
    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.9, description="0 removes a stored split")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    by_column: Optional[str] = Field(default=None, max_length=100, description="Split by this column's values")
    stratify_column: Optional[str] = Field(default="category", max_length=100)
    base_version_id: OptionalId = None


@router.patch("/datasets/{dataset_id}/rows/{index}", response_model=DatasetPublic)
def edit_dataset_cell(ctx: Ctx, dataset_id: DatasetId, index: RowIndex, body: CellEdit) -> DatasetPublic:
    """Set one cell; makes a new version."""
    return dataset_service.edit_cell(ctx, dataset_id, index, body.column, body.value, body.base_version_id)


@router.post("/datasets/{dataset_id}/rows", status_code=201, response_model=DatasetPublic)
def add_dataset_row(ctx: Ctx, dataset_id: DatasetId, body: RowAdd) -> DatasetPublic:
    """Append a row; makes a new version."""
    return dataset_service.add_row(ctx, dataset_id, body.row, body.base_version_id)


@router.post("/datasets/{dataset_id}/rows/delete", response_model=DatasetPublic)
def delete_dataset_rows(ctx: Ctx, dataset_id: DatasetId, body: RowsDelete) -> DatasetPublic:
    """Delete rows by position; makes a new version."""
    return dataset_service.delete_rows(ctx, dataset_id, body.indices, body.base_version_id)


@router.post("/datasets/{dataset_id}/revert", response_model=DatasetPublic)
def revert_dataset(ctx: Ctx, dataset_id: DatasetId, body: Revert) -> DatasetPublic:
    """Go back: a new version with an older version's rows."""
    return dataset_service.revert_to(ctx, dataset_id, body.version_id)


@router.post("/datasets/{dataset_id}/split", response_model=DatasetPublic)
def split_dataset(ctx: Ctx, dataset_id: DatasetId, body: SplitRequest) -> DatasetPublic:
    """Store a train/validation split (seeded, stratified by category, or by a column)."""
    return dataset_service.split_dataset(
        ctx, dataset_id, body.validation_fraction, body.seed, body.by_column, body.stratify_column, body.base_version_id
    )


@router.get("/datasets/{dataset_id}/export", response_class=Response)
def export_dataset(
    ctx: Ctx,
    dataset_id: DatasetId,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",
    version_id: VersionQuery = None,
) -> Response:
    """Download a version as JSONL or as formula-safe CSV."""
    filename, data, media = dataset_service.export_version(ctx, dataset_id, format, version_id)
    return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


class TokenView(Body):
    """The model, template and cutoff a report or preview is computed for."""

    base_model: str = Field(default="demo", min_length=1, max_length=500, description="Whose tokenizer counts tokens")
    template: TemplateSection = Field(default_factory=TemplateSection)
    max_length: int = Field(default=512, ge=16, le=131_072, description="The training cutoff, in tokens")
    version_id: OptionalId = Field(default=None, description="Default: the newest version")


class QualityRequest(TokenView):
    category_column: str = Field(default="category", max_length=100)


class PreviewRequest(TokenView):
    index: int = Field(ge=0, le=MAX_ID, description="The row's position in the version")


class FixRequest(Body):
    fix: Literal[tuple(FIXES)]  # type: ignore[valid-type]
    base_version_id: OptionalId = None


@router.post("/datasets/{dataset_id}/quality")
def dataset_quality(ctx: Ctx, dataset_id: DatasetId, body: QualityRequest) -> dict[str, Any]:
    """Duplicates, empty and short responses, token lengths against the cutoff, category
    balance and leaking template markers, with plotly figures (JSON)."""
    return dataset_service.quality_report(
        ctx, dataset_id, body.base_model, body.template, body.max_length, body.category_column, body.version_id
    )


@router.post("/datasets/{dataset_id}/fixes", response_model=DatasetPublic)
def fix_dataset(ctx: Ctx, dataset_id: DatasetId, body: FixRequest) -> DatasetPublic:
    """Apply a safe fix (drop duplicates, near duplicates or empties); makes a new version."""
    return dataset_service.apply_fix(ctx, dataset_id, body.fix, body.base_version_id)


@router.post("/datasets/{dataset_id}/preview")
def dataset_preview(ctx: Ctx, dataset_id: DatasetId, body: PreviewRequest) -> dict[str, Any]:
    """One row as the model sees it: text spans trained or masked, kept or cut, and counts."""
    return dataset_service.preview_row(
        ctx, dataset_id, body.index, body.base_model, body.template, body.max_length, body.version_id
    )


@router.post("/jobs", status_code=201, response_model=JobPublic)
def create_job(ctx: Ctx, body: JobCreate) -> JobPublic:
    return job_service.create_job(ctx, body.dataset_id, body.base_model, body.config, body.preset, body.name)


@router.post("/jobs/plan")
def plan_job(ctx: Ctx, body: JobCreate) -> dict[str, Any]:
    """What launching this job would mean, without launching it: parameter counts, a memory
    estimate and warnings for the workers' device, the workers it would run on, and steps."""
    preview = job_service.preview_launch(ctx, body.dataset_id, body.base_model, body.config, body.preset)
    estimate = asdict(preview.estimate) if preview.estimate else None
    return {
        **asdict(preview.plan), "train_rows": preview.train_rows, "steps": preview.steps, "runs_on": preview.runs_on,
        "estimate_seconds": estimate, "train_tokens": round(preview.train_tokens),
    }


@router.get("/assets/plotly.js", include_in_schema=False)
def plotly_script() -> FileResponse:
    """The plotting library the Jobs tab draws its live plot with, from the plotly package
    (the studio runs offline: no CDN). Cached by the browser for a day."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/workers", response_model=list[WorkerPublic])
def list_workers(ctx: Ctx) -> list[WorkerPublic]:
    """Workers that reported, with their device and whether they are still alive."""
    return job_service.list_workers(ctx)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(ctx: Ctx) -> list[JobPublic]:
    return job_service.list_jobs(ctx)


# Before /jobs/{job_id}, which would take "compare" for a job id.
@router.get("/jobs/compare", response_model=Comparison)
def compare_jobs(ctx: Ctx, ids: Annotated[str, Query(max_length=400, description="job ids, e.g. 1,2,3")]) -> Comparison:
    """Two or more jobs side by side: curves with step, epoch and trained tokens, a summary
    row per job, and the config fields that differ."""
    try:
        job_ids = compare_service.parse_ids(ids)
    except ValueError as exc:
        return _error(422, [str(exc)])
    return compare_service.compare_jobs(ctx, job_ids)


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(ctx: Ctx, job_id: JobId) -> JobPublic:
    return job_service.get_job(ctx, job_id)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricPublic])
def job_metrics(ctx: Ctx, job_id: JobId, after_step: Annotated[int, Query(ge=-1, le=MAX_ID)] = -1) -> list[MetricPublic]:
    return job_service.job_metrics(ctx, job_id, after_step)


@router.get("/jobs/{job_id}/samples", response_model=list[SamplePublic])
def job_samples(ctx: Ctx, job_id: JobId) -> list[SamplePublic]:
    return job_service.job_samples(ctx, job_id)


@router.get("/jobs/{job_id}/checkpoints", response_model=list[CheckpointPublic])
def job_checkpoints(ctx: Ctx, job_id: JobId) -> list[CheckpointPublic]:
    return job_service.job_checkpoints(ctx, job_id)


@router.get("/jobs/{job_id}/logs")
def job_logs(ctx: Ctx, job_id: JobId) -> list[str]:
    job_service.get_job(ctx, job_id)
    return job_service.job_logs(ctx, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(ctx: Ctx, job_id: JobId) -> JobPublic:
    return job_service.cancel_job(ctx, job_id)


@router.post("/jobs/{job_id}/clone", status_code=201, response_model=JobPublic)
def clone_job(ctx: Ctx, job_id: JobId) -> JobPublic:
    return job_service.clone_job(ctx, job_id)


def _error(status: int, errors: list[str]) -> JSONResponse:
    # A message may quote what the user sent, lone surrogates included: JSON must still encode.
    errors = [e.encode("utf-8", "backslashreplace").decode("utf-8") for e in errors]
    return JSONResponse(status_code=status, content={"detail": "; ".join(errors), "errors": errors})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def _not_found(_request, exc: NotFound):
        return _error(404, [str(exc)])

    @app.exception_handler(VersionConflict)
    async def _conflict(_request, exc: VersionConflict):
        return _error(409, exc.errors)

    @app.exception_handler(DatasetError)
    async def _bad_dataset(_request, exc: DatasetError):
        return _error(422, exc.errors)

    @app.exception_handler(ConfigError)
    async def _bad_config(_request, exc: ConfigError):
        return _error(422, exc.errors)

    @app.exception_handler(OverflowError)
    async def _too_big(_request, exc: OverflowError):
        # the database's integers are 64-bit: a route whose ids are not bounded still answers 4xx
        return _error(422, [f"a number in the request is too large (ids are at most {MAX_ID})"])

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path")]
            errors.append(f"{'.'.join(loc) or 'request'}: {err['msg']}")
        return _error(422, errors)
