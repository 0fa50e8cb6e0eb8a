"""Dataset versions, paging, search, edits, export and split through the services, on a
real SQLite DB and artifact folder."""

from __future__ import annotations

import csv
import io
import json

import pytest

from studio.core.datasets import DatasetError, ParseOptions, read_snapshot
from studio.services import datasets
from studio.services.context import NotFound

pytestmark = pytest.mark.db  # versions stored and read back: also run on PostgreSQL


def rows(n: int, category: bool = True) -> list[dict]:
    return [
        {"instruction": f"Say {i}", "input": "", "output": f"{i}", **({"category": "even" if i % 2 == 0 else "odd"} if category else {})}
        for i in range(n)
    ]


def upload(ctx, records, name="t.jsonl") -> int:
    body = "\n".join(json.dumps(r) for r in records).encode()
    return datasets.create_dataset(ctx, name, body)[0].id


def current_rows(ctx, dataset_id):
    version, snapshot = datasets.load_version(ctx, dataset_id)
    return list(snapshot.rows)


def test_every_edit_makes_a_new_version_and_old_ones_stay(ctx):
    dataset_id = upload(ctx, rows(5))
    v1 = datasets.get_dataset(ctx, dataset_id)
    edited = datasets.edit_cell(ctx, dataset_id, 2, "output", "two")
    added = datasets.add_row(ctx, dataset_id, {"instruction": "New", "output": "row"})
    deleted = datasets.delete_rows(ctx, dataset_id, [0, 1])
    assert [d.version for d in (v1, edited, added, deleted)] == [1, 2, 3, 4]
    assert [r["output"] for r in current_rows(ctx, dataset_id)] == ["two", "3", "4", "row"]
    history = datasets.list_versions(ctx, dataset_id)
    assert [v.number for v in history] == [4, 3, 2, 1]
    assert history[0].parent_id == history[1].id and history[-1].parent_id is None
    assert history[2].note == "edited 'output' of row 2"
    assert history[0].note == "deleted 2 rows (0, 1)"
    # version 1 is untouched, on disk and by hash
    path = datasets.snapshot_path(ctx, v1.version_id)
    assert [r["output"] for r in read_snapshot(path)] == ["0", "1", "2", "3", "4"]
    assert history[-1].content_hash == v1.content_hash


def test_a_new_version_is_cached_as_reading_it_back_gives_it(ctx):
    """Edits, a split and a revert put the new version straight into the snapshot cache:
    rows (and their key order) exactly as the file reads back, unchanged rows shared."""
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "category": "x"}
    dataset_id = upload(ctx, rows(6))
    chat_id = upload(ctx, [chat, chat], name="chat.jsonl")
    _, before = datasets.load_version(ctx, dataset_id)
    changes = [
        lambda: datasets.edit_cell(ctx, dataset_id, 2, "output", "two"),
        lambda: datasets.edit_cell(ctx, dataset_id, 3, "note", "a new column"),
        lambda: datasets.add_row(ctx, dataset_id, {"output": "row", "instruction": "New"}),
        lambda: datasets.delete_rows(ctx, dataset_id, [0]),
        lambda: datasets.split_dataset(ctx, dataset_id, 0.5),
        lambda: datasets.revert_to(ctx, dataset_id, before_version),
        lambda: datasets.edit_cell(ctx, chat_id, 1, "messages", json.dumps([{"content": "Yo", "role": "user"}, {"role": "assistant", "content": "Hey"}])),
    ]
    before_version = datasets.get_dataset(ctx, dataset_id).version_id
    for number, change in enumerate(changes):
        public = change()
        version, cached = datasets.load_version(ctx, public.id)
        from_file = read_snapshot(datasets.snapshot_path(ctx, version.id))
        assert [list(r.items()) for r in cached.rows] == [list(r.items()) for r in from_file]
        assert json.dumps(cached.rows) == json.dumps(from_file)
        if number == 0:
            assert cached.rows[0] is before.rows[0] and cached.rows[2] is not before.rows[2]


