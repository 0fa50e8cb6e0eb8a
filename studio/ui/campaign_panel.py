"""Rating campaigns, the trainer's side (a panel for the Evaluate tab): start a campaign,
watch its progress and leaderboard fill up, export the votes as DPO data or save them as
a dataset.

Wiring (in the Evaluate tab's build, inside its gr.Tab):
    campaign_panel.build(ctx, page, tab)
The panel's events then carry the tab's trainer rule like the tab's own.
Handlers call studio.services.campaigns; the selected campaign's id is the only thing a
browser session keeps (a dropdown's value).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from studio.core.config import ConfigError
from studio.services import campaigns as campaign_service
from studio.services.campaigns import DEFAULT_CRITERIA, CampaignRefused, CampaignRequest
from studio.services.context import NotFound, StudioContext
from studio.services.evals import EvalSampling
from studio.ui.evaluate_tab import dataset_choices, model_choices
from studio.ui.forms import bind
from studio.ui.text import TEXT, notice, t

POLL_SECONDS = 3.0

TEXT.update({
    "campaign.title": (
        "### Blind rating campaign\nRaters see one prompt and two answers, A and B in a random order, and never "
        "which model wrote which. Their votes become a leaderboard with 95% intervals, and preference data."
    ),
    "campaign.name": "Campaign name (raters never see it)",
    "campaign.models": "Contestants (2 to 8)",
    "campaign.dataset": "Prompts from a dataset",
    "campaign.prompts": "Or type prompts, one per line",
    "campaign.mode": "What raters do",
    "campaign.mode_pairwise": "Pick the better answer",
    "campaign.mode_likert": "Score each answer 1-5",
    "campaign.mode_both": "Both",
    "campaign.criteria": "Criteria scored 1-5, comma-separated",
    "campaign.ratings_per_item": "Ratings wanted per item (from different raters)",
    "campaign.max_rows": "At most this many prompts",
    "campaign.start": "Start campaign",
    "campaign.started": "Campaign {id} started: the answers are being written, then raters can begin.",
    "campaign.refused": "The campaign cannot start",
    "campaign.list": "Campaigns",
    "campaign.none": "No campaign yet.",
    "campaign.label": "#{id} · {name}",
    "campaign.status": ("**Campaign {id}** ({status}): {items} items, {ratings} of {wanted} ratings ({progress}%). "
                        "Raters: {raters}"),
    "campaign.generating": "**Campaign {id}**: writing the answers ({progress}%, {stage})",
    "campaign.failed": "**Campaign {id} failed**: {error}",
    "campaign.agreement": "**Rater agreement**: {reading}{share}",
    "campaign.share": " · all raters chose the same on {share}% of {items} items rated more than once",
    "campaign.col_rank": "Rank",
    "campaign.col_model": "Model",
    "campaign.col_rating": "Rating",
    "campaign.col_ci": "95% interval",
    "campaign.col_record": "Won / lost / tie / both bad",
    "campaign.col_votes": "Votes",
    "campaign.col_criterion": "Criterion",
    "campaign.col_mean": "Mean (95% interval)",
    "campaign.export_dpo": "Download DPO pairs (JSONL)",
    "campaign.export_csv": "Download ratings (CSV)",
    "campaign.export_jsonl": "Download ratings (JSONL)",
    "campaign.dataset_name": "New dataset's name",
    "campaign.save_dataset": "Save the decided pairs as a dataset",
    "campaign.saved": "Saved as dataset {id} ({rows} rows): the chosen answer is the output, the rejected one is kept.",
    "campaign.not_saved": "Not saved",
})


@dataclass
class CampaignPanel:
    campaigns: gr.Dropdown


# --- handlers -------------------------------------------------------------------------


def campaign_choices(ctx: StudioContext) -> list[tuple[str, int]]:
    return [(t("campaign.label", id=c["id"], name=c["name"]), c["id"]) for c in campaign_service.list_campaigns(ctx)]


def refresh_choices(ctx: StudioContext, chosen: list[str] | None, dataset: Optional[int], campaign: Optional[int]):
    models, sets, campaigns = model_choices(ctx), dataset_choices(ctx), campaign_choices(ctx)
    ids = {v for _, v in models}
    return (
        gr.Dropdown(choices=models, value=[m for m in chosen or [] if m in ids]),
        gr.Dropdown(choices=sets, value=dataset if dataset in {v for _, v in sets} else None),
        gr.Dropdown(choices=campaigns, value=campaign if campaign in {v for _, v in campaigns}
                    else (campaigns[0][1] if campaigns else None)),
    )


def start_campaign(ctx: StudioContext, name: str, models: list[str] | None, dataset: Optional[int], prompts: str,
                   mode: str, criteria: str, ratings_per_item: float, max_rows: float, max_tokens: float):
    typed = [line for line in (prompts or "").splitlines() if line.strip()]
    try:
        body = CampaignRequest(
            name=name or "", models=list(models or []), prompts=typed or None, dataset_id=None if typed else dataset,
            mode=mode, criteria=[c for c in (criteria or "").split(",") if c.strip()],
            ratings_per_item=int(ratings_per_item), max_rows=int(max_rows),
            sampling=EvalSampling(max_tokens=int(max_tokens)),
        )
        created = campaign_service.create_campaign(ctx, body)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return notice("error", t("campaign.refused"), lines), gr.Dropdown()
    except (ConfigError, NotFound) as exc:
        return notice("error", t("campaign.refused"), getattr(exc, "errors", [str(exc)])), gr.Dropdown()
    return (notice("ok", t("campaign.started", id=created["id"])),
            gr.Dropdown(choices=campaign_choices(ctx), value=created["id"]))


def _status(c: dict) -> str:
    if c["status"] == "failed":
        return t("campaign.failed", id=c["id"], error=c["error"] or "")
    if c["status"] == "generating":
        g = c["generation"]
        return t("campaign.generating", id=c["id"], progress=f"{g['progress'] * 100:.0f}", stage=g["stage"])
    raters = ", ".join(f"{name} {n}" for name, n in sorted(c["ratings_per_rater"].items())) or "-"
    return t("campaign.status", id=c["id"], status=c["status"], items=c["items"], ratings=c["ratings"],
             wanted=c["ratings_wanted"], progress=f"{c['progress'] * 100:.0f}", raters=raters)


def board_tables(board: dict) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The leaderboard, the Likert means and the agreement line."""
    ranks = pd.DataFrame(
        [[m["rank"], m["model"], f"{m['rating']:.0f}", f"{m['ci_low']:.0f} to {m['ci_high']:.0f}",
          f"{m['wins']} / {m['losses']} / {m['ties']} / {m['both_bad']}", m["n"]] for m in board["models"]],
        columns=[t("campaign.col_rank"), t("campaign.col_model"), t("campaign.col_rating"), t("campaign.col_ci"),
                 t("campaign.col_record"), t("campaign.col_votes")])
    likert = pd.DataFrame(
        [[row["model"], row["criterion"], f"{row['mean']:.2f}" + (
            f" ({row['ci_low']:.2f} to {row['ci_high']:.2f})" if row["ci_low"] is not None else ""), row["n"]]
         for row in board["likert"]],
        columns=[t("campaign.col_model"), t("campaign.col_criterion"), t("campaign.col_mean"),
                 t("campaign.col_votes")])
    agreed = board["agreement"]
    share = (t("campaign.share", share=f"{agreed['agreed_share'] * 100:.0f}", items=agreed["items_compared"])
             if agreed["agreed_share"] is not None else "")
    return ranks, likert, t("campaign.agreement", reading=agreed["reading"], share=share)


