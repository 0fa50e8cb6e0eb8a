"""Datasets: upload, versions, paging and search, edits, export, split, quality report
and the per-row token preview.

Versions: every change (an edit, a fix, a split, a revert) writes the whole row list as a
new content-addressed JSONL snapshot and a new DatasetVersion pointing at its parent,
with a note of what changed. Versions are never changed or deleted, so the one a job
trains on stays exactly as it was; "go back" is a new version holding an old one's rows.
The newest version is the dataset's current one.

Snapshots are parsed once per content hash and kept in a small in-process cache, so a
page, a search or an edit of a 50k-row dataset does not re-read the file. A new version
enters the cache as it is stored, sharing the unchanged rows with the version it came
from: the page after an edit is not a re-read, and ten edits do not hold ten copies.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import threading
from collections import OrderedDict
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from studio.core.datasets import (
    ALPACA_FIELDS,
    UNICODE_PROBLEM,
    DatasetError,
    ParseLimits,
    ParseOptions,
    bad_unicode,
    content_hash,
    detect_format,
    json_problem,
    parse_file,
    read_snapshot,
    row_text,
    snapshot_bytes,
    validate_row,
    write_atomic,
)
from studio.core.config import TemplateSection
from studio.core.paths import resolve_inside, snapshot_relpath
from studio.core.quality import FIXES, build_report, preview_tokens, rows_to_drop
from studio.core.templates import TemplateError
from studio.db import session_scope
from studio.models import Dataset, DatasetPublic, DatasetVersion, DatasetVersionPublic, Job
from studio.services.context import NotFound, StudioContext

MAX_PAGE = 500
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet apps run these as formulas
VALIDATION_NAMES = {"validation", "valid", "val", "eval", "dev", "test"}
TRAIN_NAMES = {"train", "training"}


class VersionConflict(DatasetError):
    """The edit was made on a version that is no longer the newest."""


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
        kind=version.kind,
        validation_rows=version.validation_rows,
    )


# --- upload ---------------------------------------------------------------------------


def upload_name(filename: str | None) -> str:
    """The file name a browser sent, without any folder part (POSIX or Windows) or NUL."""
    name = re.split(r"[\\/]", (filename or "").replace("\x00", ""))[-1].strip()
    return name or "upload"


def create_dataset(
    ctx: StudioContext,
    filename: str,
    data: bytes,
    name: str | None = None,
    accept_partial: bool = False,
    options: ParseOptions | None = None,
) -> tuple[DatasetPublic, list[str]]:
    """Parse, validate and store an upload. Returns the dataset and the problems of rows
    that were skipped (only when accept_partial). Raises DatasetError, storing nothing."""
    filename = upload_name(filename)
    name = (name or "").strip() or Path(filename).stem
    if len(name) > 200:
        raise DatasetError([f"name: at most 200 characters (got {len(name)})"])
    if bad_unicode(name) or bad_unicode(filename):
        raise DatasetError([f"name: {UNICODE_PROBLEM}"])
    limits = ParseLimits.from_settings(ctx.settings)
    parsed = parse_file(filename, data, int(ctx.settings.max_upload_mb * 1e6), options, limits)
    if parsed.error_count and not accept_partial:
        more = parsed.error_count - len(parsed.errors)
        raise DatasetError(
            parsed.errors
            + ([f"{filename}: ... and {more} more problems"] if more > 0 else [])
            + [f"{filename}: {len(parsed.rows)} rows are valid; to keep only those, add the file again with "
               "'keep the valid rows' chosen"]
        )
    digest, relpath = _store_snapshot(ctx, parsed.rows)
    with session_scope(ctx.engine) as session:
        dataset = Dataset(name=name)
        session.add(dataset)
        session.flush()
        skipped = f", {parsed.error_count} invalid rows left out" if parsed.error_count else ""
        version = DatasetVersion(
            dataset_id=dataset.id,
            number=1,
            content_hash=digest,
            snapshot_path=relpath,
            row_count=len(parsed.rows),
            source_filename=filename,
            source_format=f"{parsed.format}/{parsed.schema}",
            kind=parsed.kind,
            note=f"uploaded {filename} ({parsed.schema}){skipped}"[:500],
        )
        session.add(version)
        session.flush()
        return _public(dataset, version), parsed.errors


@dataclass
class FileInspection:
    """What auto-detection makes of a file, before it is stored (for the column mapping)."""

    file_type: str
    schema: str
    columns: list[str]
    sample: list[dict[str, Any]]
    row_count: int
    errors: list[str]
    error_count: int


def inspect_file(
    ctx: StudioContext, filename: str, data: bytes, options: ParseOptions | None = None
) -> FileInspection:
    """Parse without storing: the detected type and schema, the columns and a sample.

    A table whose columns do not map yet still answers, with the header, so the user can
    choose the mapping."""
    options = options or ParseOptions()
    limit = int(ctx.settings.max_upload_mb * 1e6)
    limits = ParseLimits.from_settings(ctx.settings)
    try:
        parsed = parse_file(upload_name(filename), data, limit, options, limits)
    except DatasetError as exc:
        fmt = detect_format(filename, options.file_type)
        header = _table_header(data, fmt) if fmt in ("csv", "tsv") and len(data) <= limit else []
        if not header or len(header) > limits.max_columns:
            raise
        return FileInspection(fmt, "alpaca", header, [], 0, exc.errors, len(exc.errors))
    columns = list(dict.fromkeys(k for row in parsed.rows[:200] for k in row))
    return FileInspection(
        parsed.format, parsed.schema, columns, parsed.rows[:5], len(parsed.rows), parsed.errors, parsed.error_count
    )


def _table_header(data: bytes, fmt: str) -> list[str]:
    try:
        first = data.decode("utf-8-sig").splitlines()[0]
    except (UnicodeDecodeError, IndexError):
        return []
    return next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ","), [])


# --- reading --------------------------------------------------------------------------


@dataclass
class Snapshot:
    """A version's rows, parsed once and shared read-only: never mutate them."""

    rows: tuple[dict[str, Any], ...]

    @cached_property
    def haystack(self) -> tuple[str, ...]:
        """Each row's text and extra fields, lower-cased, for search."""
        return tuple(
            (row_text(row) + "\n" + "\n".join(str(v) for k, v in row.items() if k not in (*ALPACA_FIELDS, "messages"))).lower()
            for row in self.rows
        )


