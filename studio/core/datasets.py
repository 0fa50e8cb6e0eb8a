"""Reading instruction data files into normalized rows, and dataset snapshots.

Files: JSON (an array, or {"data": [...]}), JSONL, CSV, TSV and Parquet, UTF-8 with or
without a BOM. The file type comes from the extension unless the caller names one.

Row schemas, detected from the first row unless the caller names one:
- ``alpaca``: ``instruction``, ``input`` (optional), ``output``;
- ``messages``: ``messages`` = [{"role": system|user|assistant, "content": ...}, ...];
- ``sharegpt``: ``conversations`` = [{"from": human|gpt|system, "value": ...}, ...].

Every row is normalized to one of two internal shapes that the worker and the UI share:
an Alpaca row ``{"instruction", "input", "output", ...extra text fields}`` or a chat row
``{"messages": [{"role", "content"}, ...], ...extra text fields}`` (ShareGPT becomes a
chat row). Extra text fields (a ``category``, the ``split`` a split writes) are kept.

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
from typing import Any, Iterable, Iterator, Mapping

ALPACA_FIELDS = ("instruction", "input", "output")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
}
FILE_TYPES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
SCHEMAS = ("alpaca", "messages", "sharegpt")
MAX_ERRORS = 50  # beyond this, the file is summarised instead of listed


class DatasetError(ValueError):
    """The file (or edit) cannot be used; `errors` says where and why."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))
        self.errors = errors


@dataclass(frozen=True)
class ParseOptions:
    """Manual overrides of what auto-detection would choose."""

    file_type: str | None = None  # json | jsonl | csv | tsv | parquet; None: from the extension
    schema: str | None = None  # alpaca | messages | sharegpt; None: from the first row
    columns: Mapping[str, str] = field(default_factory=dict)  # Alpaca field -> column in the file


@dataclass(frozen=True)
class ParseLimits:
    """Bounds on what one file may hold (settings max_rows, max_columns, max_json_depth,
    max_decompressed_mb), checked before a compressed file is expanded where possible."""

    max_rows: int = 1_000_000
    max_columns: int = 200
    max_json_depth: int = 64
    max_decompressed_bytes: int = 2_000_000_000

    @classmethod
    def from_settings(cls, settings: Any) -> "ParseLimits":
        return cls(
            settings.max_rows, settings.max_columns, settings.max_json_depth, int(settings.max_decompressed_mb * 1e6)
        )


