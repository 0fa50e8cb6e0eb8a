"""Custom Jinja templates as an attacker writes them: a sandbox-escape set (0 escapes) and
a runaway set (nested ranges, string and list multiplication, format widths, recursion
through macros, strings doubled by ~, +, join, replace, % and format), each stopped within
its limit and without building anything past the output limit; in the web app (preview and quality
report over HTTP) and in the worker's data preparation, where a cancel and the
preparation time limit are honoured mid-way."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from studio.core.templates import RenderLimits, TemplateError, render_custom
from tests.conftest import make_settings, server_starter, upload_file, wait_until

CANARY = "canary-7f3a9c"
LEAKS = ("<class", "<module", "<function", "<built-in", "<bound", "<method", "<frame", "posix", CANARY)

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[100].__init__.__globals__['sys'] }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ cycler.next.__func__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ lipsum|attr('__globals__') }}",
    "{{ range.__self__ }}",
    "{{ dict.__class__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.environment }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '{0[os]}'.format_map(lipsum.__globals__) }}",
    "{{ '%s'|format(''.__class__) }}",
    "{{ '%r' % lipsum }}",
    "{% set x = messages.append(1) %}{{ messages }}",
    "{{ messages.pop() }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{% macro m() %}{% endmacro %}{{ m._func.__globals__ }}",
    "{% for m in messages %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "{{ caller }}{{ config }}{{ request.application }}{{ get_flashed_messages.__globals__ }}",
    "{{ (messages|first).__class__ }}",
    "{{ ''.encode.__self__.__class__ }}",
    "{{ eos_token.__class__.__mro__ }}",
    "{% import 'os' as os %}{{ os }}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
]

RUNAWAYS = [
    "{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}",
    "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}",
    "{% for i in range(10**5) %}{% for j in range(10**5) %}{{ i }}{% endfor %}{% endfor %}",
    "{% set s = 'x' * 50000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ 10**9 * 'x' }}",
    "{{ [1] * 10**9 }}",
    "{% for i in range(10**5) %}{{ 'x' * 90000 }}{% endfor %}",
    "{{ 'x'.ljust(10**10) }}",
    "{{ 'x'|center(10**10) }}",
    "{{ '{:>9999999999}'.format('x') }}",
    "{{ '%9999999999s' % 'x' }}",
    "{{ '%9999999999s'|format('x') }}",
    "{{ 10 ** (10 ** 10) }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s]|join %}{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s|replace('x', ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('x', ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = '%s%s' % (ns.s, ns.s) %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = '{}{}'.format(ns.s, ns.s) %}{% endfor %}",
]

LIMITS = RenderLimits(seconds=1.0, max_chars=100_000)
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_sandbox_escapes_are_refused(monkeypatch):
    monkeypatch.setenv("STUDIO_TEMPLATE_CANARY", CANARY)
    escapes, blocked, harmless = [], 0, 0
    for source in ESCAPES:
        try:
            output = render_custom(source, LIMITS, messages=MESSAGES, eos_token="</s>", bos_token="<s>",
                                   add_generation_prompt=False)
        except Exception:  # SecurityError, UndefinedError, TemplateNotFound, ...: refused
            blocked += 1
            continue
        if any(leak in output for leak in LEAKS):
            escapes.append((source, output[:200]))
        else:
            harmless += 1
    print(f"\nsandbox escapes: {len(ESCAPES)} tried, {blocked} refused, {harmless} rendered harmlessly, "
          f"{len(escapes)} escapes")
    assert not escapes
    assert MESSAGES == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_runaway_templates_stop_within_their_limit():
    times = []
    for source in RUNAWAYS:
        started = time.perf_counter()
        with pytest.raises(Exception) as caught:
            render_custom(source, LIMITS, messages=MESSAGES, eos_token="</s>", bos_token="", add_generation_prompt=False)
        took = time.perf_counter() - started
        times.append((took, source, f"{type(caught.value).__name__}: {caught.value}"[:120]))
        assert took < LIMITS.seconds + 1.5, (source, took)
    slowest = max(times)
    print(f"\nrunaway templates: {len(RUNAWAYS)} stopped, slowest {slowest[0]:.2f} s (limit {LIMITS.seconds:g} s): "
          f"{slowest[1][:60]} -> {slowest[2]}")
    kinds = {text.split(":")[0] for _, _, text in times}
    print(f"stopped by: {sorted(kinds)}")


def test_limits_leave_ordinary_templates_alone():
    source = (
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
        "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}{{ '%s-%d'|format('a', 3) }}{{ 'ab'|center(6) }}"
    )
    text = render_custom(source, LIMITS, messages=MESSAGES, eos_token="</s>", bos_token="<s>", add_generation_prompt=True)
    assert text == "<s><|user|>hi<|assistant|>hello</s><|assistant|>a-3  ab  "  # trim_blocks eats the newlines


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("templates") / "data", template_timeout_seconds=1.0,
                             template_max_chars=100_000)
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings


def test_runaway_templates_in_the_web_app_answer_422_within_the_limit(studio):
    client, _ = studio
    rows = b'{"instruction": "q", "output": "a"}\n' * 3
    dataset = client.post("/api/datasets", files={"file": ("t.jsonl", rows)}).json()["id"]
    slowest = 0.0
    for source in RUNAWAYS[:6] + RUNAWAYS[9:13] + RUNAWAYS[16:17]:
        template = {"name": "custom", "custom_template": source}
        for path, body in ((f"/api/datasets/{dataset}/preview", {"index": 0, "template": template}),
                           (f"/api/datasets/{dataset}/quality", {"template": template})):
            started = time.perf_counter()
            response = client.post(path, json=body)
            took = time.perf_counter() - started
            slowest = max(slowest, took)
            assert response.status_code == 422, (source, path, response.text[:300])
            assert "template" in response.json()["detail"]
            assert took < 1.0 * 3 + 3.0, (source, path, took)  # one row renders a few prefixes
    assert client.get("/api/health").status_code == 200
    print(f"\nweb app: runaway templates answered 422, slowest request {slowest:.2f} s (limit 1 s a render)")


# --- the worker ----------------------------------------------------------------------

SLOW = (  # ~0.1 s a row: legitimate, but slow enough to cancel or time out mid-preparation
    "{% for m in messages %}{% for i in range(100000) %}{% endfor %}<|{{ m.role }}|>{{ m.content }}"
    "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
RUNAWAY = "{% for m in messages %}{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}{{ m.content }}{% endfor %}"
QUICK = {"training": {"max_steps": 2, "batch_size": 4, "sample_every": 100, "save_every": 0, "max_length": 64},
         "data": {"exact_match_rows": 0, "probe_count": 0}}


def _job_with(ctx, tiny_model_dir, alpaca_file, template: str):
    from studio.services import jobs

    config = {**QUICK, "template": {"name": "custom", "custom_template": template}}
    return jobs.create_job(ctx, upload_file(ctx, alpaca_file), str(tiny_model_dir), config)


def test_the_worker_fails_a_runaway_template_with_the_reason(ctx, tiny_model_dir, alpaca_file, monkeypatch):
    from studio.core import templates
    from studio.services import jobs
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    monkeypatch.setattr(templates, "render_limits", lambda: RenderLimits(0.5, 100_000))
    job = _job_with(ctx, tiny_model_dir, alpaca_file, RUNAWAY)
    started = time.perf_counter()
    tasks.run_job(job.id)
    took = time.perf_counter() - started
    done = jobs.get_job(ctx, job.id)
    assert done.status == "failed" and "took longer than 0.5 s to render one row" in done.error, done.error
    print(f"\nworker: runaway template failed the job in {took:.1f} s: {done.error[:120]}")


def test_cancel_is_honoured_during_data_preparation(ctx, tiny_model_dir, alpaca_file, monkeypatch):
    from studio.services import jobs
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    job = _job_with(ctx, tiny_model_dir, alpaca_file, SLOW)
    runner = threading.Thread(target=tasks.run_job, args=(job.id,))
    runner.start()
    wait_until(lambda: jobs.get_job(ctx, job.id).status == "running", 30, what="the job to start")
    time.sleep(1.0)  # well inside data preparation (120 rows at ~0.1 s)
    asked = time.perf_counter()
    jobs.cancel_job(ctx, job.id)
    runner.join(60)
    took = time.perf_counter() - asked
    done = jobs.get_job(ctx, job.id)
    assert done.status == "cancelled", (done.status, done.error)
    assert any("stopped before training" in line for line in jobs.job_logs(ctx, job.id))
    print(f"\nworker: cancel during data preparation honoured {took:.2f} s after it was asked")
    assert took < 5.0


def test_preparation_past_its_limit_fails_with_the_reason(ctx, tiny_model_dir, alpaca_file, monkeypatch):
    from studio.services import jobs
    from worker import tasks

    slow_settings = ctx.settings.model_copy(update={"prepare_timeout_seconds": 1.0})
    monkeypatch.setattr(tasks, "get_settings", lambda: slow_settings)
    job = _job_with(ctx, tiny_model_dir, alpaca_file, SLOW)
    started = time.perf_counter()
    tasks.run_job(job.id)
    took = time.perf_counter() - started
    done = jobs.get_job(ctx, job.id)
    assert done.status == "failed" and "STUDIO_PREPARE_TIMEOUT_SECONDS" in done.error, done.error
    print(f"\nworker: preparation limit 1 s, the job failed after {took:.1f} s: {done.error[:100]}")
    assert took < 10