class _SnapshotCache:
    """The few most recently used snapshots, by (path, content hash); thread-safe."""

    def __init__(self, size: int):
        self._size = size
        self._items: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, digest: str) -> Snapshot:
        with self._lock:
            snapshot = self._items.get((path, digest))
            if snapshot is not None:
                self._items.move_to_end((path, digest))
                return snapshot
        snapshot = Snapshot(tuple(read_snapshot(Path(path))))  # parsed outside the lock
        self.put(path, digest, snapshot)
        return snapshot

    def put(self, path: str, digest: str, snapshot: Snapshot) -> None:
        with self._lock:
            self._items[(path, digest)] = snapshot
            self._items.move_to_end((path, digest))
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._items

    def cached_rows(self) -> list[tuple[dict[str, Any], ...]]:
        with self._lock:
            return [snapshot.rows for snapshot in self._items.values()]


_SNAPSHOTS = _SnapshotCache(size=6)


def _cached_snapshot(path: str, digest: str) -> Snapshot:
    return _SNAPSHOTS.get(path, digest)


def _store_snapshot(ctx: StudioContext, rows: Sequence[dict], cache: bool = False) -> tuple[str, str]:
    """Write rows as a content-addressed snapshot (once); returns (hash, relative path).
    With `cache`, the new snapshot also enters the cache (see _seed_cache)."""
    lines = [snapshot_bytes([row]) for row in rows]
    blob = b"".join(lines)
    digest = content_hash(blob)
    relpath = snapshot_relpath(digest)
    target = resolve_inside(ctx.settings.artifacts_root, relpath)
    if not target.exists():
        write_atomic(target, blob)
    if cache:
        _seed_cache(str(target), digest, rows, lines)
    return digest, relpath


def _seed_cache(path: str, digest: str, rows: Sequence[dict], lines: list[bytes]) -> None:
    """Cache a just-written snapshot exactly as reading it back would give it: a row that
    is itself a cached snapshot's row (parsed from canonical JSON, never mutated) is
    shared; any other row is parsed from its line of the new file."""
    if (path, digest) in _SNAPSHOTS:  # nothing changed: keep the entry (and its search index)
        return
    known = {id(row) for cached in _SNAPSHOTS.cached_rows() for row in cached}
    parsed = tuple(row if id(row) in known else json.loads(line) for row, line in zip(rows, lines))
    _SNAPSHOTS.put(path, digest, Snapshot(parsed))