def bad_unicode(text: str) -> bool:
    """A string with a lone surrogate ("\\ud800"): JSON can say it, UTF-8 cannot store it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether lists and objects nest deeper than limit (a row of text fields is depth 1)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


@dataclass
class ParseResult:
    filename: str
    format: str  # the file type
    schema: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    limits: ParseLimits = field(default_factory=ParseLimits)

    @property
    def kind(self) -> str:
        """'alpaca' or 'chat': the internal row shape."""
        return row_kind_of_schema(self.schema)

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{self.filename} {message}")


def row_kind_of_schema(schema: str) -> str:
    return "alpaca" if schema in ("alpaca", "") else "chat"


def detect_format(filename: str, override: str | None = None) -> str:
    """The file type: the override when given, else from the extension."""
    if override:
        if override not in FILE_TYPES.values():
            raise DatasetError([f"file_type: '{override}' is not one of {', '.join(sorted(set(FILE_TYPES.values())))}"])
        return override
    suffix = Path(filename).suffix.lower()
    if suffix not in FILE_TYPES:
        raise DatasetError(
            [f"{filename}: unsupported file type '{suffix or '(none)'}'; use .json, .jsonl, .csv, .tsv or .parquet"]
        )
    return FILE_TYPES[suffix]


def detect_schema(record: Any) -> str:
    """The schema a (first) record looks like."""
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
    return "alpaca"


def parse_file(
    filename: str, data: bytes, max_bytes: int, options: ParseOptions | None = None, limits: ParseLimits | None = None
) -> ParseResult:
    """Parse an uploaded file. Raises DatasetError when nothing in it is usable, or when it
    is over one of the limits (rows, columns, nesting, decompressed size)."""
    options = options or ParseOptions()
    limits = limits or ParseLimits()
    fmt = detect_format(filename, options.file_type)
    if options.schema is not None and options.schema not in SCHEMAS:
        raise DatasetError([f"schema: '{options.schema}' is not one of {', '.join(SCHEMAS)}"])
    bad_targets = sorted(set(options.columns) - set(ALPACA_FIELDS))
    if bad_targets:
        raise DatasetError([f"columns: '{bad_targets[0]}' is not an Alpaca field ({', '.join(ALPACA_FIELDS)})"])
    if len(data) == 0:
        raise DatasetError([f"{filename}: the file is empty (0 bytes)"])
    if len(data) > max_bytes:
        raise DatasetError(
            [f"{filename}: {len(data) / 1e6:.3g} MB is over the {max_bytes / 1e6:.3g} MB upload limit"]
        )
    result = ParseResult(filename, fmt, limits=limits)
    if fmt == "parquet":
        records = _parquet_records(data, result)
    else:
        records = {"json": _json_records, "jsonl": _jsonl_records, "csv": _csv_records, "tsv": _csv_records}[fmt](
            _decode(filename, data), result, options
        )
    for count, (where, record) in enumerate(records, start=1):
        if count > limits.max_rows:
            raise DatasetError([f"{filename}: more than {limits.max_rows:,} rows (the limit, STUDIO_MAX_ROWS)"])
        problem = _record_problem(record, limits)
        if problem:
            result.add_error(f"{where}: {problem}")
            continue
        if not result.schema:
            result.schema = options.schema or detect_schema(record)
            if result.kind == "chat" and fmt in ("csv", "tsv"):
                raise DatasetError([f"{filename}: CSV and TSV files hold Alpaca rows; use JSONL for conversations"])
        row = normalize_row(rename_columns(record, options.columns), where, result)
        if row is not None:
            result.rows.append(row)
    if not result.rows:
        if not result.errors:
            result.add_error(": no rows found")
        raise DatasetError(result.errors)
    return result


def _record_problem(record: Any, limits: ParseLimits) -> str | None:
    """What makes a record unreadable whatever its schema: too many fields, too deep."""
    if isinstance(record, dict) and len(record) > limits.max_columns:
        return f"{len(record):,} fields; the limit is {limits.max_columns:,} (STUDIO_MAX_COLUMNS)"
    if json_depth_over(record, limits.max_json_depth):
        return f"nested deeper than {limits.max_json_depth} levels (the limit, STUDIO_MAX_JSON_DEPTH)"
    return None


def _decode(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a BOM is fine
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            [f"{filename} line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"]
        ) from None


def rename_columns(record: Any, columns: Mapping[str, str]) -> Any:
    """Apply a column mapping {alpaca field: column in the file} to one record."""
    if not columns or not isinstance(record, dict):
        return record
    renamed = {k: v for k, v in record.items() if k not in columns.values()}
    for target, source in columns.items():
        if source in record:
            renamed[target] = record[source]
    return renamed


# json's messages, as sentences a person who does not program can act on
_JSON_PROBLEMS = {
    "Unterminated string starting at": "the text in quotes that starts at column {col} never ends.",
    "Expecting value": "a value is missing at column {col} (text in double quotes, a number, true, false, null, a list or an object).",
    "Expecting property name enclosed in double quotes": (
        "at column {col} a field name in double quotes was expected, like \"output\" (or a comma comes just before a closing brace)."
    ),
    "Expecting ',' delimiter": "a comma is missing at column {col}, between two items.",
    "Expecting ':' delimiter": "a colon is missing at column {col}, after a field name.",
    "Extra data": "something follows the end of the row at column {col}; each line holds one row, one JSON object.",
    "Invalid control character at": (
        "column {col} holds a tab or line break inside quotes; write it as \\t or \\n."
    ),
    "Invalid \\escape": "the backslash at column {col} starts an escape JSON does not know; write a backslash itself as \\\\.",
    "Invalid \\uXXXX escape": "the \\u at column {col} needs four hex digits after it, like \\u00e9.",
}


def json_problem(exc: json.JSONDecodeError, what: str = "line") -> str:
    """A JSON parse error as a whole sentence naming the column, without the line number
    (the caller names the line or row). Ends by saying so when the text stops mid-value."""
    template = _JSON_PROBLEMS.get(exc.msg)
    sentence = template.format(col=exc.colno) if template else f"column {exc.colno}: {exc.msg[:1].lower()}{exc.msg[1:]}."
    # an unterminated string always runs to the end: JSON strings cannot hold a line break
    if exc.msg.startswith("Unterminated") or (exc.pos >= len(exc.doc.rstrip()) and exc.msg != "Extra data"):
        sentence += f" The {what} looks cut off."
    return sentence


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error, not a silent overwrite."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"field '{key}' appears twice")
        seen[key] = value
    return seen


def _json_records(text: str, result: ParseResult, _options: ParseOptions) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            [f"{result.filename} line {exc.lineno}: {json_problem(exc, 'file')}"]
        ) from None
    except RecursionError:  # the parser recurses once per level
        raise DatasetError([
            f"{result.filename}: nested deeper than {result.limits.max_json_depth} levels (the limit, STUDIO_MAX_JSON_DEPTH)"
        ]) from None
    except ValueError as exc:
        raise DatasetError([f"{result.filename}: {exc}"]) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DatasetError([f"{result.filename}: expected a JSON array of rows, found {type(data).__name__}"])
    for index, record in enumerate(data, start=1):
        yield f"row {index}", record


def _jsonl_records(text: str, result: ParseResult, _options: ParseOptions) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            result.add_error(f"line {number}: {json_problem(exc)}")
        except RecursionError:
            result.add_error(f"line {number}: nested deeper than {result.limits.max_json_depth} levels (STUDIO_MAX_JSON_DEPTH)")
        except ValueError as exc:
            result.add_error(f"line {number}: {exc}")


def _csv_records(text: str, result: ParseResult, options: ParseOptions) -> Iterator[tuple[str, Any]]:
    delimiter = "\t" if result.format == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise DatasetError([f"{result.filename} line 1: {exc}"]) from None
    if len(header) > result.limits.max_columns:
        raise DatasetError([
            f"{result.filename} line 1: {len(header):,} columns; the limit is {result.limits.max_columns:,} "
            "(STUDIO_MAX_COLUMNS)"
        ])
    check_columns(result.filename, header, options.columns)
    try:
        for number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                result.add_error(f"line {number}: {len(values)} cells but the header has {len(header)}")
                continue
            yield f"line {number}", dict(zip(header, values))
    except csv.Error as exc:
        result.add_error(f"line {reader.line_num}: {exc}")


def check_columns(filename: str, header: list[str], columns: Mapping[str, str]) -> None:
    """A table's header: no name twice, mapped columns exist, the required fields are there."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DatasetError([f"{filename} line 1: column '{name}' appears twice in the header"])
        seen.add(name)
    for target, source in columns.items():
        if source not in seen:
            raise DatasetError(
                [f"{filename} line 1: mapped column '{source}' (for '{target}') is not in the header "
                 f"(columns found: {', '.join(header)})"]
            )
    available = (seen - set(columns.values())) | set(columns)
    for column in ("instruction", "output"):
        if column not in available:
            raise DatasetError(
                [f"{filename} line 1: missing column '{column}' (columns found: {', '.join(header)}); "
                 "map one of the columns to it"]
            )


