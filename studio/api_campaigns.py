"""REST routes for rating campaigns.

Trainers (and admins): POST /api/campaigns, GET /api/campaigns, GET /api/campaigns/{id},
GET /api/campaigns/{id}/leaderboard, GET /api/campaigns/{id}/export?format=dpo|jsonl|csv,
POST /api/campaigns/{id}/dataset.
Raters (and admins): GET /api/rating/campaigns, GET /api/campaigns/{id}/next (204 when
nothing is left), POST /api/campaigns/{id}/ratings. Nothing a rater gets names a model.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field

from studio.access import Role, identity_of, require
from studio.api import Body, Ctx
from studio.models import DatasetPublic
from studio.services import campaigns as campaign_service
from studio.services.campaigns import CampaignRefused, CampaignRequest, RatingRequest

router = APIRouter(prefix="/api", tags=["campaigns"])
TRAINER = [Depends(require(Role.trainer))]
RATER = [Depends(require(Role.rater))]
CampaignId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class CampaignCreate(CampaignRequest, Body):
    """A campaign request; text that is not valid Unicode is refused by name."""


class RatingCreate(RatingRequest, Body):
    pass


class DatasetFromCampaign(Body):
    name: Optional[str] = Field(default=None, max_length=200, description="The new dataset's name")


def _who(request: Request) -> str:
    return identity_of(request).name


@router.post("/campaigns", status_code=201, dependencies=TRAINER)
def create_campaign(ctx: Ctx, body: CampaignCreate, request: Request) -> dict:
    """Start a campaign: an evaluation run writes every contestant's answers first."""
    return campaign_service.create_campaign(ctx, body, user=_who(request))


@router.get("/campaigns", dependencies=TRAINER)
def list_campaigns(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[dict]:
    return campaign_service.list_campaigns(ctx, limit)


@router.get("/campaigns/{campaign_id}", dependencies=TRAINER)
def get_campaign(ctx: Ctx, campaign_id: CampaignId) -> dict:
    """Progress: items, ratings received and wanted, ratings per rater, the generation's state."""
    return campaign_service.get_campaign(ctx, campaign_id)


@router.get("/campaigns/{campaign_id}/leaderboard", dependencies=TRAINER)
def leaderboard(ctx: Ctx, campaign_id: CampaignId,
                rounds: Annotated[int, Query(ge=10, le=10_000)] = 1000) -> dict:
    """Bradley-Terry ratings with 95% bootstrap intervals and ranks (best first), win
    rates, Likert means and rater agreement."""
    return campaign_service.leaderboard(ctx, campaign_id, rounds)


@router.get("/campaigns/{campaign_id}/export", dependencies=TRAINER)
def export(ctx: Ctx, campaign_id: CampaignId,
           format: Annotated[Literal["dpo", "jsonl", "csv"], Query()] = "dpo") -> PlainTextResponse:
    """dpo: the decided pairs as TRL DPO JSONL (prompt, chosen, rejected); jsonl or csv:
    every rating, raters pseudonymised."""
    if format == "dpo":
        text, name, media = campaign_service.dpo_jsonl(ctx, campaign_id), "dpo", "application/x-ndjson"
    else:
        text = campaign_service.raw_ratings_text(ctx, campaign_id, format)
        name, media = "ratings", "application/x-ndjson" if format == "jsonl" else "text/csv"
    extension = "csv" if format == "csv" else "jsonl"
    return PlainTextResponse(text, media_type=media, headers={
        "content-disposition": f'attachment; filename="campaign-{campaign_id}-{name}.{extension}"'})


@router.post("/campaigns/{campaign_id}/dataset", status_code=201, response_model=DatasetPublic, dependencies=TRAINER)
def save_as_dataset(ctx: Ctx, campaign_id: CampaignId, body: DatasetFromCampaign) -> DatasetPublic:
    """The decided pairs as a new dataset (chosen as the output, rejected kept beside it)."""
    return campaign_service.save_as_dataset(ctx, campaign_id, body.name)


# --- raters -------------------------------------------------------------------------------


@router.get("/rating/campaigns", dependencies=RATER)
def rater_campaigns(ctx: Ctx, request: Request) -> list[dict]:
    """The campaigns open to the caller, with how many items they rated."""
    return campaign_service.rater_campaigns(ctx, _who(request))


@router.get("/campaigns/{campaign_id}/next", dependencies=RATER,
            responses={204: {"description": "Nothing is left for this rater"}})
def next_item(ctx: Ctx, campaign_id: CampaignId, request: Request):
    """The caller's next item: the prompt and two answers labelled A and B."""
    item = campaign_service.next_item(ctx, campaign_id, _who(request))
    return Response(status_code=204) if item is None else item


@router.post("/campaigns/{campaign_id}/ratings", status_code=201, dependencies=RATER)
def rate(ctx: Ctx, campaign_id: CampaignId, body: RatingCreate, request: Request, response: Response) -> dict:
    """Rate an item given to the caller; the same request replayed answers 200 and changes nothing."""
    rating, created = campaign_service.submit_rating(ctx, campaign_id, _who(request), body)
    if not created:
        response.status_code = 200
    return rating


def install_error_handlers(app: FastAPI) -> None:
    """403 for an item not given to the caller, 409 for what cannot be done now."""

    @app.exception_handler(CampaignRefused)
    async def _refused(_request, exc: CampaignRefused):
        return JSONResponse(status_code=exc.status, content={"detail": str(exc), "errors": [str(exc)]})
