"""About 100 malformed uploads against the real `studio serve` over HTTP: deep nesting,
huge fields, wrong types, odd Unicode, BOMs, binary junk, compression bombs, 10k-column
CSVs, NUL bytes, formula cells, overrides and form fields that make no sense. None may
answer 5xx; one that is refused stores nothing (no dataset row, no artifact file)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import time
import zipfile
from collections import Counter

import httpx
import pytest

from tests.conftest import make_settings, server_starter

pytestmark = pytest.mark.db

LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def studio(tmp_path_factory, module_processes):
    settings = make_settings(tmp_path_factory.mktemp("uploads") / "data", max_upload_mb=LIMIT_MB, max_decompressed_mb=20)
    url = server_starter(module_processes)(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings


def _state(client, settings) -> tuple:
    """Every dataset the API lists and a checksum of every artifact file."""
    root = settings.artifacts_root
    files = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    return client.get("/api/datasets").json(), files


def _row(**fields) -> bytes:
    return json.dumps({"instruction": "q", "output": "a", **fields}).encode() + b"\n"


def _parquet(table) -> bytes:
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def _parquet_cases() -> list[tuple[str, bytes, dict]]:
    import pyarrow as pa

    rows = 3_000_000  # over the default max_rows: refused from the footer, never expanded
    same = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x"]))
    big = "y" * 200_000  # 200 rows of 200 kB: 40 MB expanded, over max_decompressed_mb=20
    nested = pa.array([[[[{"a": [1]}]]]] * 10)
    return [
        ("bomb-rows.parquet", _parquet(pa.table({"instruction": same, "output": same})), {}),
        ("bomb-bytes.parquet", _parquet(pa.table({"instruction": [big] * 200, "output": ["a"] * 200})), {}),
        ("wide.parquet", _parquet(pa.table({f"c{i}": [1] for i in range(500)})), {}),
        ("nested.parquet", _parquet(pa.table({"instruction": nested, "output": ["a"] * 10})), {}),
        ("ints.parquet", _parquet(pa.table({"instruction": [1, 2], "output": [3, 4]})), {}),
        ("truncated.parquet", _parquet(pa.table({"instruction": ["q"], "output": ["a"]}))[:-20], {}),
        ("magic-only.parquet", b"PAR1" + b"\x00" * 100 + b"PAR1", {}),
        ("fake-footer.parquet", b"PAR1" + os.urandom(200) + (10**6).to_bytes(4, "little") + b"PAR1", {}),
    ]


def cases() -> list[tuple[str, bytes, dict]]:
    """(filename, bytes, form fields) for each malformed upload."""
    rng = random.Random(8)
    deep = 100_000
    out: list[tuple[str, bytes, dict]] = [
        # deep nesting
        ("deep-array.json", b"[" * deep + b"]" * deep, {}),
        ("deep-object.json", b'{"a":' * deep + b"1" + b"}" * deep, {}),
        ("deep-line.jsonl", b'{"instruction": ' + b"[" * deep + b"]" * deep + b', "output": "a"}\n', {}),
        ("deep-65.jsonl", _row(extra=json.loads("[" * 65 + "]" * 65)), {}),
        ("deep-messages.jsonl", json.dumps({"messages": [{"role": "user", "content": "[" * 5000}]}).encode(), {}),
        ("deep-unclosed.json", b"[" * deep, {}),
        # huge fields and counts (under the byte limit)
        ("huge-field.jsonl", _row(output="z" * 900_000), {}),
        ("many-fields.jsonl", json.dumps({"instruction": "q", "output": "a", **{f"f{i}": "v" for i in range(2000)}}).encode(), {}),
        ("many-turns.jsonl", json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}] * 5000}).encode(), {}),
        ("long-name.jsonl", _row(), {"name": "n" * 201}),
        ("huge-int.jsonl", b'{"instruction": ' + b"9" * 5000 + b', "output": "a"}\n', {}),
        ("huge-float.json", b'[{"instruction": 1e999, "output": "a"}]', {}),
        ("nan.json", b'[{"instruction": NaN, "output": Infinity}]', {}),
        ("wide.csv", (",".join(f"c{i}" for i in range(10_000)) + "\n" + ",".join("v" * 10_000) + "\n").encode(), {}),
        ("wide-mapped.csv", (",".join(["instruction", "output"] + [f"c{i}" for i in range(10_000)]) + "\n").encode(), {}),
        ("huge-cell.csv", b"instruction,output\n" + b"q," + b"a" * 200_000 + b"\n", {}),
        ("many-lines.jsonl", b"\n" * 900_000, {}),
        ("many-blank-cells.csv", b"instruction,output\n" + b",\n" * 400_000, {}),
    ]
    # wrong types
    for name, value in [("list", ["a"]), ("dict", {"a": 1}), ("bool", True), ("null", None), ("nested", [[["a"]]])]:
        out.append((f"type-{name}.jsonl", _row(instruction=value), {}))
    for name, role in [("int", 1), ("dict", {"a": "user"}), ("list", ["user"]), ("null", None), ("bool", False),
                       ("unknown", "robot"), ("surrogate", "\ud800")]:
        body = json.dumps({"messages": [{"role": role, "content": "hi"}, {"role": "assistant", "content": "a"}]})
        out.append((f"role-{name}.jsonl", body.encode(), {}))
    for name, body in [
        ("messages-str", {"messages": "hello"}),
        ("messages-dict", {"messages": {"role": "user"}}),
        ("messages-empty", {"messages": []}),
        ("messages-numbers", {"messages": [1, 2, 3]}),
        ("content-dict", {"messages": [{"role": "user", "content": {"x": 1}}, {"role": "assistant", "content": "a"}]}),
        ("sharegpt-bad", {"conversations": [{"from": {"a": 1}, "value": "x"}]}),
        ("row-is-list", ["instruction", "output"]),
        ("row-is-string", "instruction"),
        ("row-is-number", 7),
    ]:
        out.append((f"{name}.jsonl", json.dumps(body).encode(), {}))
    out += [
        ("top-object.json", b'{"rows": []}', {}),
        ("top-string.json", b'"hello"', {}),
        ("data-not-list.json", b'{"data": {"instruction": "q"}}', {}),
    ]
    # odd Unicode
    for name, text in [("surrogate", "\ud800"), ("low-surrogate", "\udfff"), ("pair-split", "\ud83d x \ude00")]:
        escaped = json.dumps({"instruction": text, "output": "a"}).encode()  # \\udXXX escapes
        out.append((f"unicode-{name}.jsonl", escaped, {}))
    out += [
        ("unicode-key.jsonl", b'{"instruction": "q", "output": "a", "\\ud800": "x"}\n', {}),
        ("unicode-rtl.jsonl", _row(instruction="\u202eevil\u202c \u200b\u200d\ufeff"), {}),
        ("unicode-emoji.jsonl", _row(output="\U0001f600" * 1000), {}),
        ("unicode-nul.jsonl", _row(instruction="a\u0000b"), {}),
        ("unicode-name.jsonl", _row(), {"name": "\ud800"}),
        ("bom-utf8.jsonl", b"\xef\xbb\xbf" + _row(), {}),
        ("bom-utf16.jsonl", "\ufeff".encode("utf-16-le") + _row().decode().encode("utf-16-le"), {}),
        ("bom-utf32.json", b"\xff\xfe\x00\x00" + "[]".encode("utf-32-le"), {}),
        ("bom-twice.csv", b"\xef\xbb\xbf\xef\xbb\xbfinstruction,output\nq,a\n", {}),
        ("overlong.jsonl", b'{"instruction": "\xc0\xaf", "output": "a"}\n', {}),
        ("cesu8.jsonl", b'{"instruction": "\xed\xa0\x80", "output": "a"}\n', {}),
        ("latin1-header.csv", "instrucci\u00f3n,output\nq,a\n".encode("latin-1"), {}),
    ]
    # binary junk and archives
    for ext in ("jsonl", "json", "csv", "tsv", "parquet"):
        out.append((f"junk.{ext}", bytes(rng.randrange(256) for _ in range(4096)), {}))
    out.append(("elf.jsonl", b"\x7fELF\x02\x01\x01" + b"\x00" * 500, {}))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rows.jsonl", b"\n" * 50_000_000)
    out += [
        ("bomb.zip", zipped.getvalue(), {}),
        ("bomb-as.jsonl", zipped.getvalue(), {}),
        ("bomb.jsonl.gz", gzip.compress(b"\n" * 50_000_000), {}),
        ("gzip-as.jsonl", gzip.compress(_row() * 100), {}),
        ("gzip-as.csv", gzip.compress(b"instruction,output\nq,a\n"), {}),
    ]
    out += _parquet_cases()
    # NUL bytes, CSV quirks, formula cells (stored as text, exported formula-safe)
    out += [
        ("nul-header.csv", b"instr\x00uction,output\nq,a\n", {}),
        ("nul-cell.csv", b"instruction,output\nq\x00,a\n", {}),
        ("nul-line.jsonl", b"\x00" * 100 + b"\n" + _row(), {}),
        ("nul-only.json", b"\x00" * 1000, {}),
        ("quote-open.csv", b'instruction,output\n"q,a\n', {}),
        ("quote-mid.csv", b'instruction,output\nq"x"y,a\n', {}),
        ("cr-only.csv", b"instruction,output\rq,a\r", {}),
        ("header-only.csv", b"instruction,output\n", {}),
        ("empty-header.csv", b",\nq,a\n", {}),
        ("formula.csv", b'instruction,output\n"=cmd|\' /C calc\'!A0",a\n+1+1,@SUM(A1)\n-2,=HYPERLINK("http://x")\n', {}),
        ("formula.jsonl", _row(instruction="=1+1", output="@SUM(1)"), {}),
        ("tsv-as-csv.csv", b"instruction\toutput\nq\ta\n", {}),
    ]
    # filenames and form fields
    out += [
        ("../../../../etc/passwd.jsonl", _row(), {}),
        ("..\\..\\windows\\x.jsonl", _row(), {}),
        ("/abs/path.jsonl", _row(), {}),
        ("a" * 300 + ".jsonl", _row(), {}),
        ("noext", _row(), {}),
        (".jsonl", _row(), {}),
        ("x.jsonl", _row(), {"file_type": "exe"}),
        ("x.jsonl", _row(), {"file_type": "parquet"}),
        ("x.jsonl", _row(), {"schema": "sql"}),
        ("x.jsonl", _row(), {"schema": "messages"}),
        ("x.csv", b"q,a\nx,y\n", {"columns": "not json"}),
        ("x.csv", b"q,a\nx,y\n", {"columns": "[1, 2]"}),
        ("x.csv", b"q,a\nx,y\n", {"columns": '{"instruction": 5}'}),
        ("x.csv", b"q,a\nx,y\n", {"columns": '{"evil": "q"}'}),
        ("x.csv", b"q,a\nx,y\n", {"columns": "[" * 50_000 + "]" * 50_000}),
        ("x.csv", b"q,a\nx,y\n", {"columns": '{"instruction": "\\ud800"}'}),
        ("x.jsonl", _row(), {"accept_partial": "maybe"}),
        ("x.jsonl", b"", {}),
    ]
    return out


CASES = cases()


def _post(client, path: str, name: str, data: bytes, form: dict) -> httpx.Response:
    files = {"file": (name, data)}
    # httpx cannot encode a lone surrogate: send the field as its raw escape-free bytes
    form = {k: v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v for k, v in form.items()}
    return client.post(path, files=files, data=form)


def test_malformed_uploads_get_4xx_and_store_nothing(studio):
    client, settings = studio
    statuses: Counter = Counter()
    slowest = (0.0, "")
    stored = 0
    for index, (name, data, form) in enumerate(CASES):
        for path in ("/api/datasets/inspect", "/api/datasets"):
            before = _state(client, settings)
            started = time.perf_counter()
            response = _post(client, path, name, data, form)
            took = time.perf_counter() - started
            slowest = max(slowest, (took, f"{path} {name}"))
            statuses[response.status_code] += 1
            assert response.status_code < 500, (index, name, form, path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                body = response.json()
                assert body["detail"], (name, body)
                assert _state(client, settings) == before, f"{name}: refused, yet something was stored"
            elif path == "/api/datasets":
                stored += 1
    refused = sum(n for code, n in statuses.items() if code >= 400)
    print(
        f"\nmalformed uploads: {len(CASES)} files x 2 routes = {sum(statuses.values())} requests, "
        f"statuses {dict(sorted(statuses.items()))}, 0 5xx; {refused} refused with nothing stored, "
        f"{stored} stored as valid; slowest {slowest[0]:.2f} s ({slowest[1]})"
    )
    assert len(CASES) >= 100


def test_refused_files_say_why(studio):
    """The limits name the setting; a Parquet bomb is refused from its footer, quickly."""
    client, _ = studio
    expected = {
        "deep-array.json": "STUDIO_MAX_JSON_DEPTH",
        "deep-65.jsonl": "STUDIO_MAX_JSON_DEPTH",
        "many-fields.jsonl": "STUDIO_MAX_COLUMNS",
        "wide.csv": "STUDIO_MAX_COLUMNS",
        "wide.parquet": "STUDIO_MAX_COLUMNS",
        "bomb-rows.parquet": "3,000,000 rows; the limit is 1,000,000 (STUDIO_MAX_ROWS)",
        "bomb-bytes.parquet": "STUDIO_MAX_DECOMPRESSED_MB",
        "role-dict.jsonl": "messages[0].role: a dict is not one of",
        "unicode-surrogate.jsonl": "lone surrogate",
        "unicode-key.jsonl": "lone surrogate",
    }
    by_name = {name: (data, form) for name, data, form in CASES}
    for name, words in expected.items():
        data, form = by_name[name]
        started = time.perf_counter()
        response = _post(client, "/api/datasets", name, data, form)
        took = time.perf_counter() - started
        assert response.status_code == 422 and words in response.json()["detail"], (name, response.text[:300])
        if name == "bomb-rows.parquet":
            print(f"\nparquet bomb: {len(data) / 1e3:.0f} kB file of 3,000,000 rows refused in {took * 1000:.0f} ms")
            assert took < 2.0


def test_an_upload_over_the_limit_is_refused_while_it_streams(studio):
    """413 with the real size before the body is read (Content-Length), or as soon as the
    count passes the limit (a body of unknown length); Gradio's upload route as well."""
    client, settings = studio
    before = _state(client, settings)
    big = b'{"instruction": "q", "output": "a"}\n' * 100_000  # 3.6 MB
    for path, field in (("/api/datasets", "file"), ("/api/datasets/inspect", "file"), ("/gradio_api/upload", "files")):
        response = client.post(path, files={field: ("upload.jsonl", big)})
        assert response.status_code == 413, (path, response.text)
        assert response.json()["detail"].startswith("upload.jsonl is 3.6 MB; the limit is 1 MB (STUDIO_MAX_UPLOAD_MB)")

    boundary = "studioboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="stream.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    sent = {"bytes": 0}

    def body():
        yield head
        for _ in range(1000):  # up to 100 MB, if the server kept reading
            sent["bytes"] += 100_000
            yield b"x" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    started = time.perf_counter()
    response = client.post(
        "/api/datasets", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    took = time.perf_counter() - started
    assert response.status_code == 413, response.text
    # no Content-Length: the size read when it passed the limit (how far depends on the chunks)
    assert re.match(r"stream\.jsonl is more than 1\.\d MB; the limit is 1 MB \(STUDIO_MAX_UPLOAD_MB\)$",
                    response.json()["detail"]), response.text
    assert _state(client, settings) == before
    gradio_files = sum(1 for p in settings.gradio_dir.rglob("*") if p.is_file()) if settings.gradio_dir.exists() else 0
    print(f"\nstreamed upload: refused after {sent['bytes'] / 1e6:.1f} MB sent of up to 100 MB, in {took:.2f} s; "
          f"files in the studio's Gradio folder: {gradio_files}")
    assert sent["bytes"] < 100_000_000


def test_gradio_folders_are_the_studios_own_and_analytics_off(settings, monkeypatch):
    """Set before the Blocks is built, read by Gradio when it is: uploads and cache land in
    the data dir (the traversal test's RCE case sees an upload there), analytics stay off."""
    import gradio.utils

    from studio.app import use_own_gradio_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    use_own_gradio_folder(settings)
    assert gradio.utils.get_upload_folder() == str(settings.gradio_dir)
    assert settings.gradio_dir.is_dir() and settings.gradio_dir.is_relative_to(settings.data_dir.resolve())
    from gradio.analytics import analytics_enabled

    assert analytics_enabled() is False
