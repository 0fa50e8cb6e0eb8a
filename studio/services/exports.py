"""Exports: create (and enqueue), list per job, inspect, delete, and the download's path
checks. The build and its checks run on a worker (worker/export.py)."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from sqlmodel import select

from studio.core.config import ConfigError, JobConfig
from studio.core.paths import JobPaths, resolve_inside
from studio.db import session_scope
from studio.leases import EXPORTS, REQUEUED_STAGE
from studio.models import Checkpoint, Export, ExportPublic, ExportStatus, Job, JobStatus
from studio.services.context import NotFound, StudioContext
from worker.celery_app import enqueue_export
from worker.checkpoints import is_complete
from worker.export import KINDS, QUANTIZATIONS

log = logging.getLogger(__name__)


class ExportRefused(Exception):
    """The export cannot be made or changed now (the job has not finished, the export is
    still running); answered with 409."""


def _public(export: Export) -> ExportPublic:
    model_id = f"job-{export.job_id}" + (f"/checkpoint-{export.checkpoint_step}" if export.checkpoint_step is not None else "")
    filename = None
    if export.path:
        name = Path(export.path).name
        filename = name if name.endswith(".gguf") else name + ".zip"
    return ExportPublic(
        model_id=model_id,
        filename=filename,
        checks=json.loads(export.checks_json or "{}"),
        **export.model_dump(exclude={"checks_json", "path", "lease_owner", "lease_expires_at", "attempts", "max_attempts"}),
    )


def create_export(
    ctx: StudioContext,
    job_id: int,
    kind: str,
    quantization: Optional[str] = None,
    checkpoint_step: Optional[int] = None,
) -> ExportPublic:
    """Validate, store as queued, then put the export id on the workers' queue."""
    problems = []
    if kind not in KINDS:
        problems.append(f"kind: must be one of {', '.join(KINDS)}, not '{kind}'")
    if kind == "gguf":
        quantization = quantization or "f16"
        if quantization not in QUANTIZATIONS:
            problems.append(f"quantization: must be one of {', '.join(QUANTIZATIONS)}, not '{quantization}'")
    elif quantization:
        problems.append("quantization: only a gguf export is quantized; leave it out for merged and adapter")
    if problems:
        raise ConfigError(problems)
    with session_scope(ctx.engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        config = JobConfig.model_validate_json(job.config_json)
        if kind == "adapter" and config.adapter.method == "full":
            raise ConfigError(["kind: job %d is a full fine-tune and has no adapter; export it as merged" % job_id])
        paths = JobPaths(ctx.settings.artifacts_root, job_id)
        if checkpoint_step is None:
            if job.status != JobStatus.succeeded or not paths.final.is_dir():
                raise ExportRefused(
                    f"job {job_id} is {job.status.value}: only a succeeded job's result can be exported "
                    "(or pick one of its checkpoints)"
                )
        else:
            saved = session.exec(
                select(Checkpoint).where(
                    Checkpoint.job_id == job_id, Checkpoint.step == checkpoint_step, Checkpoint.final == False  # noqa: E712
                )
            ).first()
            folder = paths.checkpoints / f"checkpoint-{checkpoint_step}"
            if saved is None or not folder.is_dir() or not is_complete(folder):
                raise NotFound(f"job {job_id} has no checkpoint at step {checkpoint_step} (it may have been pruned)")
        export = Export(
            job_id=job_id, checkpoint_step=checkpoint_step, kind=kind, quantization=quantization,
            max_attempts=ctx.settings.max_attempts, stage="waiting for a worker",
        )
        session.add(export)
        session.flush()
        export_id = export.id
    try:
        enqueue_export(ctx.celery, export_id)
    except Exception as exc:  # the broker is down: say so on the export
        log.exception("could not enqueue export %s", export_id)
        with session_scope(ctx.engine) as session:
            export = session.get(Export, export_id)
            export.status = ExportStatus.failed
            export.error = f"Could not reach the job queue ({type(exc).__name__}: {exc}). Is the broker running?"
    return get_export(ctx, export_id)


def get_export(ctx: StudioContext, export_id: int) -> ExportPublic:
    with session_scope(ctx.engine) as session:
        export = session.get(Export, export_id)
        if export is None:
            raise NotFound(f"export {export_id} does not exist")
        return _public(export)


def list_exports(ctx: StudioContext, job_id: int) -> list[ExportPublic]:
    """A job's exports, newest first."""
    with session_scope(ctx.engine) as session:
        if session.get(Job, job_id) is None:
            raise NotFound(f"job {job_id} does not exist")
        rows = session.exec(select(Export).where(Export.job_id == job_id).order_by(Export.id.desc())).all()
        return [_public(e) for e in rows]


def delete_export(ctx: StudioContext, export_id: int) -> None:
    """Remove a finished export's files and its record."""
    root = ctx.settings.artifacts_root
    with session_scope(ctx.engine) as session:
        export = session.get(Export, export_id)
        if export is None:
            raise NotFound(f"export {export_id} does not exist")
        if not export.status.finished:
            raise ExportRefused(f"export {export_id} is {export.status.value}: delete it once it has finished")
        shutil.rmtree(resolve_inside(root, f"exports/{export_id}"), ignore_errors=True)
        session.delete(export)


@dataclass(frozen=True)
class Download:
    """What a download sends: a file as it is, or a folder zipped on the fly."""

    path: Path
    filename: str
    media_type: str

    @property
    def zipped(self) -> bool:
        return self.path.is_dir()


def download(ctx: StudioContext, export_id: int, file: Optional[str] = None) -> Download:
    """The export's result (or one named file beside it, e.g. the GGUF's Modelfile),
    resolved inside the artifact root's exports folder; NotFound for anything else."""
    root = ctx.settings.artifacts_root
    export = get_export(ctx, export_id)
    with session_scope(ctx.engine) as session:
        relpath = session.get(Export, export_id).path
    if export.status != ExportStatus.succeeded or not relpath:
        raise ExportRefused(f"export {export_id} is {export.status.value}: there is nothing to download yet")
    if file is not None:
        names = {f["name"] for f in export.checks.get("files", []) if "/" not in f["name"]}
        if file not in names:
            raise NotFound(f"export {export_id} has no file '{file}'; it has: {', '.join(sorted(names))}")
        relpath = f"exports/{export_id}/{file}"
    try:
        folder = resolve_inside(root, f"exports/{export_id}")
        path = resolve_inside(root, relpath)
    except ValueError:  # a stored path that points outside the artifact root is never served
        raise NotFound(f"export {export_id} has no file inside the artifact store") from None
    if not path.is_relative_to(folder) or not path.exists():
        raise NotFound(f"export {export_id}'s files are gone from the artifact store")
    if path.is_dir():
        return Download(path, path.name + ".zip", "application/zip")
    media = "application/octet-stream" if path.suffix == ".gguf" else "text/plain; charset=utf-8"
    return Download(path, path.name, media)


class _Chunks:
    """A write-only file for zipfile that hands its bytes on as they are written."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_stream(folder: Path, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """A zip of folder, produced while it is sent: stored, not deflated (safetensors do
    not compress), so a multi-GB model streams at disk speed and needs no second copy."""
    out = _Chunks()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            info = zipfile.ZipInfo.from_file(path, f"{folder.name}/{path.relative_to(folder)}")
            with path.open("rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(chunk_bytes):
                    target.write(chunk)
                    yield out.take()
    yield out.take()


def reap(ctx: StudioContext) -> None:
    """Requeue running exports whose worker stopped renewing its lease; fail those out of
    attempts (as the jobs' reaper does)."""
    requeued, _ = EXPORTS.reap(ctx.engine, lambda export: f"The worker building this export died {export.attempts} times.",
                               stage=REQUEUED_STAGE)
    for export_id in requeued:
        log.warning("export %s: worker lease expired, requeued", export_id)
        enqueue_export(ctx.celery, export_id)
