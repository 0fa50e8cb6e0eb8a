"""Where artifacts live under the artifact root (a local folder or a shared mount).

The DB stores paths relative to the root so a worker on another host that mounts the
same root at another place still finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def snapshot_relpath(content_hash: str) -> str:
    """Dataset snapshots are content-addressed: the same rows are stored once."""
    return f"datasets/{content_hash[:2]}/{content_hash}.jsonl"


@dataclass(frozen=True)
class JobPaths:
    root: Path
    job_id: int

    @property
    def job_dir(self) -> Path:
        return self.root / "jobs" / str(self.job_id)

    @property
    def checkpoints(self) -> Path:
        return self.job_dir / "checkpoints"

    @property
    def final(self) -> Path:
        """The finished adapter (or model) folder, loadable by plain peft/transformers."""
        return self.job_dir / "final"

    @property
    def tensorboard(self) -> Path:
        return self.job_dir / "tensorboard"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def resolve_inside(root: Path, relpath: str) -> Path:
    """root/relpath, refusing anything that escapes the root."""
    path = (root / relpath).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"path '{relpath}' is outside the artifact root")
    return path