def _latest_version(session, dataset_id: int) -> DatasetVersion:
    version = session.exec(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.number.desc())
    ).first()
    if version is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return version


def _version(session, dataset_id: int, version_id: int | None) -> DatasetVersion:
    """The given version of the dataset, or its newest."""
    if version_id is None:
        return _latest_version(session, dataset_id)
    version = session.get(DatasetVersion, version_id)
    if version is None or version.dataset_id != dataset_id:
        raise NotFound(f"dataset {dataset_id} has no version id {version_id}")
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


def load_version(ctx: StudioContext, dataset_id: int, version_id: int | None = None) -> tuple[DatasetVersion, Snapshot]:
    """A version (default: the newest) and its parsed rows."""
    with session_scope(ctx.engine) as session:
        if session.get(Dataset, dataset_id) is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        version = _version(session, dataset_id, version_id)
    path = resolve_inside(ctx.settings.artifacts_root, version.snapshot_path)
    return version, _cached_snapshot(str(path), version.content_hash)


def preview_rows(ctx: StudioContext, dataset_id: int, offset: int = 0, limit: int = 50) -> list[dict]:
    """A page of rows of the dataset's newest version."""
    _, snapshot = load_version(ctx, dataset_id)
    return list(snapshot.rows[max(0, offset) : max(0, offset) + max(0, min(limit, MAX_PAGE))])


@dataclass
class RowPage:
    """One page of the rows that match; `index` is a row's position in the version."""

    version_id: int
    version: int
    total: int  # rows that match the search and filter
    offset: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"index": i, "row": {...}}
    columns: list[str] = field(default_factory=list)


def page_rows(
    ctx: StudioContext,
    dataset_id: int,
    offset: int = 0,
    limit: int = 50,
    search: str = "",
    category: str | None = None,
    category_column: str = "category",
    version_id: int | None = None,
) -> RowPage:
    """Server-side paging: search (case-insensitive, any field) and a category filter."""
    version, snapshot = load_version(ctx, dataset_id, version_id)
    limit = max(1, min(limit, MAX_PAGE))
    matches: Iterable[int] = range(len(snapshot.rows))
    if category not in (None, ""):
        matches = [i for i in matches if str(snapshot.rows[i].get(category_column, "")) == category]
    needle = search.strip().lower()
    if needle:
        haystack = snapshot.haystack
        matches = [i for i in matches if needle in haystack[i]]
    chosen = matches[offset : offset + limit]
    rows = [{"index": i, "row": snapshot.rows[i]} for i in chosen]
    columns = _columns(snapshot.rows[:1000], version.kind)
    return RowPage(version.id, version.number, len(matches), offset, rows, columns)


def _columns(rows: Iterable[dict], kind: str) -> list[str]:
    first = list(ALPACA_FIELDS) if kind == "alpaca" else ["messages"]
    extra = sorted({k for row in rows for k in row} - set(first))
    return first + extra


def category_counts(
    ctx: StudioContext, dataset_id: int, column: str = "category", version_id: int | None = None
) -> dict[str, int]:
    """How many rows hold each value of a category column (empty when there is none)."""
    _, snapshot = load_version(ctx, dataset_id, version_id)
    counts = Counter(str(row[column]) for row in snapshot.rows if column in row)
    return dict(counts.most_common())


# --- versions -------------------------------------------------------------------------


def list_versions(ctx: StudioContext, dataset_id: int) -> list[DatasetVersionPublic]:
    """The dataset's history, newest first, with how many jobs use each version."""
    get_dataset(ctx, dataset_id)
    with session_scope(ctx.engine) as session:
        versions = session.exec(
            select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id).order_by(DatasetVersion.number.desc())
        ).all()
        used = dict(
            session.exec(
                select(Job.dataset_version_id, func.count(Job.id))
                .where(Job.dataset_version_id.in_([v.id for v in versions]))
                .group_by(Job.dataset_version_id)
            ).all()
        )
        return [
            DatasetVersionPublic.model_validate(v, from_attributes=True).model_copy(update={"used_by_jobs": used.get(v.id, 0)})
            for v in versions
        ]