def show_campaign(ctx: StudioContext, campaign_id: Optional[int]):
    """Progress, leaderboard, Likert means and agreement; the timer runs until all ratings are in."""
    if campaign_id is None:
        return t("campaign.none"), None, None, "", gr.Timer(active=False)
    try:
        c = campaign_service.get_campaign(ctx, int(campaign_id))
        ranks, likert, agreement = board_tables(campaign_service.leaderboard(ctx, int(campaign_id), rounds=500))
    except NotFound as exc:
        return str(exc), None, None, "", gr.Timer(active=False)
    busy = c["status"] == "generating" or (c["status"] == "open" and c["progress"] < 1.0)
    return _status(c), ranks, likert, agreement, gr.Timer(active=busy)


def export(ctx: StudioContext, fmt: str, campaign_id: Optional[int]):
    """A file for the browser to download, written under Gradio's own temp folder."""
    if campaign_id is None:
        return None
    text = (campaign_service.dpo_jsonl(ctx, int(campaign_id)) if fmt == "dpo"
            else campaign_service.raw_ratings_text(ctx, int(campaign_id), fmt))
    folder = Path(tempfile.mkdtemp(prefix="campaign-export-"))
    name = f"campaign-{campaign_id}-{'dpo' if fmt == 'dpo' else 'ratings'}.{'csv' if fmt == 'csv' else 'jsonl'}"
    (folder / name).write_text(text, encoding="utf-8")
    return str(folder / name)