def test_revert_is_a_new_version_with_old_content(ctx):
    dataset_id = upload(ctx, rows(3))
    v1 = datasets.get_dataset(ctx, dataset_id)
    datasets.delete_rows(ctx, dataset_id, [0])
    back = datasets.revert_to(ctx, dataset_id, v1.version_id)
    assert back.version == 3 and back.content_hash == v1.content_hash and back.row_count == 3
    assert datasets.list_versions(ctx, dataset_id)[0].note == "went back to version 1"


def test_edit_on_a_stale_version_is_refused(ctx):
    dataset_id = upload(ctx, rows(3))
    v1 = datasets.get_dataset(ctx, dataset_id).version_id
    datasets.edit_cell(ctx, dataset_id, 0, "output", "zero", base_version_id=v1)
    with pytest.raises(datasets.VersionConflict, match="reload and edit again"):
        datasets.edit_cell(ctx, dataset_id, 1, "output", "one", base_version_id=v1)


@pytest.mark.parametrize(
    "call,expected",
    [
        (lambda ctx, d: datasets.edit_cell(ctx, d, 1, "output", "  "), "row 1: 'output' is empty"),
        (lambda ctx, d: datasets.edit_cell(ctx, d, 9, "output", "x"), "row 9: no such row"),
        (lambda ctx, d: datasets.add_row(ctx, d, {"instruction": "x"}), "new row: missing field 'output'"),
        (lambda ctx, d: datasets.delete_rows(ctx, d, []), "select at least one row"),
        (lambda ctx, d: datasets.delete_rows(ctx, d, [0, 1, 2]), "would leave none"),
    ],
)
def test_bad_edits_name_the_row_and_store_nothing(ctx, call, expected):
    dataset_id = upload(ctx, rows(3))
    with pytest.raises(DatasetError, match=expected):
        call(ctx, dataset_id)
    assert len(datasets.list_versions(ctx, dataset_id)) == 1


def test_chat_rows_edit_messages_as_json(ctx):
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    body = json.dumps(chat).encode()
    dataset_id = datasets.create_dataset(ctx, "c.jsonl", body)[0].id
    assert datasets.get_dataset(ctx, dataset_id).kind == "chat"
    new = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    datasets.edit_cell(ctx, dataset_id, 0, "messages", json.dumps(new))
    assert current_rows(ctx, dataset_id)[0]["messages"] == new
    with pytest.raises(DatasetError, match="row 0: 'messages' is not valid JSON"):
        datasets.edit_cell(ctx, dataset_id, 0, "messages", "[{")
    with pytest.raises(DatasetError, match="new row: missing field 'messages'"):
        datasets.add_row(ctx, dataset_id, {"instruction": "x", "output": "y"})


def test_paging_search_and_category_filter(ctx):
    dataset_id = upload(ctx, rows(120))
    page = datasets.page_rows(ctx, dataset_id, offset=100, limit=50)
    assert page.total == 120 and [r["index"] for r in page.rows] == list(range(100, 120))
    assert page.columns == ["instruction", "input", "output", "category"]
    found = datasets.page_rows(ctx, dataset_id, search="SAY 11")
    assert [r["index"] for r in found.rows] == [11, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119]
    odd = datasets.page_rows(ctx, dataset_id, category="odd", limit=3)
    assert odd.total == 60 and [r["index"] for r in odd.rows] == [1, 3, 5]
    both = datasets.page_rows(ctx, dataset_id, search="say 1", category="even")
    assert all(r["row"]["category"] == "even" and "Say 1" in r["row"]["instruction"] for r in both.rows)
    assert datasets.category_counts(ctx, dataset_id) == {"even": 60, "odd": 60}


