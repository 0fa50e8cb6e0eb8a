"""Dataset editing over the REST API of a real `studio serve`: versions, paging, search,
edits, export, split, and bad requests that get a 4xx and change nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import make_settings, server_starter
from tests.test_api import _rows, _state, _upload

pytestmark = pytest.mark.db  # a real server on the DB under test: also run on PostgreSQL


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("api-datasets") / "data")
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings


@pytest.fixture
def dataset(studio) -> dict:
    client, _ = studio
    records = [{**r, "category": "even" if i % 2 == 0 else "odd"} for i, r in enumerate(_rows(30))]
    created = _upload(client, "thirty.jsonl", "\n".join(json.dumps(r) for r in records).encode())
    assert created.status_code == 201, created.text
    return created.json()


def test_openapi_lists_the_dataset_routes(studio):
    client, _ = studio
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/datasets/inspect",
        "/api/datasets/{dataset_id}/versions",
        "/api/datasets/{dataset_id}/page",
        "/api/datasets/{dataset_id}/rows/{index}",
        "/api/datasets/{dataset_id}/rows/delete",
        "/api/datasets/{dataset_id}/revert",
        "/api/datasets/{dataset_id}/export",
        "/api/datasets/{dataset_id}/split",
    ):
        assert path in paths, path


def test_edit_add_delete_revert_make_versions(studio, dataset):
    client, _ = studio
    base = f"/api/datasets/{dataset['id']}"
    edited = client.patch(f"{base}/rows/3", json={"column": "output", "value": "three", "base_version_id": dataset["version_id"]})
    assert edited.status_code == 200 and edited.json()["version"] == 2, edited.text
    added = client.post(f"{base}/rows", json={"row": {"instruction": "New", "output": "row", "category": "odd"}})
    assert added.status_code == 201 and added.json()["row_count"] == 31
    deleted = client.post(f"{base}/rows/delete", json={"indices": [0, 1, 2]})
    assert deleted.json()["row_count"] == 28 and deleted.json()["version"] == 4
    page = client.get(f"{base}/page", params={"limit": 2}).json()
    assert page["total"] == 28 and page["rows"][0] == {"index": 0, "row": {**_rows(4)[3], "output": "three", "category": "odd"}}
    history = client.get(f"{base}/versions").json()
    assert [v["number"] for v in history] == [4, 3, 2, 1]
    assert [v["note"] for v in history[:3]] == ["deleted 3 rows (0, 1, 2)", "added row 30", "edited 'output' of row 3"]
    back = client.post(f"{base}/revert", json={"version_id": dataset["version_id"]}).json()
    assert back["version"] == 5 and back["content_hash"] == dataset["content_hash"]
    stale = client.patch(f"{base}/rows/0", json={"column": "output", "value": "x", "base_version_id": dataset["version_id"]})
    assert stale.status_code == 409 and "reload and edit again" in stale.json()["detail"]


def test_search_filter_and_export(studio, dataset):
    client, _ = studio
    base = f"/api/datasets/{dataset['id']}"
    found = client.get(f"{base}/page", params={"search": "repeat 2", "category": "even"}).json()
    assert [r["index"] for r in found["rows"]] == [2, 20, 22, 24, 26, 28] and found["total"] == 6
    assert client.get(f"{base}/categories").json() == {"even": 15, "odd": 15}
    client.patch(f"{base}/rows/0", json={"column": "output", "value": "=1+1"})
    csv_export = client.get(f"{base}/export", params={"format": "csv"})
    assert csv_export.headers["content-type"].startswith("text/csv")
    assert "thirty-v2.csv" in csv_export.headers["content-disposition"]
    assert csv_export.text.splitlines()[1] == "Repeat 0,,'=1+1,even"
    jsonl = client.get(f"{base}/export", params={"format": "jsonl", "version_id": dataset["version_id"]})
    assert len(jsonl.text.splitlines()) == 30


def test_split_is_stored(studio, dataset):
    client, _ = studio
    split = client.post(f"/api/datasets/{dataset['id']}/split", json={"validation_fraction": 0.2, "seed": 3})
    assert split.status_code == 200 and split.json()["validation_rows"] == 6
    rows = client.get(f"/api/datasets/{dataset['id']}/rows", params={"limit": 500}).json()
    held = [r for r in rows if r["split"] == "validation"]
    assert sorted(r["category"] for r in held) == ["even"] * 3 + ["odd"] * 3


@pytest.mark.parametrize(
    "method,path,body,status,expected",
    [
        ("patch", "rows/99", {"column": "output", "value": "x"}, 422, "row 99: no such row"),
        ("patch", "rows/0", {"column": "output", "value": ""}, 422, "row 0: 'output' is empty"),
        ("patch", "rows/0", {"column": "output", "value": 5}, 422, "row 0: 'output' must be text"),
        ("patch", "rows/0", {"column": "", "value": "x"}, 422, "column: String should have at least 1 character"),
        ("post", "rows", {"row": {"output": "x"}}, 422, "new row: missing field 'instruction'"),
        ("post", "rows/delete", {"indices": []}, 422, "indices: List should have at least 1 item"),
        ("post", "rows/delete", {"indices": [40]}, 422, "row 40: no such row"),
        ("post", "revert", {"version_id": 99999}, 404, "has no version id 99999"),
        ("post", "split", {"by_column": "category"}, 422, "row 0: column 'category' holds 'even'"),
        ("post", "split", {"validation_fraction": 2}, 422, "validation_fraction: Input should be less than or equal to 0.9"),
        ("get", "export?format=xlsx", None, 422, "format: Input should be"),
        ("get", "page?version_id=99999", None, 404, "has no version id 99999"),
    ],
)
def test_bad_edits_are_4xx_and_change_nothing(studio, dataset, method, path, body, status, expected):
    client, settings = studio
    base = f"/api/datasets/{dataset['id']}"
    before = (client.get(f"{base}/versions").json(), _state(settings))
    response = client.request(method.upper(), f"{base}/{path}", json=body)
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"] and response.json()["errors"]
    assert (client.get(f"{base}/versions").json(), _state(settings)) == before


def test_missing_dataset_is_404(studio):
    client, _ = studio
    assert client.get("/api/datasets/9999/versions").status_code == 404
    assert client.get("/api/datasets/9999/page").status_code == 404
    assert client.patch("/api/datasets/9999/rows/0", json={"column": "output", "value": "x"}).status_code == 404


def test_quality_report_fix_and_preview(studio, tiny_model_dir):
    client, _ = studio
    records = _rows(6) + [_rows(1)[0], {"instruction": "Leak", "input": "", "output": "a ### Response: b"}]
    created = _upload(client, "quality.jsonl", "\n".join(json.dumps(r) for r in records).encode()).json()
    base = f"/api/datasets/{created['id']}"
    view = {"base_model": str(tiny_model_dir), "max_length": 32, "template": {"name": "chatml"}}
    report = client.post(f"{base}/quality", json=view)
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["version"] == 1 and body["exact_duplicates"]["examples"] == [[0, 6]]
    assert body["marker_leaks"]["examples"] == [7] and body["figures"]["lengths"]["data"]
    assert "drop_duplicates" in body["fixes"]
    fixed = client.post(f"{base}/fixes", json={"fix": "drop_duplicates"})
    assert fixed.status_code == 200 and fixed.json()["row_count"] == 7 and fixed.json()["version"] == 2
    assert client.get(f"{base}/versions").json()[0]["note"] == "drop exact duplicates (keep the first): 1 rows"
    again = client.post(f"{base}/fixes", json={"fix": "drop_duplicates"})
    assert again.status_code == 422 and "nothing to do" in again.json()["detail"]
    preview = client.post(f"{base}/preview", json={**view, "max_length": 256, "index": 6}).json()
    trained = "".join(s["text"] for s in preview["spans"] if s["trained"])
    assert trained.startswith("a ### Response: b<|im_end|>") and preview["trained_tokens"] > 0


@pytest.mark.parametrize(
    "route,body,status,expected",
    [
        ("quality", {"base_model": "/no/such/model"}, 422, "'/no/such/model' is not a model folder the studio may load"),
        ("quality", {"template": {"name": "mistral"}}, 422, "template.name: Input should be"),
        ("quality", {"template": {"name": "custom", "custom_template": "{% if %}"}}, 422, "custom_template: line 1"),
        ("quality", {"max_length": 4}, 422, "max_length: Input should be greater than or equal to 16"),
        ("preview", {"index": 500}, 422, "row 500: no such row"),
        ("preview", {}, 422, "index: Field required"),
        ("fixes", {"fix": "drop_everything"}, 422, "fix: Input should be"),
    ],
)
def test_bad_report_requests_are_4xx(studio, dataset, route, body, status, expected):
    client, settings = studio
    base = f"/api/datasets/{dataset['id']}"
    before = (client.get(f"{base}/versions").json(), _state(settings))
    response = client.post(f"{base}/{route}", json=body)
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"], response.json()
    assert (client.get(f"{base}/versions").json(), _state(settings)) == before


def test_model_template_without_chat_template_is_named(studio, dataset, tmp_path, tiny_model_dir):
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = None
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tok.save_pretrained(folder)
    client, _ = studio
    response = client.post(
        f"/api/datasets/{dataset['id']}/preview", json={"base_model": str(folder), "template": {"name": "model"}, "index": 0}
    )
    assert response.status_code == 422 and "has no chat template" in response.json()["detail"], response.text