def commit_version(
    ctx: StudioContext,
    dataset_id: int,
    rows: Sequence[dict[str, Any]],
    note: str,
    base_version_id: int | None = None,
) -> DatasetPublic:
    """Store rows as the dataset's new newest version, edited from `base_version_id`
    (default: the newest). Raises VersionConflict when someone else saved a version
    since, and makes no version when nothing changed."""
    if not rows:
        raise DatasetError(["a dataset needs at least one row; this change would leave none"])
    with session_scope(ctx.engine) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        latest = _latest_version(session, dataset_id)
    if base_version_id is not None and base_version_id != latest.id:
        raise VersionConflict(
            [f"dataset {dataset_id}: you edited version id {base_version_id}, but version {latest.number} "
             f"(id {latest.id}) is newer; reload and edit again"]
        )
    digest, relpath = _store_snapshot(ctx, rows, cache=True)
    if digest == latest.content_hash:
        return _public(dataset, latest)
    validation = sum(1 for row in rows if row.get("split") == "validation")
    try:
        with session_scope(ctx.engine) as session:
            version = DatasetVersion(
                dataset_id=dataset_id,
                number=latest.number + 1,
                content_hash=digest,
                snapshot_path=relpath,
                row_count=len(rows),
                source_filename=latest.source_filename,
                source_format=latest.source_format,
                kind=latest.kind,
                note=note[:500],
                parent_id=latest.id,
                validation_rows=validation,
            )
            session.add(version)
            session.flush()
            return _public(dataset, version)
    except IntegrityError:  # another edit took the same version number first
        raise VersionConflict([f"dataset {dataset_id} was changed at the same time; reload and edit again"]) from None


def revert_to(ctx: StudioContext, dataset_id: int, version_id: int) -> DatasetPublic:
    """Go back: a new version holding the rows of an older one."""
    version, snapshot = load_version(ctx, dataset_id, version_id)
    return commit_version(ctx, dataset_id, snapshot.rows, f"went back to version {version.number}")


# --- edits ----------------------------------------------------------------------------


def _check_index(index: int, total: int) -> None:
    if not 0 <= index < total:
        raise DatasetError([f"row {index}: no such row (the version has rows 0 to {total - 1})"])


def _checked(row: Any, kind: str, where: str) -> dict[str, Any]:
    """The row normalized like an uploaded one; DatasetError naming `where` if it is bad."""
    normalized, problems = validate_row(row, kind)
    if problems:
        raise DatasetError([f"{where}: {p}" for p in problems])
    return normalized


def edit_cell(
    ctx: StudioContext, dataset_id: int, index: int, column: str, value: Any, base_version_id: int | None = None
) -> DatasetPublic:
    """Set one field of one row. For chat rows the 'messages' value is the JSON list."""
    version, snapshot = load_version(ctx, dataset_id, base_version_id)
    _check_index(index, len(snapshot.rows))
    column = column.strip()
    if not column or len(column) > 100:
        raise DatasetError([f"row {index}: a column name needs 1 to 100 characters"])
    if column == "messages" and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetError([f"row {index}: 'messages' is not valid JSON: {json_problem(exc, 'text')}"]) from None
        except RecursionError:
            raise DatasetError([f"row {index}: 'messages' is nested too deeply"]) from None
    elif column != "messages" and not isinstance(value, str):
        raise DatasetError([f"row {index}: '{column}' must be text"])
    row = _checked({**snapshot.rows[index], column: value}, version.kind, f"row {index}")
    rows = list(snapshot.rows)
    rows[index] = row
    return commit_version(ctx, dataset_id, rows, f"edited '{column}' of row {index}", version.id)


def add_row(
    ctx: StudioContext, dataset_id: int, row: Mapping[str, Any], base_version_id: int | None = None
) -> DatasetPublic:
    """Append a row (validated like an uploaded one)."""
    version, snapshot = load_version(ctx, dataset_id, base_version_id)
    new = _checked(dict(row), version.kind, "new row")
    return commit_version(ctx, dataset_id, [*snapshot.rows, new], f"added row {len(snapshot.rows)}", version.id)


