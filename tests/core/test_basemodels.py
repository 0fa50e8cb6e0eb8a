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
