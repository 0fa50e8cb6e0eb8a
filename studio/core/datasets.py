"""Reading instruction data files into normalized Alpaca rows, and dataset snapshots.

Every problem names the file, the line or row, the field and what is wrong. Parsing never
stores anything: the caller decides, from the errors, whether to keep the valid rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

ALPACA_FIELDS = ("instruction", "input", "output")
MAX_ERRORS = 50  # beyond this, the file is summarised instead of listed


class DatasetError(ValueError):
    """The file cannot be used; `errors` says where and why."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))
        self.errors = errors


@dataclass
class ParseResult:
    filename: str
    format: str
    rows: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{self.filename} {message}")


def detect_format(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    formats = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
    if suffix not in formats:
        raise DatasetError(
            [f"{filename}: unsupported file type '{suffix or '(none)'}'; use .json, .jsonl, .csv or .tsv"]
        )
    return formats[suffix]


def parse_file(filename: str, data: bytes, max_bytes: int) -> ParseResult:
    """Parse an uploaded file. Raises DatasetError when nothing in it is usable."""
    fmt = detect_format(filename)
    if len(data) == 0:
        raise DatasetError([f"{filename}: the file is empty (0 bytes)"])
    if len(data) > max_bytes:
        raise DatasetError(
            [f"{filename}: {len(data) / 1e6:.3g} MB is over the {max_bytes / 1e6:.3g} MB upload limit"]
        )
    try:
        text = data.decode("utf-8-sig")  # a BOM is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            [f"{filename} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"]
        ) from None
    result = ParseResult(filename, fmt)
    records = {"json": _json_records, "jsonl": _jsonl_records, "csv": _csv_records, "tsv": _csv_records}[fmt]
    for where, record in records(text, result):
        row = normalize_row(record, where, result)
        if row is not None:
            result.rows.append(row)
    if not result.rows:
        if not result.errors:
            result.add_error(": no rows found")
        raise DatasetError(result.errors)
    return result


def _json_records(text: str, result: ParseResult) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            [f"{result.filename} line {exc.lineno}: invalid JSON at column {exc.colno} ({exc.msg})"]
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DatasetError([f"{result.filename}: expected a JSON array of rows, found {type(data).__name__}"])
    for index, record in enumerate(data, start=1):
        yield f"row {index}", record


def _jsonl_records(text: str, result: ParseResult) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            result.add_error(f"line {number}: invalid JSON at column {exc.colno} ({exc.msg})")


def _csv_records(text: str, result: ParseResult) -> Iterator[tuple[str, Any]]:
    delimiter = "\t" if result.format == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DatasetError([f"{result.filename} line 1: column '{name}' appears twice in the header"])
        seen.add(name)
    for column in ("instruction", "output"):
        if column not in seen:
            raise DatasetError(
                [f"{result.filename} line 1: missing column '{column}' (columns found: {', '.join(header)})"]
            )
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            result.add_error(f"line {number}: {len(values)} cells but the header has {len(header)}")
            continue
        yield f"line {number}", dict(zip(header, values))


def normalize_row(record: Any, where: str, result: ParseResult) -> dict[str, str] | None:
    """An Alpaca row with string fields, or None after recording what is wrong."""
    if not isinstance(record, dict):
        result.add_error(f"{where}: expected an object with 'instruction' and 'output', found {type(record).__name__}")
        return None
    row: dict[str, str] = {}
    ok = True
    for name, value in record.items():
        if value is None:
            value = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            if name in ALPACA_FIELDS:
                result.add_error(f"{where}: '{name}' must be text, found {type(value).__name__}")
                ok = False
            continue  # extra structured fields are dropped, text ones kept (e.g. category)
        row[str(name)] = value
    for name in ("instruction", "output"):
        if name not in record:
            result.add_error(f"{where}: missing field '{name}'")
            ok = False
        elif ok and not row.get(name, "").strip():
            result.add_error(f"{where}: '{name}' is empty")
            ok = False
    if not ok:
        return None
    row.setdefault("input", "")
    return row


def snapshot_bytes(rows: Iterable[dict[str, str]]) -> bytes:
    """Canonical JSONL: the same rows always give the same bytes (and hash)."""
    return b"".join(
        json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n" for row in rows
    )


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_snapshot(path: Path) -> list[dict[str, str]]:
    with path.open("r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
