"""The Export panel's views: what a card shows for each state, escaped."""

from __future__ import annotations

from datetime import datetime, timezone

from studio.models import ExportPublic, ExportStatus
from studio.ui.export_panel import checks_text, export_card, listing_html, size_text


def _export(**values) -> ExportPublic:
    base = dict(
        id=3, job_id=1, model_id="job-1", checkpoint_step=None, kind="gguf", quantization="q8_0",
        status=ExportStatus.succeeded, progress=1.0, stage="verified", size_bytes=47_727, filename="job-1-q8_0.gguf",
        checks={}, error=None, created_at=datetime.now(timezone.utc), started_at=None, finished_at=None,
    )
    return ExportPublic(**{**base, **values})


def test_a_checked_gguf_shows_its_checks_and_both_downloads():
    checks = {
        "prompts": 8, "greedy_agreement": 1.0, "llama_cpp": {"tokenizer_matches": True, "greedy_agreement": 0.875},
        "metadata": {"pre_tokenizer": "refact"},
        "files": [{"name": "Modelfile", "bytes": 463}, {"name": "job-1-q8_0.gguf", "bytes": 47_264}],
    }
    card = export_card(_export(checks=checks))
    assert "same greedy answers as the merged model on 100% of 8 prompts" in card
    assert "in llama.cpp: 88%" in card and "pre-tokenizer refact" in card
    assert "href='/api/exports/3/download'" in card and "href='/api/exports/3/download?file=Modelfile'" in card
    assert "47.3 kB" in card


def test_a_merged_export_shows_the_logits_check():
    checks = {"prompts": 4, "max_logit_diff": 1.8e-7, "logit_tolerance": 1e-4, "greedy_agreement": 1.0}
    text = checks_text(_export(kind="merged", quantization=None, checks=checks))
    assert "logits within 1.8e-07 of base + adapter (allowed 0.0001)" in text and "100% of 4 prompts" in text


def test_running_and_failed_exports_show_progress_and_the_reason_escaped():
    running = export_card(_export(status=ExportStatus.running, progress=0.4, stage="merging <b>", filename=None))
    assert "width:40%" in running and "merging &lt;b&gt;" in running and "download" not in running
    failed = export_card(_export(status=ExportStatus.failed, error="GGUF check failed: <script>"))
    assert "&lt;script&gt;" in failed and "href" not in failed
    assert "No exports" in listing_html([])
    assert size_text(None) == "" and size_text(999) == "999 B" and size_text(2_500_000_000) == "2.5 GB"