def save_dataset(ctx: StudioContext, campaign_id: Optional[int], name: str) -> str:
    if campaign_id is None:
        return notice("error", t("campaign.not_saved"), [t("campaign.none")])
    try:
        dataset = campaign_service.save_as_dataset(ctx, int(campaign_id), name)
    except (CampaignRefused, NotFound) as exc:
        return notice("error", t("campaign.not_saved"), [str(exc)])
    except Exception as exc:  # a dataset the store refuses (DatasetError) names its problem
        return notice("error", t("campaign.not_saved"), getattr(exc, "errors", [str(exc)]))
    return notice("ok", t("campaign.saved", id=dataset.id, rows=dataset.row_count))


# --- layout ---------------------------------------------------------------------------


def build(ctx: StudioContext, page: gr.Blocks, tab: gr.Tab) -> CampaignPanel:
    fields = CampaignRequest.model_fields
    gr.Markdown(t("campaign.title"))
    with gr.Row():
        name = gr.Textbox(label=t("campaign.name"), max_length=200, scale=2, elem_id="campaign-name")
        models = gr.Dropdown(label=t("campaign.models"), multiselect=True, max_choices=campaign_service.MAX_CONTESTANTS,
                             scale=4, elem_id="campaign-models")
    with gr.Row():
        dataset = gr.Dropdown(label=t("campaign.dataset"), scale=3, elem_id="campaign-dataset")
        max_rows = gr.Number(fields["max_rows"].default, label=t("campaign.max_rows"), precision=0, minimum=1,
                             maximum=5000, scale=1, elem_id="campaign-max-rows")
        max_tokens = gr.Slider(1, 512, value=EvalSampling.model_fields["max_tokens"].default, step=1,
                               label=t("eval.max_tokens"), scale=2, elem_id="campaign-max-tokens")
    prompts = gr.Textbox(label=t("campaign.prompts"), lines=2, elem_id="campaign-prompts")
    with gr.Row():
        mode = gr.Radio([(t(f"campaign.mode_{m}"), m) for m in ("pairwise", "likert", "both")], value="pairwise",
                        label=t("campaign.mode"), scale=2, elem_id="campaign-mode")
        criteria = gr.Textbox(", ".join(DEFAULT_CRITERIA), label=t("campaign.criteria"), scale=2,
                              elem_id="campaign-criteria")
        per_item = gr.Number(fields["ratings_per_item"].default, label=t("campaign.ratings_per_item"), precision=0,
                             minimum=1, maximum=50, scale=1, elem_id="campaign-ratings-per-item")
    start_btn = gr.Button(t("campaign.start"), variant="primary", elem_id="campaign-start")
    message = gr.HTML(elem_id="campaign-message")

    campaigns = gr.Dropdown(label=t("campaign.list"), elem_id="campaign-list")
    status = gr.Markdown(elem_id="campaign-status")
    ranks = gr.Dataframe(interactive=False, wrap=True, elem_id="campaign-leaderboard")
    agreement = gr.Markdown(elem_id="campaign-agreement")
    likert = gr.Dataframe(interactive=False, wrap=True, elem_id="campaign-likert")
    with gr.Row():
        dpo_btn = gr.Button(t("campaign.export_dpo"), elem_id="campaign-export-dpo")
        csv_btn = gr.Button(t("campaign.export_csv"), elem_id="campaign-export-csv")
        jsonl_btn = gr.Button(t("campaign.export_jsonl"), elem_id="campaign-export-jsonl")
    download = gr.File(interactive=False, elem_id="campaign-download")
    with gr.Row():
        dataset_name = gr.Textbox(label=t("campaign.dataset_name"), max_length=200, scale=3,
                                  elem_id="campaign-dataset-name")
        save_btn = gr.Button(t("campaign.save_dataset"), scale=1, elem_id="campaign-save-dataset")
    saved = gr.HTML(elem_id="campaign-saved")
    timer = gr.Timer(POLL_SECONDS, active=False)

    choices = [models, dataset, campaigns]
    shown = [status, ranks, likert, agreement, timer]
    for trigger in (page.load, tab.select):
        trigger(bind(refresh_choices, ctx), choices, choices, show_progress="hidden")
    start_btn.click(bind(start_campaign, ctx), [name, models, dataset, prompts, mode, criteria, per_item, max_rows,
                                                max_tokens], [message, campaigns])
    for trigger in (campaigns.change, timer.tick):
        trigger(bind(show_campaign, ctx), campaigns, shown, show_progress="hidden")
    for button, fmt in ((dpo_btn, "dpo"), (csv_btn, "csv"), (jsonl_btn, "jsonl")):
        button.click(bind(export, ctx, fmt), campaigns, download)
    save_btn.click(bind(save_dataset, ctx), [campaigns, dataset_name], saved)
    return CampaignPanel(campaigns=campaigns)
