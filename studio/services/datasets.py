"""Datasets: upload, list, preview. Each upload becomes version 1 of a dataset, written
as an immutable content-addressed JSONL snapshot that remote workers can read."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from studio.core.datasets import (
    DatasetError,
    content_hash,
    parse_file,
    read_snapshot,
    snapshot_bytes,
    write_atomic,
)
from studio.core.paths import resolve_inside, snapshot_relpath
from studio.db import session_scope
from studio.models import Dataset, DatasetPublic, DatasetVersion
from studio.services.context import NotFound, StudioContext


def _public(dataset: Dataset, version: DatasetVersion) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        created_at=dataset.created_at,
        version_id=version.id,
        version=version.number,
        row_count=version.row_count,
        content_hash=version.content_hash,
        source_filename=version.source_filename,
        source_format=version.source_format,
    )


def create_dataset(
    ctx: StudioContext,
    filename: str,
    data: bytes,
    name: str | None = None,
    accept_partial: bool = False,
) -> tuple[DatasetPublic, list[str]]:
    """Parse, validate and store an upload. Returns the dataset and the problems of rows
    that were skipped (only when accept_partial). Raises DatasetError, storing nothing."""
    filename = Path(filename or "upload").name
    name = (name or "").strip() or Path(filename).stem
    if len(name) > 200:
        raise DatasetError([f"name: at most 200 characters (got {len(name)})"])
    parsed = parse_file(filename, data, int(ctx.settings.max_upload_mb * 1e6))
    if parsed.error_count and not accept_partial:
        more = parsed.error_count - len(parsed.errors)
        raise DatasetError(
            parsed.errors
            + ([f"{filename}: ... and {more} more problems"] if more > 0 else [])
            + [f"{filename}: {len(parsed.rows)} rows are valid; upload again with accept_partial to keep them"]
        )
    blob = snapshot_bytes(parsed.rows)
    digest = content_hash(blob)
    relpath = snapshot_relpath(digest)
    target = resolve_inside(ctx.settings.artifacts_root, relpath)
    if not target.exists():
        write_atomic(target, blob)
    with session_scope(ctx.engine) as session:
        dataset = Dataset(name=name)
        session.add(dataset)
        session.flush()
        version = DatasetVersion(
            dataset_id=dataset.id,
            number=1,
            content_hash=digest,
            snapshot_path=relpath,
            row_count=len(parsed.rows),
            source_filename=filename,
            source_format=parsed.format,
        )
        session.add(version)
        session.flush()
        return _public(dataset, version), parsed.errors


def _latest_version(session, dataset_id: int) -> DatasetVersion:
    version = session.exec(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.number.desc())
    ).first()
    if version is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return version


def get_dataset(ctx: StudioContext, dataset_id: int) -> DatasetPublic:
    with session_scope(ctx.engine) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        return _public(dataset, _latest_version(session, dataset_id))


def list_datasets(ctx: StudioContext) -> list[DatasetPublic]:
    with session_scope(ctx.engine) as session:
        datasets = session.exec(select(Dataset).order_by(Dataset.id.desc())).all()
        return [_public(d, _latest_version(session, d.id)) for d in datasets]


def snapshot_path(ctx: StudioContext, version_id: int) -> Path:
    with session_scope(ctx.engine) as session:
        version = session.get(DatasetVersion, version_id)
        if version is None:
            raise NotFound(f"dataset version {version_id} does not exist")
        return resolve_inside(ctx.settings.artifacts_root, version.snapshot_path)


def preview_rows(ctx: StudioContext, dataset_id: int, offset: int = 0, limit: int = 50) -> list[dict]:
    """A page of rows of the dataset's newest version."""
    dataset = get_dataset(ctx, dataset_id)
    rows = read_snapshot(snapshot_path(ctx, dataset.version_id))
    return rows[max(0, offset) : max(0, offset) + max(0, min(limit, 500))]
