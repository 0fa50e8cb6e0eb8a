"""The page a rater gets (mounted at /rate): only the Evaluation tab, a queue of items.

One prompt, two answers labelled A and B, a choice (A / B / tie / both bad) and optional
1-5 scores per criterion. Raters never load the trainers' page, and nothing this page
sends (its config, its event payloads) names a model: the handlers only pass on what
studio.services.campaigns gives raters. The current item lives in gr.State, on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gradio as gr

from studio.access import Role
from studio.core.config import ConfigError
from studio.services import accounts
from studio.services import campaigns as campaign_service
from studio.services.campaigns import MAX_CRITERIA, CampaignRefused
from studio.services.context import NotFound, StudioContext
from studio.ui.text import t

SCORE_CHOICES = ["1", "2", "3", "4", "5"]
SIDES = ("A", "B")


@dataclass
class RaterView:
    """The components a shown item fills, in the order handlers return them."""

    status: gr.Markdown
    prompt: gr.Textbox
    input: gr.Textbox
    answers: list[gr.Textbox]
    votes: gr.Row
    submit_scores: gr.Button
    comment: gr.Textbox
    scores: list[gr.Radio]  # A's criteria, then B's

    def outputs(self) -> list[Any]:
        return [self.status, self.prompt, self.input, *self.answers, self.votes, self.submit_scores,
                self.comment, *self.scores]


def build_rater_ui(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks(title=t("app.title")) as page:
        header = gr.HTML(elem_id="user-bar")
        current = gr.State(None)  # {"campaign": id, "item_id": id, "mode": ..., "criteria": [...]}
        with gr.Tabs():
            with gr.Tab(t("tab.evaluation"), id="evaluation", elem_id="tab-evaluation"):
                with gr.Row():
                    campaign = gr.Dropdown(label=t("rater.campaign"), choices=[], elem_id="rater-campaign", scale=3)
                    refresh = gr.Button(t("rater.refresh"), elem_id="rater-refresh", scale=1)
                status = gr.Markdown(t("rater.none"), elem_id="rater-queue")
                prompt = gr.Textbox(label=t("rater.prompt"), interactive=False, visible=False, lines=3,
                                    elem_id="rater-prompt")
                extra = gr.Textbox(label=t("rater.input"), interactive=False, visible=False, elem_id="rater-input")
                with gr.Row():
                    answers = [gr.Textbox(label=t("rater.answer", label=side), interactive=False, visible=False,
                                          lines=6, elem_id=f"rater-answer-{side.lower()}") for side in SIDES]
                with gr.Row():
                    scores = []
                    for side in SIDES:
                        with gr.Column():
                            scores += [gr.Radio(SCORE_CHOICES, label="", visible=False,
                                                elem_id=f"rater-score-{side.lower()}-{k}")
                                       for k in range(MAX_CRITERIA)]
                comment = gr.Textbox(label=t("rater.comment"), visible=False, elem_id="rater-comment")
                with gr.Row(visible=False) as votes:
                    buttons = {w: gr.Button(t(f"rater.vote_{w.lower()}"), elem_id=f"rater-vote-{w.lower()}")
                               for w in ("A", "B", "tie", "both_bad")}
                submit_scores = gr.Button(t("rater.submit_scores"), visible=False, elem_id="rater-submit-scores")
        view = RaterView(status, prompt, extra, answers, votes, submit_scores, comment, scores)

        # Closures, not functools.partial: Gradio finds the gr.Request argument by its
        # type hint, which it cannot read through a partial.
        def open_rater_queue(request: gr.Request):
            return open_queue(ctx, request)

        def show_rater_next(request: gr.Request, campaign_id):
            return show_next(ctx, campaign_id, request)

        def rate_item(winner: Optional[str]):
            def rate(request: gr.Request, current, comment_text, *radios):
                return vote(ctx, winner, current, comment_text, radios, request)

            rate.__name__ = f"rate_{(winner or 'scores').lower()}"
            return rate

        page.load(user_bar, None, header, show_progress="hidden")
        page.load(open_rater_queue, None, [campaign, current, *view.outputs()], show_progress="hidden")
        refresh.click(open_rater_queue, None, [campaign, current, *view.outputs()])
        campaign.input(show_rater_next, campaign, [current, *view.outputs()])
        for winner, button in buttons.items():
            button.click(rate_item(winner), [current, comment, *scores], [current, *view.outputs()])
        submit_scores.click(rate_item(None), [current, comment, *scores], [current, *view.outputs()])
    return page


def user_bar(request: gr.Request) -> str:
    from studio.ui.app import user_bar_html

    return user_bar_html(request)


def _rater(ctx: StudioContext, request: gr.Request) -> Optional[str]:
    """The caller's name when they may rate (raters and admins), else None."""
    name = getattr(request, "username", None) or accounts.LOCAL_USER
    identity = accounts.identity_by_name(ctx.engine, name)
    return name if identity is not None and identity.role in (Role.rater, Role.admin) else None


