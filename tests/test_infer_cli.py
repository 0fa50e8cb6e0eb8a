"""`studio infer` as docker compose runs it: its own service with a GPU reservation, on
the shared volume, and the studio pointed at it."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from studio.__main__ import app as cli
from studio.settings import Settings
from tests.conftest import ROOT


def test_compose_has_an_infer_service_the_studio_talks_to():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    infer = services["infer"]
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}
    assert infer["command"][:2] == ["studio", "infer"] and "infer" in commands
    assert "studio-data:/data" in infer["volumes"]  # it reads the checkpoints the workers write
    gpu = infer["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["count"] == 1
    url = urlsplit(services["studio"]["environment"]["STUDIO_INFER_URL"])
    assert url.hostname == "infer" and str(url.port) == infer["command"][infer["command"].index("--port") + 1]
    known = {f"STUDIO_{name.upper()}" for name in Settings.model_fields} | {"REDIS_URL"}
    assert set(infer["environment"]) <= known


def test_the_web_apps_chat_side_talks_http_and_never_loads_torch():
    import subprocess
    import sys

    code = ("import sys, studio.api_v1, studio.services.chat, studio.core.model_ids, studio.core.safety; "
            "print(','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
