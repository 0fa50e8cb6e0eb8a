"""Property-based fuzzing of every REST operation in the live server's /openapi.json
(schemathesis): valid and invalid inputs generated from the schema, 0 answers 5xx.
Bounded to a few examples per operation (about 2 minutes on 2 cores)."""

from __future__ import annotations

import time
from collections import Counter

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode

from tests.conftest import make_settings, server_starter

pytestmark = pytest.mark.slow

EXAMPLES = 5  # per operation and mode: ~400 requests, about 2 minutes on 2 shared cores
SEEN: Counter = Counter()
FAILURES: list[str] = []
STARTED = time.perf_counter()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, module_processes):
    import httpx

    # Generated hub ids ("00", "a/b") would otherwise wait on a hub this machine cannot reach.
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings(tmp_path_factory.mktemp("fuzz") / "data", max_upload_mb=1)
    url = server_starter(module_processes)(settings)
    rows = b'{"instruction": "q", "output": "a", "category": "c"}\n' * 6
    httpx.post(url + "/api/datasets", files={"file": ("seed.jsonl", rows)}).raise_for_status()  # id 1 exists
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES)
    mp.undo()
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_input_answers_5xx(case):
    response = case.call(timeout=60)
    SEEN[f"{response.status_code // 100}xx"] += 1
    if response.status_code >= 500:
        FAILURES.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])


def test_zz_report():
    print(f"\nschemathesis: {sum(SEEN.values())} generated requests, by class {dict(sorted(SEEN.items()))}, "
          f"{len(FAILURES)} 5xx, {time.perf_counter() - STARTED:.0f} s")
    assert not FAILURES, FAILURES
