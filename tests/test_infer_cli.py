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