def _parquet_records(data: bytes, result: ParseResult) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    limits = result.limits
    try:
        # The footer says how big the file is once expanded: refuse a bomb before reading it.
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        if meta.num_rows > limits.max_rows:
            raise DatasetError([
                f"{result.filename}: {meta.num_rows:,} rows; the limit is {limits.max_rows:,} (STUDIO_MAX_ROWS)"
            ])
        if meta.num_columns > limits.max_columns:
            raise DatasetError([
                f"{result.filename}: {meta.num_columns:,} columns; the limit is {limits.max_columns:,} (STUDIO_MAX_COLUMNS)"
            ])
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if expanded > limits.max_decompressed_bytes:
            raise DatasetError([
                f"{result.filename}: expands to {expanded / 1e6:,.0f} MB; the limit is "
                f"{limits.max_decompressed_bytes / 1e6:,.0f} MB (STUDIO_MAX_DECOMPRESSED_MB)"
            ])
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError, IndexError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError([f"{result.filename}: not a readable Parquet file ({str(exc)[:300]})"]) from None
    if table.nbytes > limits.max_decompressed_bytes:  # the footer can lie
        raise DatasetError([
            f"{result.filename}: expands to {table.nbytes / 1e6:,.0f} MB; the limit is "
            f"{limits.max_decompressed_bytes / 1e6:,.0f} MB (STUDIO_MAX_DECOMPRESSED_MB)"
        ])
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError([f"{result.filename}: column '{twice[0]}' appears twice"])
    for index, record in enumerate(table.to_pylist(), start=1):
        yield f"row {index}", record


