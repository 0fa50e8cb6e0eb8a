"""GET /api/jobs/{id}/dashboard (the Jobs tab's panels of one job) and GET
/api/ui/jobs-table (its jobs table), for its script in the browser (dashboard.js). Part of the UI, not of the documented REST API: the answer is HTML
for the page, in the UI's words."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from studio.access import Role, require
from studio.api import Ctx, JobId
from studio.ui import jobs_tab

router = APIRouter(prefix="/api", dependencies=[Depends(require(Role.trainer))], include_in_schema=False)
# A panel's key as the page got it from an earlier answer (16 hex digits), or nothing.
Key = Annotated[str, Query(max_length=16, pattern="^[0-9a-f]*$")]


@router.get("/jobs/{job_id}/dashboard")
def job_dashboard(
    ctx: Ctx, job_id: JobId, status: Key = "", figures: Key = "", samples: Key = "", logs: Key = ""
) -> dict[str, Any]:
    have = {"status": status, "figures": figures, "samples": samples, "logs": logs}
    return jobs_tab.dashboard_view(ctx, job_id, have)


@router.get("/ui/jobs-table")
def jobs_table(ctx: Ctx, have: Key = "") -> dict[str, Any]:
    return jobs_tab.jobs_view(ctx, have)