def delete_rows(
    ctx: StudioContext, dataset_id: int, indices: Iterable[int], base_version_id: int | None = None
) -> DatasetPublic:
    """Delete the rows at these positions."""
    version, snapshot = load_version(ctx, dataset_id, base_version_id)
    doomed = set(indices)
    if not doomed:
        raise DatasetError(["rows: select at least one row to delete"])
    for index in sorted(doomed):
        _check_index(index, len(snapshot.rows))
    rows = [row for i, row in enumerate(snapshot.rows) if i not in doomed]
    shown = ", ".join(str(i) for i in sorted(doomed)[:10]) + (" ..." if len(doomed) > 10 else "")
    return commit_version(ctx, dataset_id, rows, f"deleted {len(doomed)} rows ({shown})", version.id)


# --- export ---------------------------------------------------------------------------


def export_version(
    ctx: StudioContext, dataset_id: int, fmt: str = "jsonl", version_id: int | None = None
) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of a version as JSONL (the snapshot itself) or CSV."""
    version, snapshot = load_version(ctx, dataset_id, version_id)
    with session_scope(ctx.engine) as session:
        name = session.get(Dataset, dataset_id).name
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80] or "dataset"
    filename = f"{stem}-v{version.number}.{fmt}"
    if fmt == "jsonl":
        return filename, snapshot_bytes(snapshot.rows), "application/x-ndjson"
    if fmt == "csv":
        return filename, csv_bytes(snapshot.rows, _columns(snapshot.rows, version.kind)), "text/csv"
    raise DatasetError([f"format: '{fmt}' is not one of jsonl, csv"])


def safe_cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: formula starters get a leading quote."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_bytes(rows: Iterable[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(c, "")) for c in columns])
    return out.getvalue().encode("utf-8")


# --- split ----------------------------------------------------------------------------


def assign_split(
    rows: Sequence[dict[str, Any]],
    validation_fraction: float,
    seed: int = 0,
    by_column: str | None = None,
    stratify_column: str | None = "category",
) -> list[dict[str, Any]]:
    """Rows with a `split` field: 'train' or 'validation'.

    By column: the column's value decides (train/training, or validation/valid/val/eval/
    dev/test). Random: a seeded shuffle, within each value of the stratify column when
    the rows have one, so every category keeps its share in both parts."""
    if by_column:
        out, problems = [], []
        for index, row in enumerate(rows):
            value = str(row.get(by_column, "")).strip().lower()
            if value not in VALIDATION_NAMES | TRAIN_NAMES:
                problems.append(f"row {index}: column '{by_column}' holds {row.get(by_column)!r}; expected train or validation")
            out.append({**row, "split": "validation" if value in VALIDATION_NAMES else "train"})
        if problems:
            raise DatasetError(problems[:20] + ([f"... and {len(problems) - 20} more rows"] if len(problems) > 20 else []))
        return out
    if not 0.0 <= validation_fraction <= 0.9:
        raise DatasetError([f"validation_fraction: must be between 0 and 0.9 (got {validation_fraction})"])
    if validation_fraction == 0:  # no split stored: jobs hold out rows at random again
        return [{k: v for k, v in row.items() if k != "split"} for row in rows]
    groups: dict[str, list[int]] = {}
    stratify = stratify_column if stratify_column and any(stratify_column in r for r in rows) else None
    for index, row in enumerate(rows):
        groups.setdefault(str(row.get(stratify, "")) if stratify else "", []).append(index)
    rng = random.Random(seed)
    held: set[int] = set()
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        held.update(members[: int(round(len(members) * validation_fraction))])
    if len(held) >= len(rows):  # keep at least one training row
        held.discard(min(held))
    return [{**row, "split": "validation" if i in held else "train"} for i, row in enumerate(rows)]


def split_dataset(
    ctx: StudioContext,
    dataset_id: int,
    validation_fraction: float = 0.1,
    seed: int = 0,
    by_column: str | None = None,
    stratify_column: str | None = "category",
    base_version_id: int | None = None,
) -> DatasetPublic:
    """A new version whose rows carry the split; jobs then hold out exactly those rows."""
    version, snapshot = load_version(ctx, dataset_id, base_version_id)
    rows = assign_split(snapshot.rows, validation_fraction, seed, by_column, stratify_column)
    held = sum(1 for r in rows if r.get("split") == "validation")
    how = f"by column '{by_column}'" if by_column else f"seed {seed}" + (
        f", stratified by '{stratify_column}'" if stratify_column and any(stratify_column in r for r in rows) else ""
    )
    return commit_version(ctx, dataset_id, rows, f"split {len(rows) - held} train / {held} validation ({how})", version.id)


# --- quality report, fixes, token preview ---------------------------------------------


def tokenizer_for(ctx: StudioContext, base_model: str):
    """The tokenizer of a base model the settings allow (model roots), for reports and
    previews. Raises DatasetError naming the model when it is not allowed or cannot be loaded."""
    from studio.core.basemodels import ModelAccess, check_base_model

    problem = check_base_model(base_model, ModelAccess.from_settings(ctx.settings))
    if problem:
        raise DatasetError([problem])
    return load_tokenizer(base_model)


@lru_cache(maxsize=4)
def load_tokenizer(base_model: str):
    """The tokenizer of a base model already checked by tokenizer_for. Raises
    DatasetError naming the model when it cannot be loaded."""
    from transformers import AutoTokenizer

    from studio.core.basemodels import bounded_load, resolve_base_model

    try:
        return bounded_load(lambda: AutoTokenizer.from_pretrained(resolve_base_model(base_model)), base_model)
    except Exception as exc:  # a missing or broken folder, no internet for a hub id
        raise DatasetError(
            [f"base_model: could not load the tokenizer of '{base_model}' ({type(exc).__name__}: {str(exc)[:200]})"]
        ) from None


def quality_report(
    ctx: StudioContext,
    dataset_id: int,
    base_model: str = "demo",
    template: TemplateSection | None = None,
    max_length: int = 512,
    category_column: str = "category",
    version_id: int | None = None,
) -> dict[str, Any]:
    """The quality report of a version for a model's tokenizer and a template."""
    version, snapshot = load_version(ctx, dataset_id, version_id)
    template = template or TemplateSection()
    path = str(resolve_inside(ctx.settings.artifacts_root, version.snapshot_path))
    tokenizer_for(ctx, base_model)  # a bad model is named before any work
    report = _cached_report(path, version.content_hash, base_model, template.model_dump_json(), max_length, category_column)
    return {"dataset_id": dataset_id, "version_id": version.id, "version": version.number, "base_model": base_model, **report}


