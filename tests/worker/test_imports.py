"""Layering: a worker process never loads the web UI, and the studio's queue producer
never loads torch (checked in fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module,forbidden",
    [("worker.tasks", ["gradio", "fastapi"]), ("worker.celery_app", ["torch", "transformers", "gradio"]),
     ("studio.core.config", ["torch", "gradio", "sqlmodel"])],
)
def test_module_does_not_import(module, forbidden):
    code = f"import sys, {module}; print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
