"""The REST API of the real `studio serve` process, over HTTP: happy paths, and bad input
that must get a 4xx naming the file, row or field while storing nothing."""

from __future__ import annotations

import hashlib
import json
import httpx
import pytest

from tests.conftest import make_settings, server_starter, wait_until, worker_starter

pytestmark = pytest.mark.db  # a real server on the DB under test: also run on PostgreSQL


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("api") / "data", max_upload_mb=0.05)
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client, settings


def _state(settings) -> dict[str, str]:
    """A checksum of every file in the artifact store."""
    root = settings.artifacts_root
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def _upload(client, filename: str, data: bytes, **form):
    return client.post("/api/datasets", files={"file": (filename, data)}, data=form)


def _rows(n: int) -> list[dict]:
    return [{"instruction": f"Repeat {i}", "input": "", "output": f"{i}"} for i in range(n)]


def test_health_and_openapi(studio):
    client, _ = studio
    assert client.get("/api/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/datasets", "/api/jobs", "/api/jobs/{job_id}/metrics", "/api/jobs/{job_id}/cancel",
                 "/api/jobs/plan", "/api/workers"):
        assert path in paths


def test_upload_list_and_preview(studio):
    client, _ = studio
    body = "\n".join(json.dumps(r) for r in _rows(7)).encode()
    created = _upload(client, "seven.jsonl", body, name="Seven")
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert dataset["name"] == "Seven" and dataset["row_count"] == 7
    assert any(d["id"] == dataset["id"] for d in client.get("/api/datasets").json())
    rows = client.get(f"/api/datasets/{dataset['id']}/rows", params={"offset": 5, "limit": 10}).json()
    assert [r["output"] for r in rows] == ["5", "6"]


def test_csv_and_json_array_with_bom(studio):
    client, _ = studio
    csv_body = "\ufeffinstruction,input,output\nSay hi,,hi\n\"Quote, please\",x,\"a \"\"b\"\"\"\n".encode()
    created = _upload(client, "rows.csv", csv_body)
    assert created.status_code == 201, created.text
    rows = client.get(f"/api/datasets/{created.json()['id']}/rows").json()
    assert rows[1] == {"instruction": "Quote, please", "input": "x", "output": 'a "b"'}
    array = json.dumps(_rows(3)).encode("utf-8-sig")
    assert _upload(client, "rows.json", array).status_code == 201