# --- rows -----------------------------------------------------------------------------


def normalize_row(record: Any, where: str, result: ParseResult) -> dict[str, Any] | None:
    """The record in the internal shape of the result's schema, or None after recording
    what is wrong."""
    problems: list[str] = []
    if result.kind == "alpaca":
        row = alpaca_row(record, problems)
    else:
        row = chat_row(record, problems, sharegpt=result.schema == "sharegpt")
    for problem in problems:
        result.add_error(f"{where}: {problem}")
    return None if problems else row


def _text_value(value: Any) -> str | None:
    """A cell as text: numbers become text, None is empty; structures are not text."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def _extra_fields(record: dict, skip: Iterable[str], problems: list[str]) -> dict[str, str]:
    """Text fields beyond the schema's (e.g. a category); structured ones are dropped."""
    extra = {}
    for name, value in record.items():
        text = _text_value(value)
        if name not in skip and text is not None:
            if bad_unicode(str(name)) or bad_unicode(text):
                problems.append(f"field {_shown(name)}: {UNICODE_PROBLEM}")
                continue
            extra[str(name)] = text
    return extra


UNICODE_PROBLEM = "holds a lone surrogate (like \\ud800), which is not valid Unicode text"


def _shown(name: Any) -> str:
    """A field name for a message, safe to print whatever it holds."""
    return ascii(str(name)[:100])


def alpaca_row(record: Any, problems: list[str]) -> dict[str, Any]:
    """An Alpaca row with text fields; problems are appended to `problems`."""
    if not isinstance(record, dict):
        problems.append(f"expected an object with 'instruction' and 'output', found {type(record).__name__}")
        return {}
    row = _extra_fields(record, ALPACA_FIELDS, problems)
    for name in ALPACA_FIELDS:
        if name not in record:
            if name != "input":
                problems.append(f"missing field '{name}'")
            row[name] = ""
            continue
        text = _text_value(record[name])
        if text is None:
            problems.append(f"'{name}' must be text, found {type(record[name]).__name__}")
        elif bad_unicode(text):
            problems.append(f"'{name}' {UNICODE_PROBLEM}")
        elif name != "input" and not text.strip():
            problems.append(f"'{name}' is empty")
        row[name] = text if text is not None else ""
    return row


