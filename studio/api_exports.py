"""REST routes for exports: POST /api/jobs/{id}/exports, GET /api/jobs/{id}/exports,
GET / DELETE /api/exports/{id}, GET /api/exports/{id}/download."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.access import Role, require
from studio.api import Ctx
from studio.models import ExportPublic
from studio.services import exports as export_service
from studio.services.exports import ExportRefused

router = APIRouter(prefix="/api", tags=["exports"])
TRAINER = [Depends(require(Role.trainer))]


class ExportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["merged", "adapter", "gguf"] = Field(
        description="merged: a transformers model folder (zip); adapter: the PEFT folder (zip); gguf: one .gguf file"
    )
    quantization: Optional[Literal["f16", "q8_0"]] = Field(default=None, description="gguf only; default f16")
    checkpoint: Optional[int] = Field(default=None, ge=0, description="A checkpoint's step; default: the final result")


@router.post("/jobs/{job_id}/exports", status_code=201, response_model=ExportPublic, dependencies=TRAINER)
def create_export(ctx: Ctx, job_id: int, body: ExportCreate) -> ExportPublic:
    """Queue an export of the job's result (or a checkpoint); a worker builds and verifies it."""
    return export_service.create_export(ctx, job_id, body.kind, body.quantization, body.checkpoint)


@router.get("/jobs/{job_id}/exports", response_model=list[ExportPublic], dependencies=TRAINER)
def list_exports(ctx: Ctx, job_id: int) -> list[ExportPublic]:
    return export_service.list_exports(ctx, job_id)


@router.get("/exports/{export_id}", response_model=ExportPublic, dependencies=TRAINER)
def get_export(ctx: Ctx, export_id: int) -> ExportPublic:
    """Status, progress and, once finished, the checks run and the files with their sizes."""
    return export_service.get_export(ctx, export_id)


@router.delete("/exports/{export_id}", status_code=204, dependencies=TRAINER)
def delete_export(ctx: Ctx, export_id: int) -> Response:
    export_service.delete_export(ctx, export_id)
    return Response(status_code=204)


@router.get("/exports/{export_id}/download", dependencies=TRAINER)
def download_export(
    ctx: Ctx,
    export_id: int,
    file: Annotated[Optional[str], Query(max_length=200, description="One file beside a GGUF, e.g. Modelfile")] = None,
) -> Response:
    """A zip for merged and adapter exports, the .gguf file for GGUF exports."""
    found = export_service.download(ctx, export_id, file)
    if found.zipped:
        headers = {"Content-Disposition": f'attachment; filename="{found.filename}"'}
        return StreamingResponse(export_service.zip_stream(found.path), media_type=found.media_type, headers=headers)
    return FileResponse(found.path, media_type=found.media_type, filename=found.filename)


def install_error_handlers(app: FastAPI) -> None:
    """409 for an export that cannot be made or changed now."""

    @app.exception_handler(ExportRefused)
    async def _refused(_request, exc: ExportRefused):
        return JSONResponse(status_code=409, content={"detail": str(exc), "errors": [str(exc)]})