BAD_UPLOADS = [
    ("empty.jsonl", b"", "empty (0 bytes)"),
    ("broken.json", b'[{"instruction": "a", "output": "b"},\n {"instruction": ', "broken.json line 2: a value is missing at column 18"),
    ("broken.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "outp', "line 2: the text in quotes that starts at column 22 never ends. The line looks cut off."),
    ("latin1.jsonl", '{"instruction": "caf\u00e9", "output": "b"}\n'.encode("latin-1"), "line 1: not UTF-8"),
    ("model.bin", b"\x00\x01", "unsupported file type '.bin'"),
    ("cols.csv", b"question,answer\nq,a\n", "missing column 'instruction'"),
    ("dupes.csv", b"instruction,output,output\na,b,c\n", "column 'output' appears twice"),
    ("noout.jsonl", b'{"instruction": "a"}\n', "line 1: missing field 'output'"),
    ("emptyout.jsonl", b'{"instruction": "a", "output": "  "}\n', "line 1: 'output' is empty"),
    ("types.json", b'[{"instruction": ["a"], "output": "b"}]', "row 1: 'instruction' must be text"),
    ("big.jsonl", b'{"instruction": "a", "output": "b"}\n' * 2000, "the limit is 0.05 MB (STUDIO_MAX_UPLOAD_MB)"),
    ("truncated.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "c", "out', "line 2: the text in quotes that starts"),
    ("dupkeys.jsonl", b'{"instruction": "a", "output": "b", "output": "c"}\n', "line 1: field 'output' appears twice"),
    ("cols.tsv", b"question\tanswer\nq\ta\n", "missing column 'instruction'"),
    ("dupes.tsv", b"instruction\toutput\toutput\na\tb\tc\n", "column 'output' appears twice"),
    ("ragged.csv", b"instruction,output\na,b,c\n", "line 2: 3 cells but the header has 2"),
    ("empty.parquet", b"", "empty (0 bytes)"),
    ("fake.parquet", b"this is not parquet", "not a readable Parquet file"),
    ("chat.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n', "line 1: 'messages' has no assistant turn"),
    ("roles.jsonl", b'{"messages": [{"role": "robot", "content": "hi"}]}\n', 'line 1: messages[0].role: "robot"'),
    ("share.json", b'[{"conversations": [{"from": "human"}]}]', "row 1: conversations[0]: missing field 'value'"),
    ("latin1.csv", "instruction,output\ncaf\u00e9,b\n".encode("latin-1"), "line 2: not UTF-8"),
    ("notes.txt", b'{"instruction": "a", "output": "b"}\n', "unsupported file type '.txt'"),
]


@pytest.mark.parametrize("name,data,expected", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_upload_is_rejected_and_stores_nothing(studio, name, data, expected):
    client, settings = studio
    before = (client.get("/api/datasets").json(), _state(settings))
    response = _upload(client, name, data)
    # over the size limit: refused while the body streams in (studio.uploadlimit)
    assert response.status_code == (413 if name == "big.jsonl" else 422), response.text
    body = response.json()
    assert name in body["detail"] and expected in body["detail"], body
    assert (client.get("/api/datasets").json(), _state(settings)) == before


def test_the_ui_upload_route_refuses_files_over_the_limit(studio):
    """The browser's upload goes through Gradio first: a file over the limit never lands."""
    client, _ = studio
    big = _upload_to_gradio(client, b"x" * 60_000)
    assert big.status_code == 413, big.text
    assert _upload_to_gradio(client, b"x" * 1_000).status_code == 200


def _upload_to_gradio(client, data: bytes):
    return client.post("/gradio_api/upload", files={"files": ("rows.jsonl", data)})


def test_formats_and_overrides(studio):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    client, _ = studio
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    created = _upload(client, "chat.jsonl", json.dumps(chat).encode())
    assert created.status_code == 201 and created.json()["kind"] == "chat", created.text
    share = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    created = _upload(client, "share.json", json.dumps(share).encode())
    assert created.json()["source_format"] == "json/sharegpt"
    assert client.get(f"/api/datasets/{created.json()['id']}/rows").json() == [chat]
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_rows(3)), out)
    assert _upload(client, "rows.parquet", out.getvalue()).json()["row_count"] == 3
    mapped = _upload(client, "qa.tsv", b"q\ta\nWhy?\tBecause\n", columns='{"instruction": "q", "output": "a"}')
    assert mapped.status_code == 201, mapped.text
    assert client.get(f"/api/datasets/{mapped.json()['id']}/rows").json() == [
        {"instruction": "Why?", "input": "", "output": "Because"}
    ]
    typed = _upload(client, "rows.txt", json.dumps(_rows(2)).encode(), file_type="json")
    assert typed.status_code == 201 and typed.json()["source_format"] == "json/alpaca"
    inspected = client.post("/api/datasets/inspect", files={"file": ("qa.csv", b"q,a\nWhy?,Because\n")}).json()
    assert inspected["columns"] == ["q", "a"] and inspected["row_count"] == 0


@pytest.mark.parametrize(
    "form,expected",
    [
        ({"columns": "{nope"}, "columns: not valid JSON"),
        ({"columns": '{"prompt": "q"}'}, "columns: 'prompt' is not an Alpaca field"),
        ({"schema": "xml"}, "schema: Input should be"),
        ({"file_type": "docx"}, "file_type: Input should be"),
        ({"schema": "messages"}, "missing field 'messages'"),
    ],
)
def test_bad_upload_options_store_nothing(studio, form, expected):
    client, settings = studio
    before = (client.get("/api/datasets").json(), _state(settings))
    response = _upload(client, "ok.jsonl", json.dumps(_rows(1)[0]).encode(), **form)
    assert response.status_code == 422 and expected in response.json()["detail"], response.text
    assert (client.get("/api/datasets").json(), _state(settings)) == before


def test_partly_valid_file_needs_consent(studio):
    client, settings = studio
    lines = [json.dumps(r) for r in _rows(4)]
    lines.insert(2, '{"instruction": "x", "output": ""}')
    body = "\n".join(lines).encode()
    before = (client.get("/api/datasets").json(), _state(settings))
    refused = _upload(client, "partial.jsonl", body)
    assert refused.status_code == 422
    assert "partial.jsonl line 3: 'output' is empty" in refused.json()["errors"]
    assert (client.get("/api/datasets").json(), _state(settings)) == before
    kept = _upload(client, "partial.jsonl", body, accept_partial="true")
    assert kept.status_code == 201
    assert kept.json()["row_count"] == 4
    assert kept.json()["skipped_rows"] == ["partial.jsonl line 3: 'output' is empty"]


@pytest.fixture(scope="module")
def dataset_id(studio) -> int:
    client, _ = studio
    body = "\n".join(json.dumps(r) for r in _rows(20)).encode()
    return _upload(client, "twenty.jsonl", body).json()["id"]


@pytest.mark.parametrize(
    "payload,expected",
    [
        ({"config": {"training": {"learning_rate": -1}}}, "config.training.learning_rate: Input should be greater than 0"),
        ({"config": {"training": {"batch_size": "eight"}}}, "config.training.batch_size"),
        ({"config": {"adapter": {"rank": 8}}}, "config.adapter.rank: Extra inputs are not permitted"),
        ({"config": {"training": {"scheduler": "sawtooth"}}}, "config.training.scheduler"),
        ({"config": {"training": {"fused_loss": {"deep": [[["x" * 10_000]]]}}}}, "config.training.fused_loss"),
        ({"base_model": "/no/such/folder"}, "model.base_model: '/no/such/folder' is not a model folder the studio may load"),
        ({"base_model": "not a model id!"}, "model.base_model"),
        ({"preset": "warp speed"}, "preset: unknown preset 'warp speed'"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_job_request_names_the_field(studio, dataset_id, payload, expected):
    client, _ = studio
    before = client.get("/api/jobs").json()
    response = client.post("/api/jobs", json={"dataset_id": dataset_id, **payload})
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    planned = client.post("/api/jobs/plan", json={"dataset_id": dataset_id, **payload})
    assert planned.status_code == 422 and expected in planned.json()["detail"]
    assert client.get("/api/jobs").json() == before


def test_metrics_without_a_json_number_still_answer(studio, dataset_id):
    """An fp16 step's grad norm is inf while the loss scaler settles; JSON has no inf."""
    from studio.db import make_engine, session_scope
    from studio.models import MetricPoint

    client, settings = studio
    job = client.post("/api/jobs", json={"dataset_id": dataset_id}).json()
    client.post(f"/api/jobs/{job['id']}/cancel")
    with session_scope(make_engine(settings.db_url)) as session:
        session.add(MetricPoint(job_id=job["id"], split="train", step=1, loss=2.5, grad_norm=float("inf"), recorded_at=0))
        session.add(MetricPoint(job_id=job["id"], split="eval", step=0, loss=float("inf"), recorded_at=0))
    response = client.get(f"/api/jobs/{job['id']}/metrics")
    assert response.status_code == 200, response.text
    train, evaluation = sorted(response.json(), key=lambda m: m["split"], reverse=True)
    assert train["loss"] == 2.5 and train["grad_norm"] is None
    assert evaluation["loss"] is None and evaluation["perplexity"] is None


def test_missing_things_are_404(studio):
    client, _ = studio
    assert client.post("/api/jobs", json={"dataset_id": 9999}).status_code == 404
    assert client.get("/api/jobs/9999").status_code == 404
    assert client.get("/api/jobs/9999/metrics").status_code == 404
    assert client.post("/api/jobs/9999/cancel").status_code == 404
    assert client.get("/api/datasets/9999/rows").status_code == 404
    assert "job 9999 does not exist" in client.get("/api/jobs/9999").json()["detail"]


def test_job_through_the_api(studio, dataset_id, tiny_model_dir, module_processes):
    client, settings = studio
    created = client.post(
        "/api/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": str(tiny_model_dir),
            "config": {"training": {"max_steps": 6, "sample_every": 3, "batch_size": 4, "max_new_tokens": 4}},
        },
    )
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["config"]["training"]["max_steps"] == 6
    plan = client.post("/api/jobs/plan", json={"dataset_id": dataset_id, "base_model": str(tiny_model_dir)}).json()
    assert plan["runs_on"] == "no worker yet" and plan["warnings"][0].startswith("No worker has reported")
    assert 0 < plan["trainable_params"] < plan["total_params"] and plan["steps"] > 0
    worker_starter(module_processes)(settings)

    def finished():
        current = client.get(f"/api/jobs/{job['id']}").json()
        return current if current["status"] in ("succeeded", "failed", "cancelled") else None

    done = wait_until(finished, 180, interval=0.3, what="the API job to finish")
    assert done["status"] == "succeeded", (done["error"], module_processes.logs())
    metrics = client.get(f"/api/jobs/{job['id']}/metrics").json()
    assert [m["step"] for m in metrics if m["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(m["loss"], float) for m in metrics)
    [worker] = wait_until(lambda: client.get("/api/workers").json(), 60, what="the worker to register")
    assert worker["alive"] and worker["name"].startswith("worker")
    plan = client.post("/api/jobs/plan", json={"dataset_id": dataset_id, "base_model": str(tiny_model_dir)}).json()
    assert plan["runs_on"].startswith(worker["name"]) and not any("No worker" in w for w in plan["warnings"])
    samples = client.get(f"/api/jobs/{job['id']}/samples").json()
    assert {s["step"] for s in samples} == {0, 3, 6}
    assert all(set(s) >= {"step", "prompt", "output"} for s in samples)
    clone = client.post(f"/api/jobs/{job['id']}/clone")
    assert clone.status_code == 201 and clone.json()["config"] == done["config"]
    assert client.post(f"/api/jobs/{clone.json()['id']}/cancel").json()["status"] in ("cancelled", "running")