@lru_cache(maxsize=4)
def _cached_report(
    path: str, digest: str, base_model: str, template_json: str, max_length: int, category_column: str
) -> dict[str, Any]:
    """Reports are pure functions of these, so the UI's report-then-fix round trips and
    repeated views cost one computation."""
    template = TemplateSection.model_validate_json(template_json)
    rows = _cached_snapshot(path, digest).rows
    try:
        return build_report(rows, load_tokenizer(base_model), template, max_length, category_column)
    except TemplateError as exc:
        raise DatasetError([f"template: {exc}"]) from None


def apply_fix(ctx: StudioContext, dataset_id: int, fix: str, base_version_id: int | None = None) -> DatasetPublic:
    """A one-click safe fix (see studio.core.quality.FIXES) as a new version."""
    if fix not in FIXES:
        raise DatasetError([f"fix: '{fix}' is not one of {', '.join(FIXES)}"])
    version, snapshot = load_version(ctx, dataset_id, base_version_id)
    doomed = set(rows_to_drop(snapshot.rows, fix))
    if not doomed:
        raise DatasetError([f"fix: nothing to do, version {version.number} has no rows that '{fix}' removes"])
    rows = [row for i, row in enumerate(snapshot.rows) if i not in doomed]
    return commit_version(ctx, dataset_id, rows, f"{FIXES[fix]}: {len(doomed)} rows", version.id)


def preview_row(
    ctx: StudioContext,
    dataset_id: int,
    index: int,
    base_model: str = "demo",
    template: TemplateSection | None = None,
    max_length: int = 512,
    version_id: int | None = None,
) -> dict[str, Any]:
    """One row rendered and tokenized: spans trained or masked, kept or cut, and counts."""
    _, snapshot = load_version(ctx, dataset_id, version_id)
    _check_index(index, len(snapshot.rows))
    tokenizer = tokenizer_for(ctx, base_model)
    try:
        preview = preview_tokens(tokenizer, snapshot.rows[index], template or TemplateSection(), max_length)
    except TemplateError as exc:
        raise DatasetError([f"template: {exc}"]) from None
    return {"index": index, "max_length": max_length, **preview}