def test_old_versions_can_be_paged(ctx):
    dataset_id = upload(ctx, rows(3))
    v1 = datasets.get_dataset(ctx, dataset_id).version_id
    datasets.delete_rows(ctx, dataset_id, [0])
    assert datasets.page_rows(ctx, dataset_id, version_id=v1).total == 3
    with pytest.raises(NotFound):
        datasets.page_rows(ctx, dataset_id, version_id=9999)


def test_export_jsonl_and_formula_safe_csv(ctx):
    records = [{"instruction": "=HYPERLINK(\"x\")", "input": "+1", "output": "<script>alert(1)</script>"},
               {"instruction": "-2", "input": "@a", "output": "\tx"}]
    dataset_id = upload(ctx, records)
    name, data, media = datasets.export_version(ctx, dataset_id, "jsonl")
    assert name == "t-v1.jsonl" and [json.loads(line) for line in data.splitlines()] == records
    name, data, media = datasets.export_version(ctx, dataset_id, "csv")
    assert name == "t-v1.csv" and media == "text/csv"
    table = list(csv.reader(io.StringIO(data.decode())))
    assert table == [
        ["instruction", "input", "output"],
        ["'=HYPERLINK(\"x\")", "'+1", "<script>alert(1)</script>"],
        ["'-2", "'@a", "'\tx"],
    ]


def test_seeded_stratified_split(ctx):
    dataset_id = upload(ctx, rows(100))
    split = datasets.split_dataset(ctx, dataset_id, validation_fraction=0.2, seed=1)
    assert split.version == 2 and split.validation_rows == 20
    held = [r for r in current_rows(ctx, dataset_id) if r["split"] == "validation"]
    assert sorted(Counter_of(held).values()) == [10, 10]  # stratified by category
    again = datasets.assign_split(rows(100), 0.2, seed=1)
    assert [r["split"] for r in again] == [r["split"] for r in current_rows(ctx, dataset_id)]
    assert "stratified by 'category'" in datasets.list_versions(ctx, dataset_id)[0].note


def Counter_of(rows):
    from collections import Counter

    return Counter(r["category"] for r in rows)


def test_split_by_column(ctx):
    records = [{**r, "fold": "test" if i % 4 == 0 else "train"} for i, r in enumerate(rows(8))]
    dataset_id = upload(ctx, records)
    assert datasets.split_dataset(ctx, dataset_id, by_column="fold").validation_rows == 2
    with pytest.raises(DatasetError, match="row 0: column 'category' holds 'even'; expected train or validation"):
        datasets.split_dataset(ctx, dataset_id, by_column="category")


def test_inspect_offers_the_header_for_a_mapping(ctx):
    seen = datasets.inspect_file(ctx, "q.csv", b"question,answer\nA,B\n")
    assert seen.columns == ["question", "answer"] and seen.row_count == 0
    assert "missing column 'instruction'" in seen.errors[0]
    mapped = datasets.inspect_file(ctx, "q.csv", b"question,answer\nA,B\n", ParseOptions(columns={"instruction": "question", "output": "answer"}))
    assert mapped.row_count == 1 and mapped.sample == [{"instruction": "A", "input": "", "output": "B"}]


def test_a_version_a_job_uses_stays_frozen(ctx, tiny_model_dir):
    from studio.services import jobs

    dataset_id = upload(ctx, rows(4))
    job = jobs.create_job(ctx, dataset_id, str(tiny_model_dir))
    frozen = datasets.snapshot_path(ctx, job.dataset_version_id)
    before = frozen.read_bytes()
    datasets.edit_cell(ctx, dataset_id, 0, "output", "changed")
    datasets.delete_rows(ctx, dataset_id, [1])
    history = datasets.list_versions(ctx, dataset_id)
    assert [v.used_by_jobs for v in history] == [0, 0, 1]
    assert jobs.get_job(ctx, job.id).dataset_version_id == history[-1].id
    assert frozen.read_bytes() == before
    assert jobs.create_job(ctx, dataset_id, str(tiny_model_dir)).dataset_version_id == history[0].id
