"""REST routes for evaluation runs: POST /api/evals, GET /api/evals, GET /api/evals/{id},
GET /api/evals/{id}/rows (paged), POST /api/evals/{id}/cancel. Trainers and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse

from studio.access import Role, identity_of, require
from studio.api import Ctx
from studio.models import EvalPublic, EvalRowPublic
from studio.services import evals as eval_service
from studio.services.evals import EvalRefused, EvalRequest

router = APIRouter(prefix="/api", tags=["evaluations"])
TRAINER = [Depends(require(Role.trainer))]
EvalId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.post("/evals", status_code=201, response_model=EvalPublic, dependencies=TRAINER)
def create_eval(ctx: Ctx, body: EvalRequest, request: Request) -> EvalPublic:
    """Queue an evaluation run: every model answers every row, then each is scored."""
    identity = identity_of(request)
    return eval_service.create_eval(ctx, body, user=identity.name if identity else None)


@router.get("/evals", response_model=list[EvalPublic], dependencies=TRAINER)
def list_evals(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=eval_service.MAX_PAGE)] = 50) -> list[EvalPublic]:
    return eval_service.list_evals(ctx, limit)


@router.get("/evals/{eval_id}", response_model=EvalPublic, dependencies=TRAINER)
def get_eval(ctx: Ctx, eval_id: EvalId) -> EvalPublic:
    """Status, progress and `results`: each model's metrics, overall and per category."""
    return eval_service.get_eval(ctx, eval_id)


@router.get("/evals/{eval_id}/rows", response_model=list[EvalRowPublic], dependencies=TRAINER)
def eval_rows(
    ctx: Ctx,
    eval_id: EvalId,
    offset: Annotated[int, Query(ge=0, le=eval_service.MAX_ROWS)] = 0,
    limit: Annotated[int, Query(ge=1, le=eval_service.MAX_PAGE)] = 50,
) -> list[EvalRowPublic]:
    """A page of rows: prompt, reference, each model's answer and scores."""
    return eval_service.eval_rows(ctx, eval_id, offset, limit)


@router.post("/evals/{eval_id}/cancel", response_model=EvalPublic, dependencies=TRAINER)
def cancel_eval(ctx: Ctx, eval_id: EvalId) -> EvalPublic:
    return eval_service.cancel_eval(ctx, eval_id)


def install_error_handlers(app: FastAPI) -> None:
    """409 for a run that cannot be changed now."""

    @app.exception_handler(EvalRefused)
    async def _refused(_request, exc: EvalRefused):
        return JSONResponse(status_code=409, content={"detail": str(exc), "errors": [str(exc)]})