def chat_row(record: Any, problems: list[str], sharegpt: bool = False) -> dict[str, Any]:
    """A chat row {"messages": [...], ...extra}; ShareGPT turns are converted."""
    key, role_key, text_key = ("conversations", "from", "value") if sharegpt else ("messages", "role", "content")
    if not isinstance(record, dict):
        problems.append(f"expected an object with '{key}', found {type(record).__name__}")
        return {}
    turns = record.get(key)
    if key not in record:
        problems.append(f"missing field '{key}'")
        return {}
    if not isinstance(turns, list) or not turns:
        problems.append(f"'{key}' must be a non-empty list of {{{role_key}, {text_key}}} objects")
        return {}
    allowed = SHAREGPT_ROLES if sharegpt else {r: r for r in ROLES}
    messages = []
    for index, turn in enumerate(turns):
        where = f"{key}[{index}]"
        if not isinstance(turn, dict):
            problems.append(f"{where}: expected an object, found {type(turn).__name__}")
            continue
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in allowed:
            shown = json.dumps(role)[:60] if isinstance(role, str) else f"a {type(role).__name__}"
            problems.append(f"{where}.{role_key}: {shown} is not one of {', '.join(allowed)}")
            continue
        if text_key not in turn:
            problems.append(f"{where}: missing field '{text_key}'")
            continue
        text = _text_value(turn[text_key])
        if text is None:
            problems.append(f"{where}.{text_key}: must be text, found {type(turn.get(text_key)).__name__}")
            continue
        if bad_unicode(text):
            problems.append(f"{where}.{text_key}: {UNICODE_PROBLEM}")
            continue
        messages.append({"role": allowed[role], "content": text})
    if not problems:
        problems.extend(check_conversation(messages, key))
    row = _extra_fields(record, (key,), problems)
    row["messages"] = messages
    return row


def check_conversation(messages: list[dict[str, str]], key: str = "messages") -> list[str]:
    """What makes a conversation unusable for training, if anything."""
    problems = []
    for index, message in enumerate(messages):
        if message["role"] == "system" and index > 0:
            problems.append(f"{key}[{index}]: a system message may only come first")
        if message["role"] == "assistant" and not message["content"].strip():
            problems.append(f"{key}[{index}] (assistant): the reply is empty")
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if "assistant" not in turns:
        problems.append(f"'{key}' has no assistant turn to learn from")
    elif turns[0] != "user":
        problems.append(f"'{key}' must start with a user turn (after an optional system message)")
    elif turns[-1] != "assistant":
        problems.append(f"'{key}' must end with an assistant reply (the last turn is '{turns[-1]}')")
    return problems


def validate_row(row: Any, kind: str) -> tuple[dict[str, Any], list[str]]:
    """An edited or added row normalized to the internal shape of `kind`, and its problems."""
    problems: list[str] = []
    normalized = alpaca_row(row, problems) if kind == "alpaca" else chat_row(row, problems)
    return normalized, problems


def response_text(row: Mapping[str, Any]) -> str:
    """All the text a row trains on: the output, or the assistant turns joined."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"] if m["role"] == "assistant")
    return str(row.get("output") or "")


def row_text(row: Mapping[str, Any]) -> str:
    """A row's whole text (prompt and response), for search and duplicate checks."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    return "\n".join(str(row.get(f) or "") for f in ALPACA_FIELDS)


# --- snapshots ------------------------------------------------------------------------


def snapshot_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
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


def read_snapshot(path: Path) -> list[dict[str, Any]]:
    with path.open("r", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def stored_split(rows: list[dict[str, Any]]) -> tuple[list[dict], list[dict]] | None:
    """(train, validation) rows when the dataset carries a split (a `split` field written
    by a split); None when it does not, and the job splits at random."""
    if not rows or not any(row.get("split") == "validation" for row in rows):
        return None
    train = [row for row in rows if row.get("split") != "validation"]
    held = [row for row in rows if row.get("split") == "validation"]
    return (train, held) if train else None
