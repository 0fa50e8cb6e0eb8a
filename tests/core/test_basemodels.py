"""Which base models the studio may load: folders under the model roots only (symlinks
resolved, never an upload folder, the temp dir only through a root inside it), one answer
for every path outside, and model code only for models an admin listed."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from studio.core.basemodels import ModelAccess, check_base_model, outside_roots_message
from studio.settings import Settings


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def _access(tmp_path: Path, **overrides) -> ModelAccess:
    settings = Settings(data_dir=tmp_path / "data", model_dirs=[tmp_path / "data" / "models"], **overrides)
    return ModelAccess.from_settings(settings)


def test_folders_under_a_root_are_allowed_with_helpful_messages(tmp_path):
    access = _access(tmp_path)
    models = tmp_path / "data" / "models"
    assert check_base_model(str(_model(models / "tiny")), access) is None
    (models / "empty").mkdir()
    assert "has no config.json" in check_base_model(str(models / "empty"), access)
    assert "does not exist" in check_base_model(str(models / "missing"), access)
    assert check_base_model("demo", access) is None
    assert check_base_model("org/name", access) is None


def test_one_answer_outside_the_roots(tmp_path):
    access = _access(tmp_path)
    outside = _model(tmp_path / "elsewhere")
    link = tmp_path / "data" / "models" / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    probes = [str(outside), str(tmp_path / "missing"), "/etc", "/etc/passwd", str(link), "~", "../../etc",
              "C:\\Windows", "file:///etc", "a\x00b/c", str(tmp_path / "data" / "models" / ".." / ".." / "elsewhere")]
    for probe in probes:
        assert check_base_model(probe, access) == outside_roots_message(probe), probe
    assert "llama" not in outside_roots_message(str(outside))


def test_upload_and_temp_folders_never_qualify(tmp_path):
    data = tmp_path / "data"
    gradio = _model(data / "gradio" / "abc123")
    # A root that holds everything (a misconfiguration) still grants nothing under the
    # upload folders or the system temp dir.
    wide = ModelAccess.from_settings(Settings(data_dir=data, model_dirs=[Path("/")]))
    assert check_base_model(str(gradio), wide) == outside_roots_message(str(gradio))
    in_temp = _model(Path(tempfile.mkdtemp()) / "m")
    assert check_base_model(str(in_temp), wide) == outside_roots_message(str(in_temp))
    # A root chosen inside the temp dir is a deliberate choice and counts.
    assert check_base_model(str(in_temp), ModelAccess.from_settings(Settings(data_dir=data, model_dirs=[in_temp.parent]))) is None


def test_a_folder_whose_files_link_out_is_refused(tmp_path):
    access = _access(tmp_path)
    secret = _model(tmp_path / "secret")
    folder = tmp_path / "data" / "models" / "sneaky"
    folder.mkdir(parents=True)
    (folder / "config.json").symlink_to(secret / "config.json")
    assert check_base_model(str(folder), access) == outside_roots_message(str(folder))


def test_remote_code_only_for_listed_models(tmp_path):
    models = tmp_path / "data" / "models"
    listed, other = _model(models / "listed"), _model(models / "other")
    access = _access(tmp_path, trust_remote_code_models=[str(listed), "org/trusted"])
    assert check_base_model(str(listed), access, trust_remote_code=True) is None
    assert check_base_model("org/trusted", access, trust_remote_code=True) is None
    for value in (str(other), "org/other", "demo"):
        assert check_base_model(value, access, trust_remote_code=True).startswith("model.trust_remote_code:")
        assert check_base_model(value, access) is None


def test_settings_read_lists_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_MODEL_DIRS", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.setenv("STUDIO_TRUST_REMOTE_CODE_MODELS", '["org/x"]')
    settings = Settings(data_dir=tmp_path)
    assert settings.model_roots == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]
    assert settings.trust_remote_code_models == ["org/x"]
    monkeypatch.setenv("STUDIO_MODEL_DIRS", settings.as_env()["STUDIO_MODEL_DIRS"])  # what subprocesses get
    assert Settings(data_dir=tmp_path).model_dirs == settings.model_dirs
    monkeypatch.delenv("STUDIO_MODEL_DIRS")
    from huggingface_hub.constants import HF_HUB_CACHE

    default = Settings(data_dir=tmp_path, model_dirs=[])
    assert default.model_roots == [(tmp_path / "models").resolve(), Path(HF_HUB_CACHE).resolve()]


def test_hub_lookups_are_bounded_in_time_and_number(tmp_path):
    import threading
    import time

    import pytest

    from studio.core import basemodels

    release = threading.Event()
    started = time.perf_counter()
    with pytest.raises(OSError, match="did not answer for 'org/slow' within 0.2 s"):
        basemodels.bounded_load(lambda: release.wait(30), "org/slow", seconds=0.2)
    assert time.perf_counter() - started < 1.0
    for _ in range(3):  # three more lookups hang: the four slots are taken
        with pytest.raises(OSError):
            basemodels.bounded_load(lambda: release.wait(30), "org/slow", seconds=0.05)
    with pytest.raises(OSError, match="too many Hugging Face hub lookups at once"):
        basemodels.bounded_load(lambda: "never runs", "org/fast")
    assert basemodels.bounded_load(lambda: "local", str(tmp_path)) == "local"  # folders never wait for a slot
    release.set()
    time.sleep(0.2)
    assert basemodels.bounded_load(lambda: "answer", "org/fast") == "answer"
    with pytest.raises(ValueError, match="bad"):
        basemodels.bounded_load(lambda: (_ for _ in ()).throw(ValueError("bad")), "org/fast")


def test_a_plan_for_an_unreachable_hub_id_answers_in_time(ctx, alpaca_file, monkeypatch):
    """No internet here: the hub retries for ~30 s a file; the plan says so after HUB_SECONDS."""
    import time

    from studio.core import basemodels
    from studio.services import jobs
    from tests.conftest import upload_file

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(basemodels, "HUB_SECONDS", 1.0)
    dataset_id = upload_file(ctx, alpaca_file)
    started = time.perf_counter()
    preview = jobs.preview_launch(ctx, dataset_id, "studio-test/unreachable-model")
    took = time.perf_counter() - started
    assert any("Cannot size 'studio-test/unreachable-model'" in w for w in preview.plan.warnings), preview.plan.warnings
    assert took < 5, took
    print(f"\nplan for an unreachable hub id answered in {took:.1f} s")
