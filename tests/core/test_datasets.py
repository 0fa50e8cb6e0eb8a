"""File formats, auto-detection with overrides, and row validation that names file, row,
field and problem."""

from __future__ import annotations

import io
import json

import pytest

from studio.core.datasets import (
    DatasetError,
    ParseOptions,
    parse_file,
    snapshot_bytes,
    stored_split,
    validate_row,
)

LIMIT = 10_000_000
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "red"},
    ],
    "category": "greeting",
}


def jsonl(*records) -> bytes:
    return "\n".join(json.dumps(r) for r in records).encode()


def parquet(records: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), out)
    return out.getvalue()


def test_alpaca_jsonl_keeps_extra_text_fields():
    result = parse_file("a.jsonl", jsonl({"instruction": "Add", "output": 3, "category": "math", "meta": {"x": 1}}), LIMIT)
    assert result.schema == "alpaca" and result.kind == "alpaca"
    assert result.rows == [{"instruction": "Add", "input": "", "output": "3", "category": "math"}]


def test_chat_messages_multi_turn():
    result = parse_file("c.jsonl", jsonl(CHAT), LIMIT)
    assert result.schema == "messages" and result.kind == "chat"
    assert result.rows == [CHAT]


def test_sharegpt_becomes_messages():
    record = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "id": 7}
    result = parse_file("s.json", json.dumps([record]).encode(), LIMIT)
    assert result.schema == "sharegpt"
    assert result.rows == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "id": "7"}
    ]


def test_csv_tsv_with_column_mapping():
    data = "question,context,answer,topic\nWhat?,,That,misc\n".encode()
    options = ParseOptions(columns={"instruction": "question", "input": "context", "output": "answer"})
    rows = parse_file("q.csv", data, LIMIT, options).rows
    assert rows == [{"instruction": "What?", "input": "", "output": "That", "topic": "misc"}]
    tsv = "question\tanswer\nA\tB\n".encode("utf-8-sig")
    rows = parse_file("q.tsv", tsv, LIMIT, ParseOptions(columns={"instruction": "question", "output": "answer"})).rows
    assert rows == [{"instruction": "A", "input": "", "output": "B"}]


def test_csv_mapping_to_a_missing_column_is_named():
    with pytest.raises(DatasetError, match="mapped column 'prompt' \\(for 'instruction'\\) is not in the header"):
        parse_file("q.csv", b"question,answer\nA,B\n", LIMIT, ParseOptions(columns={"instruction": "prompt"}))


def test_parquet_alpaca_and_chat():
    rows = parse_file("p.parquet", parquet([{"instruction": "A", "input": None, "output": "B"}]), LIMIT).rows
    assert rows == [{"instruction": "A", "input": "", "output": "B"}]
    chat = parse_file("c.parquet", parquet([CHAT]), LIMIT)
    assert chat.kind == "chat" and chat.rows == [CHAT]


def test_parquet_garbage_is_named():
    with pytest.raises(DatasetError, match="p.parquet: not a readable Parquet file"):
        parse_file("p.parquet", b"PAR1 not really", LIMIT)


def test_file_type_override_for_a_wrong_extension():
    data = jsonl({"instruction": "A", "output": "B"})
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        parse_file("rows.txt", data, LIMIT)
    assert parse_file("rows.txt", data, LIMIT, ParseOptions(file_type="jsonl")).rows[0]["output"] == "B"


def test_schema_override_reports_rows_that_do_not_fit():
    data = jsonl({"instruction": "A", "output": "B"})
    with pytest.raises(DatasetError, match="line 1: missing field 'messages'"):
        parse_file("rows.jsonl", data, LIMIT, ParseOptions(schema="messages"))


@pytest.mark.parametrize(
    "record,expected",
    [
        ({"messages": []}, "line 1: 'messages' must be a non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, 'line 1: messages[0].role: "bot" is not one of'),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "line 1: messages[0].content: must be text, found list"),
        ({"messages": [{"role": "user", "content": "x"}]}, "line 1: 'messages' has no assistant turn"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]},
            "line 1: messages[1] (assistant): the reply is empty",
        ),
        (
            {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
            "line 1: 'messages' must start with a user turn",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]},
            "line 1: 'messages' must end with an assistant reply",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "y"}]},
            "line 1: messages[1]: a system message may only come first",
        ),
        ({"conversations": [{"from": "bot", "value": "x"}]}, 'line 1: conversations[0].from: "bot" is not one of'),
    ],
)
def test_chat_problems_name_line_and_field(record, expected):
    with pytest.raises(DatasetError) as caught:
        parse_file("c.jsonl", jsonl(record), LIMIT)
    assert any(expected in e for e in caught.value.errors), caught.value.errors
    assert all(e.startswith("c.jsonl ") for e in caught.value.errors)


def test_duplicate_keys_in_json_are_named():
    data = b'{"instruction": "a", "output": "b", "output": "c"}\n'
    with pytest.raises(DatasetError, match="line 1: field 'output' appears twice"):
        parse_file("d.jsonl", data, LIMIT)


def test_partly_valid_file_keeps_valid_rows_and_counts_errors():
    result = parse_file("m.jsonl", jsonl(CHAT, {"messages": "nope"}, CHAT), LIMIT)
    assert len(result.rows) == 2 and result.error_count == 1
    assert result.errors == ["m.jsonl line 2: 'messages' must be a non-empty list of {role, content} objects"]


def test_bom_and_snapshot_is_canonical():
    data = "\ufeff".encode() + jsonl({"output": "b", "instruction": "a"})
    rows = parse_file("b.jsonl", data, LIMIT).rows
    assert snapshot_bytes(rows) == b'{"input": "", "instruction": "a", "output": "b"}\n'


def test_validate_row_for_edits():
    assert validate_row({"instruction": "a", "input": "", "output": ""}, "alpaca")[1] == ["'output' is empty"]
    assert validate_row({"instruction": "a", "output": 5}, "alpaca") == ({"instruction": "a", "input": "", "output": "5"}, [])
    extra_key = {"messages": [{**m, "name": "x"} for m in CHAT["messages"]], "category": "greeting"}
    assert validate_row(extra_key, "chat") == (CHAT, [])


def test_stored_split():
    rows = [{"output": "a", "split": "train"}, {"output": "b", "split": "validation"}]
    assert stored_split(rows) == ([rows[0]], [rows[1]])
    assert stored_split([{"output": "a"}]) is None
