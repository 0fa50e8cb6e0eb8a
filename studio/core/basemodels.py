"""Where a base model comes from: 'demo', a local folder, or a Hugging Face hub id. All
three go through the same from_pretrained path.

A local folder must lie under one of the configured model roots (STUDIO_MODEL_DIRS), after
symlinks are resolved, and never under an upload or temp folder: a folder anyone can
write to through the web app is a folder of code someone else chose. For a path outside
the roots the answer is one fixed sentence, whether or not the path exists or can be
read, so the check tells nothing about the file system. Model code shipped with a
checkpoint (trust_remote_code) runs only for models an admin listed.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

DEMO = "demo"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_SECONDS = 10.0  # an unreachable hub retries for ~30 s per file: the web app waits this long at most
# Hub lookups the web app has in flight at once; more are refused at once rather than queued,
# so a flood of hub ids typed offline can hold at most these threads.
_HUB_SLOTS = threading.BoundedSemaphore(4)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelAccess:
    """Which base models may be loaded, and which may run their own code."""

    roots: tuple[Path, ...]  # resolved folders local models must lie under
    forbidden: tuple[Path, ...]  # resolved upload folders: never a model, whatever the roots say
    trusted: frozenset[str]  # hub ids and resolved folders allowed trust_remote_code

    @classmethod
    def from_settings(cls, settings: Any) -> "ModelAccess":
        """The access the studio's settings grant (roots, Gradio folders, the allow list)."""
        forbidden = [settings.gradio_dir, Path(tempfile.gettempdir()) / "gradio"]
        if os.environ.get("GRADIO_TEMP_DIR"):
            forbidden.append(Path(os.environ["GRADIO_TEMP_DIR"]))
        trusted = set()
        for name in settings.trust_remote_code_models:
            name = str(name).strip()
            trusted.add(_resolve(name) if looks_like_path(name) else name)
        return cls(
            tuple(settings.model_roots), tuple(_resolve(str(p)) for p in forbidden), frozenset(str(t) for t in trusted)
        )

    def allows_folder(self, folder: Path) -> bool:
        """Whether a resolved folder lies under a root and outside the upload folders.

        The system temp dir counts only through a root inside it: a root that holds the temp
        dir (/, /tmp) is a misconfiguration and grants nothing under it."""
        if any(_inside(folder, bad) for bad in self.forbidden):
            return False
        temp = _resolve(tempfile.gettempdir())
        for root in self.roots:
            if _inside(folder, root) and not (_inside(folder, temp) and not _inside(root, temp)):
                return True
        return False


def _resolve(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def looks_like_path(value: str) -> bool:
    """A folder rather than a hub id: starts like a path, has backslashes or several parts,
    or names something that exists here (from_pretrained would load it as a folder)."""
    if value.startswith(("/", ".", "~")) or value.count("/") > 1 or any(c in value for c in "\\:\x00"):
        return True
    try:
        return os.path.lexists(value)
    except (ValueError, OSError):
        return True


def outside_roots_message(value: str) -> str:
    """The one answer for any folder outside the model roots (no oracle)."""
    return (
        f"model.base_model: '{value[:200]}' is not a model folder the studio may load; local models must lie "
        "in a folder under the model roots (STUDIO_MODEL_DIRS)"
    )


def check_base_model(value: str, access: ModelAccess | None = None, trust_remote_code: bool = False) -> str | None:
    """A plain-language problem with a base model reference, or None when usable.

    `access` defaults to what this process's settings grant."""
    if access is None:
        from studio.settings import get_settings

        access = ModelAccess.from_settings(get_settings())
    value = value.strip()
    if not value:
        return "model.base_model: choose a base model"
    if trust_remote_code and _trust_key(value) not in access.trusted:
        return (
            "model.trust_remote_code: running code shipped with a model is off unless an admin allows it for "
            "that model (STUDIO_TRUST_REMOTE_CODE_MODELS)"
        )
    if value == DEMO:
        return None
    if looks_like_path(value):
        return _check_folder(value, access)
    if not _HUB_ID.match(value):
        return f"model.base_model: '{value[:200]}' is neither a local folder nor a hub id like 'org/name'"
    return None


def _check_folder(value: str, access: ModelAccess) -> str | None:
    if "\x00" in value:
        return outside_roots_message(value)
    try:
        folder = _resolve(value)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unknown ~user
        return outside_roots_message(value)
    if not access.allows_folder(folder) or _links_out(folder, access):
        return outside_roots_message(value)
    # Inside the roots the studio may tell what is there.
    try:
        if not folder.is_dir():
            return f"model.base_model: folder '{value}' does not exist"
        if not (folder / "config.json").is_file():
            return f"model.base_model: folder '{value}' has no config.json (not a transformers model folder)"
        if not os.access(folder / "config.json", os.R_OK):
            return f"model.base_model: folder '{value}': config.json cannot be read"
    except OSError as exc:
        return f"model.base_model: folder '{value}' cannot be read ({exc.strerror})"
    return None


def _links_out(folder: Path, access: ModelAccess) -> bool:
    """Whether a file from_pretrained would read (the folder's own entries) is a symlink to
    somewhere outside the roots. (The HF cache links snapshots to blobs inside the cache.)"""
    try:
        entries = list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return False  # unreadable: said below, inside the roots only
    for entry in entries[:10_000]:
        try:
            if entry.is_symlink() and not access.allows_folder(entry.resolve()):
                return True
        except (OSError, RuntimeError):
            return True
    return False


def _trust_key(value: str) -> str:
    if value != DEMO and looks_like_path(value):
        try:
            return str(_resolve(value))
        except (OSError, RuntimeError, ValueError):
            return value
    return value


def bounded_load(load: Callable[[], T], value: str, seconds: float | None = None) -> T:
    """Run `load` (a from_pretrained of base model `value`) for the web app. A local folder
    or 'demo' loads at once; a hub id loads on one of a few threads and waits at most
    `seconds` (default HUB_SECONDS), so an unreachable hub never holds a request long.
    Raises OSError saying so."""
    if value == DEMO or looks_like_path(value):
        return load()
    seconds = HUB_SECONDS if seconds is None else seconds
    if not _HUB_SLOTS.acquire(blocking=False):
        raise OSError(f"too many Hugging Face hub lookups at once; try '{value[:200]}' again shortly")
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = load()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            _HUB_SLOTS.release()

    thread = threading.Thread(target=run, name="hub-lookup", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise OSError(
            f"the Hugging Face hub did not answer for '{value[:200]}' within {seconds:g} s; without internet use a "
            "local model folder or 'demo' (and set HF_HUB_OFFLINE=1)"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def resolve_base_model(value: str) -> str:
    """What to pass to from_pretrained."""
    if value == DEMO:
        from studio.core.demo import demo_base_dir

        return str(demo_base_dir())
    if looks_like_path(value):
        return str(Path(value).expanduser().resolve())
    return value