def _message(text: str) -> list[Any]:
    """Only a message: the item's fields are hidden."""
    hidden = gr.update(visible=False, value=None)
    return [text, hidden, hidden, hidden, hidden, gr.update(visible=False), gr.update(visible=False),
            hidden, *[hidden] * (2 * MAX_CRITERIA)]


def _shown(item: dict[str, Any], note: str = "") -> list[Any]:
    pairwise, scored = item["mode"] in ("pairwise", "both"), item["mode"] in ("likert", "both")
    intro = t("rater.likert_intro") if item["mode"] == "likert" else t("rater.intro")
    radios = []
    for side in SIDES:
        for k in range(MAX_CRITERIA):
            if k < len(item["criteria"]):
                radios.append(gr.update(visible=True, value=None,
                                        label=t("rater.score", label=side, criterion=item["criteria"][k])))
            else:
                radios.append(gr.update(visible=False, value=None))
    texts = {r["label"]: r["text"] for r in item["responses"]}
    return [
        note + t("rater.progress", rated=item["rated"]) + "\n\n" + intro,
        gr.update(visible=True, value=item["prompt"]),
        gr.update(visible=bool(item["input"]), value=item["input"]),
        *[gr.update(visible=True, value=texts[side]) for side in SIDES],
        gr.update(visible=pairwise), gr.update(visible=scored and not pairwise),
        gr.update(visible=True, value=""), *radios,
    ]


def _next(ctx: StudioContext, campaign_id: Optional[int], rater: Optional[str], note: str = "") -> list[Any]:
    """[state, *view] for the rater's next item in the campaign."""
    if rater is None:
        return [None, *_message(t("rater.not_rater"))]
    if campaign_id is None:
        return [None, *_message(t("rater.none"))]
    try:
        item = campaign_service.next_item(ctx, int(campaign_id), rater)
    except CampaignRefused as exc:
        return [None, *_message(t("rater.preparing") if "still being written" in str(exc) else t("rater.closed"))]
    except NotFound:
        return [None, *_message(t("rater.none"))]
    if item is None:
        done = next((c["rated"] for c in campaign_service.rater_campaigns(ctx, rater) if c["id"] == int(campaign_id)), 0)
        return [None, *_message(note + t("rater.done", rated=done))]
    state = {"campaign": int(campaign_id), "item_id": item["item_id"], "mode": item["mode"],
             "criteria": item["criteria"]}
    return [state, *_shown(item, note)]


def open_queue(ctx: StudioContext, request: gr.Request) -> list[Any]:
    """The campaigns open to this rater, and the next item of the first with work left."""
    rater = _rater(ctx, request)
    open_ones = campaign_service.rater_campaigns(ctx, rater) if rater else []
    choices = [(t("rater.campaign_choice", id=c["id"], rated=c["rated"]) if c["status"] == "open"
                else t("rater.campaign_preparing", id=c["id"]), c["id"]) for c in open_ones]
    first = open_ones[0]["id"] if open_ones else None
    return [gr.update(choices=choices, value=first), *_next(ctx, first, rater)]


def show_next(ctx: StudioContext, campaign_id: Optional[int], request: gr.Request) -> list[Any]:
    return _next(ctx, campaign_id, _rater(ctx, request))


def vote(ctx: StudioContext, winner: Optional[str], current: Optional[dict], comment: str,
         radios: tuple[Optional[str], ...], request: gr.Request) -> list[Any]:
    """Store the rating for the item on screen, then show the next one."""
    rater = _rater(ctx, request)
    if rater is None or not current:
        return _next(ctx, None if not current else current["campaign"], rater)
    criteria = current["criteria"]
    scores = {side: {c: int(radios[s * MAX_CRITERIA + k]) for k, c in enumerate(criteria)
                     if radios[s * MAX_CRITERIA + k]} for s, side in enumerate(SIDES)}
    request_body = campaign_service.RatingRequest(item_id=current["item_id"], winner=winner,
                                                  scores={s: v for s, v in scores.items() if v}, comment=comment or "")
    try:
        campaign_service.submit_rating(ctx, current["campaign"], rater, request_body)
    except ConfigError as exc:
        gr.Warning(t("rater.problem", problem="; ".join(exc.errors)))
        return [current, *[gr.update() for _ in range(8 + 2 * MAX_CRITERIA)]]
    except (CampaignRefused, NotFound) as exc:
        gr.Warning(t("rater.problem", problem=str(exc)))
    return _next(ctx, current["campaign"], rater, note=t("rater.saved"))
