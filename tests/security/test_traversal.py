"""About 50 traversal payloads on every path-like input of the real `studio serve`: the
base model of a job, a plan, a quality report and a token preview; upload file names;
dataset export formats and version ids; Gradio's file route. A secret folder outside the
data dir holds a config.json and a canary file: no answer may carry their content, and
for paths outside the model roots the answer must be the same whether the path exists,
is a file, is missing or is a symlink planted inside the data dir (no oracle). The RCE
case: a config.json and a .py uploaded through Gradio, then named as the base model with
trust_remote_code, are refused and the code never runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings, server_starter

pytestmark = pytest.mark.db

CANARY = "canary-traversal-5d1e"
SECRET_TYPE = "secret-model-type-9b2"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    base = tmp_path_factory.mktemp("traversal")
    secret = base / "secret"
    secret.mkdir()
    (secret / "config.json").write_text(json.dumps({"model_type": SECRET_TYPE, "note": CANARY}))
    (secret / "canary.txt").write_text(CANARY)
    data = base / "data"
    models = data / "models"
    models.mkdir(parents=True)
    (models / "link-out").symlink_to(secret, target_is_directory=True)
    (models / "link-missing").symlink_to(base / "nowhere", target_is_directory=True)
    (models / "config-link").mkdir()
    (models / "config-link" / "config.json").symlink_to(secret / "config.json")
    (models / "empty").mkdir()
    settings = make_settings(data, model_dirs=[models])
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        rows = b'{"instruction": "q", "output": "a"}\n' * 4
        dataset = client.post("/api/datasets", files={"file": ("t.jsonl", rows)}).json()["id"]
        yield client, settings, secret, dataset


def _payloads(settings, secret: Path) -> list[str]:
    data, models = settings.data_dir.resolve(), settings.data_dir.resolve() / "models"
    return [
        "../../etc", "../../../../../../etc/passwd", "/etc", "/etc/passwd", "/", "//etc", "/./etc", "/etc/",
        "~", "~/", "~root", "~/.ssh", "~nobody-here/x",
        "%2e%2e/%2e%2e/etc", "..%2f..%2fetc", "....//....//etc", "./../../", "..\\..\\etc",
        "C:\\Windows\\System32", "\\\\server\\share\\model", "file:///etc/passwd", "file://localhost/etc",
        "/proc/self/environ", "/proc/self/cwd", "/proc/self/root/etc", "/dev/zero", "/dev/stdin",
        "models/x\x00/../../etc", "/etc\x00", tempfile.gettempdir(), str(Path(tempfile.gettempdir()) / "gradio"),
        str(settings.gradio_dir), str(data), str(data / "studio.db"), str(data / "artifacts"),
        str(secret), str(secret / "config.json"), str(secret) + "-missing", str(secret / "canary.txt"),
        str(models / "link-out"), str(models / "link-missing"), str(models / "config-link"),
        str(models / ".." / ".." / "secret"), str(models) + "/../../secret", "org/name/../../etc", "org/../../etc",
        "  /etc  ", "\u2215etc", "/" + "a" * 400, "models/../../../etc",
    ]


def _requests(dataset: int, base_model: str) -> list[tuple[str, dict]]:
    return [
        ("/api/jobs", {"dataset_id": dataset, "base_model": base_model}),
        ("/api/jobs/plan", {"dataset_id": dataset, "base_model": base_model}),
        (f"/api/datasets/{dataset}/quality", {"base_model": base_model}),
        (f"/api/datasets/{dataset}/preview", {"index": 0, "base_model": base_model}),
    ]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _shape(detail: str, payload: str) -> str:
    """The message with the payload itself taken out: what could tell one path from another."""
    return detail.replace(payload.strip()[:200], "<path>")


def test_traversal_payloads_read_nothing_outside_and_leak_nothing(studio):
    client, settings, secret, dataset = studio
    payloads = _payloads(settings, secret)
    before = (client.get("/api/jobs").json(), _tree(settings.artifacts_root))
    statuses: dict[int, int] = {}
    outside_shapes: set[str] = set()
    for payload in payloads:
        for path, body in _requests(dataset, payload):
            response = client.post(path, json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code in (404, 422), (payload, path, response.status_code, response.text[:300])
            assert CANARY not in response.text and SECRET_TYPE not in response.text, (payload, path)
            detail = response.json()["detail"]
            if "is not a model folder the studio may load" in detail:
                outside_shapes.add(_shape(detail, payload))
    assert (client.get("/api/jobs").json(), _tree(settings.artifacts_root)) == before, "a refused job was stored"
    print(f"\ntraversal: {len(payloads)} base-model payloads x 4 routes = {sum(statuses.values())} requests, "
          f"statuses {statuses}; 0 answers carry the secret; {len(outside_shapes)} message shape(s) for paths "
          "outside the roots")
    assert len(payloads) >= 50
    assert len(outside_shapes) == 1, outside_shapes


def test_no_oracle_for_paths_outside_the_roots(studio):
    """Existing folder, missing folder, a file, a folder with a config.json, a symlink into
    the secret and a dangling one: one answer."""
    client, settings, secret, dataset = studio
    models = settings.data_dir.resolve() / "models"
    probes = ["/etc", "/etc-missing-7", "/etc/passwd", str(secret), str(secret) + "-missing", str(secret / "canary.txt"),
              str(models / "link-out"), str(models / "link-missing"), str(models / "config-link"), "/root", "/proc/1/root"]
    for path, _ in _requests(dataset, ""):
        shapes = set()
        for probe in probes:
            body = dict(_requests(dataset, probe))[path]
            detail = client.post(path, json=body).json()["detail"]
            shapes.add(_shape(detail, probe))
        assert len(shapes) == 1, (path, shapes)
    # inside the roots the studio stays helpful
    empty = str(models / "empty")
    detail = client.post("/api/jobs/plan", json={"dataset_id": dataset, "base_model": empty}).json()["detail"]
    assert "has no config.json" in detail
    detail = client.post("/api/jobs/plan", json={"dataset_id": dataset, "base_model": str(models / "nope")}).json()["detail"]
    assert "does not exist" in detail
    print(f"\nno oracle: {len(probes)} paths outside the roots x 4 routes, one message each route")


def test_other_path_like_inputs(studio):
    client, settings, secret, dataset = studio
    outside = settings.data_dir.resolve().parent
    before = _tree(outside)
    checked = 0
    for name in ("../../../../evil.jsonl", "..\\..\\evil.jsonl", "/tmp/evil.jsonl", "a/../../evil.jsonl",
                 "%2e%2e%2fevil.jsonl", "evil.jsonl\x00.txt"):
        response = client.post("/api/datasets", files={"file": (name, b'{"instruction": "q", "output": "a"}\n')})
        assert response.status_code in (201, 422), (name, response.text)
        if response.status_code == 201:
            assert "/" not in response.json()["source_filename"] and "\\" not in response.json()["source_filename"]
        checked += 1
    after = _tree(outside)
    new = {p for p in set(after) - set(before) if not p.startswith("data/")}
    assert not new, new  # nothing was written beside the data dir
    for params in ({"format": "../../etc/passwd"}, {"format": "jsonl", "version_id": "../1"},
                   {"format": "jsonl", "version_id": "-1"}, {"format": "jsonl", "version_id": str(2**64)},
                   {"format": "csv\x00"}, {"format": "file:///etc/passwd"}):
        response = client.get(f"/api/datasets/{dataset}/export", params=params)
        assert response.status_code == 422, (params, response.status_code)
        checked += 1
    for path in ("/api/datasets/..%2f..%2fetc/export", "/api/datasets/%2e%2e/rows", f"/api/datasets/{2**64}/export",
                 "/api/datasets/1%00/rows", "/api/jobs/..%2F1", f"/api/jobs/{2**63}/logs"):
        response = client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        checked += 1
    for target in (secret / "canary.txt", secret / "config.json", Path("/etc/passwd")):
        for route in (f"/gradio_api/file={target}", f"/file={target}", f"/gradio_api/file=../../{target}"):
            response = client.get(route)
            assert CANARY not in response.text and "root:x:0" not in response.text, route
            assert response.status_code >= 400, (route, response.status_code)
            checked += 1
    print(f"\nother inputs: {checked} file names, export parameters, path ids and Gradio file routes; "
          "nothing written beside the data dir, no answer carries a secret")


def test_remote_code_uploaded_through_gradio_never_runs(studio):
    """The attack of issue 8: a config.json and a .py through Gradio's upload route, that
    folder as the base model with trust_remote_code. Refused at the plan and at launch;
    the code would have written a marker file."""
    client, settings, _secret, dataset = studio
    marker = settings.data_dir.resolve().parent / "pwned"
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    config = {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}, "architectures": ["Evil"]}
    uploaded = client.post(
        "/gradio_api/upload", files=[("files", ("config.json", json.dumps(config).encode())), ("files", ("evil.py", code.encode()))]
    )
    assert uploaded.status_code == 200, uploaded.text
    paths = uploaded.json()
    folder = str(Path(paths[0]).parent)
    assert Path(folder).resolve().is_relative_to(settings.gradio_dir), (folder, settings.gradio_dir)
    for trust in (True, False):
        for path in ("/api/jobs/plan", "/api/jobs"):
            body = {"dataset_id": dataset, "base_model": folder, "config": {"model": {"trust_remote_code": trust}}}
            response = client.post(path, json=body)
            assert response.status_code == 422, response.text
            field = "model.trust_remote_code" if trust else "model.base_model"
            assert response.json()["detail"].startswith(field), response.text
            assert "evil" not in response.json()["detail"].split("'")[-1]
    assert not marker.exists()
    print(f"\nRCE case: uploaded code in {re.sub(r'[0-9a-f]{20,}', '<hash>', folder)} refused 4 times, never ran")
