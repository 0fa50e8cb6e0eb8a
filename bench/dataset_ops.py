"""Datasets at Alpaca scale, through a real `studio serve` subprocess over HTTP.

For generated Alpaca-like datasets (varied lengths with a long tail, a category column,
1% exact duplicates) of each size (default 5k / 20k / 52k rows), each size on a fresh
studio process, best of --repeats (each repeat uploads a slightly different file, so no
cache or content-addressed shortcut helps it):
  1. upload and validation: POST /api/datasets of the JSONL file (goal <= 10 s at 52k);
  2. one page of 50 rows, GET /api/datasets/{id}/page: the first call after the upload
     (snapshot parsed), then a middle page, the last page, and a search term with a late
     offset (goal <= 300 ms);
  3. the quality report, tokenization included, with the demo base's tokenizer, the
     Alpaca template and max_length 512 (goal <= 30 s at 52k);
  4. one cell edit (PATCH /api/datasets/{id}/rows/{i}: a new 52k-row version written);
  5. the studio process's peak resident memory, VmHWM (goal < 1.5 GB), after the first
     repeat (one dataset) and at the end (--repeats datasets in its caches);
with per-1k-row figures and the growth between sizes, to show the cost is linear.

    python bench/dataset_ops.py [--sizes 5000,20000,52000] [--repeats 3] [--max-length 512]
    python bench/dataset_ops.py --quick     # 2k / 5k rows, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: keep script names from shadowing packages

from tests.conftest import Processes, make_settings, server_starter  # noqa: E402

VERBS = "Explain Describe Summarize List Write Translate Classify Rewrite Suggest Compare".split()
TOPICS = (
    "photosynthesis the water cycle a balanced diet machine learning the French revolution "
    "volcanoes compound interest the immune system renewable energy black holes supply chains "
    "climate change the printing press jazz music neural networks tides ocean currents"
).split()
WORDS = (
    "the a of and to in is that it for on with as was by this be are from at or an have not they "
    "which one you were all we when there can more if out so what up about into than them only "
    "energy system process people water time world example result important different because"
).split()


def alpaca_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows shaped like Stanford Alpaca: ~40% with an input, outputs mostly 20-150 words
    with a 5% tail of 150-600 words (so some rows pass a 512-token cutoff)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = " ".join(rng.sample(TOPICS, 2))
        words = rng.randint(150, 600) if rng.random() < 0.05 else rng.randint(20, 150)
        row = {
            "instruction": f"{rng.choice(VERBS)} {topic} in simple terms ({i}).",
            "input": " ".join(rng.choices(WORDS, k=rng.randint(8, 40))) if rng.random() < 0.4 else "",
            "output": " ".join(rng.choices(WORDS, k=words)).capitalize() + ".",
            "category": rng.choice(("open_qa", "brainstorm", "summary", "classify", "rewrite")),
        }
        rows.append(row)
    for i in range(0, n, 100):  # some duplicates for the report to find
        rows[i] = dict(rows[(i + 50) % n])
    return rows


def jsonl(rows: list[dict], repeat: int) -> bytes:
    """The rows as JSONL; each repeat differs in one row, so its content hash is new."""
    first = {**rows[0], "instruction": f"{rows[0]['instruction']} [repeat {repeat}]"}
    return "".join(json.dumps(r) + "\n" for r in [first, *rows[1:]]).encode()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds the process has used, all threads (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def one_pass(client: httpx.Client, pid: int, body: bytes, n: int, max_length: int, repeat: int) -> dict:
    """Upload, pages, report and an edit of one file; seconds for each (wall clock, and
    the studio's CPU seconds for the heavy ones: those barely move when the machine is busy)."""
    cpu = cpu_s(pid)
    upload_s, response = timed(lambda: client.post("/api/datasets", files={"file": (f"alpaca-{repeat}.jsonl", body)}))
    upload_cpu_s = cpu_s(pid) - cpu
    response.raise_for_status()
    dataset_id = response.json()["id"]
    page = f"/api/datasets/{dataset_id}/page"

    def get(**params) -> float:
        seconds, response = timed(lambda: client.get(page, params={"limit": 50, **params}))
        response.raise_for_status()
        return seconds

    first_s = get(offset=0)  # parses the snapshot
    middle_s = min(get(offset=n // 2) for _ in range(5))
    last_s = min(get(offset=n - 50) for _ in range(5))
    search_first_s = get(search="volcanoes", offset=1000)  # builds the search index
    search_s = min(get(search="volcanoes", offset=1000) for _ in range(5))
    cpu = cpu_s(pid)
    report_s, report = timed(
        lambda: client.post(
            f"/api/datasets/{dataset_id}/quality",
            json={"base_model": "demo", "max_length": max_length, "template": {"name": "alpaca"}},
        )
    )
    report_cpu_s = cpu_s(pid) - cpu
    report.raise_for_status()
    report = report.json()
    edit_s, edited = timed(
        lambda: client.patch(f"{page.rsplit('/', 1)[0]}/rows/{n - 7}", json={"column": "output", "value": "Edited."})
    )
    edited.raise_for_status()
    after_edit_s = get(offset=n - 50)  # the new version's first page: parsed again
    return {
        "upload_s": upload_s, "upload_cpu_s": upload_cpu_s, "report_cpu_s": report_cpu_s, "first_page_s": first_s, "page_s": middle_s, "last_page_s": last_s,
        "search_first_s": search_first_s, "search_s": search_s, "report_s": report_s, "edit_s": edit_s,
        "page_after_edit_s": after_edit_s, "tokens": report["tokens"]["total"],
        "truncated": report["truncated"]["rows"], "duplicates": report["exact_duplicates"]["rows"],
    }


def bench_size(n: int, max_length: int, repeats: int) -> dict:
    rows = alpaca_rows(n)
    bodies = [jsonl(rows, r) for r in range(repeats)]
    del rows
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp) / "data", max_upload_mb=1000)
        processes = Processes(Path(tmp))
        try:
            url = server_starter(processes)(settings)
            server_pid = processes.procs[0].pid
            idle_rss = peak_rss_mb(server_pid)
            passes = []
            with httpx.Client(base_url=url, timeout=600) as client:
                # warm-up on 100 rows: the tokenizer and plotly load once per studio process
                one_pass(client, server_pid, jsonl(alpaca_rows(100, seed=1), 0), 100, max_length, -1)
                warm_rss = peak_rss_mb(server_pid)
                for repeat, body in enumerate(bodies):
                    passes.append(one_pass(client, server_pid, body, n, max_length, repeat))
                    if repeat == 0:
                        one_dataset_rss = peak_rss_mb(server_pid)
            best = {k: min(p[k] for p in passes) for k in passes[0] if k.endswith("_s")}
            return {
                "rows": n, "mb": len(bodies[0]) / 1e6, **best,
                **{k: passes[0][k] for k in ("tokens", "truncated", "duplicates")},
                "idle_rss_mb": idle_rss, "warm_rss_mb": warm_rss, "peak_rss_mb": one_dataset_rss, "peak_rss_end_mb": peak_rss_mb(server_pid),
            }
        finally:
            processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000,52000")
    parser.add_argument("--repeats", type=int, default=3, help="passes per size; timings are the best of them")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="2k and 5k rows, one pass")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats = "2000,5000", 1
    print(f"cpus={os.cpu_count()}  repeats={args.repeats} (best of)  max_length={args.max_length}  "
          "through `studio serve` over HTTP", flush=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        result = bench_size(n, args.max_length, args.repeats)
        results.append(result)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)

    ms = lambda s: f"{s * 1000:.0f}"  # noqa: E731
    print()
    print(f"{'rows':>6} {'MB':>5} {'upload':>7} | {'page ms: 1st':>12} {'mid':>4} {'last':>4} {'search':>6} "
          f"{'1st search':>10} | {'report':>7} {'CPU':>6} {'tokens':>9} | {'edit':>6} {'page after':>10} | "
          f"{'RSS MB: idle':>12} {'warm':>5} {'peak':>5} {'end':>5}")
    for r in results:
        print(f"{r['rows']:>6} {r['mb']:>5.1f} {r['upload_s']:>6.2f}s | {ms(r['first_page_s']):>12} {ms(r['page_s']):>4} "
              f"{ms(r['last_page_s']):>4} {ms(r['search_s']):>6} {ms(r['search_first_s']):>10} | {r['report_s']:>6.2f}s "
              f"{r['report_cpu_s']:>5.1f}s {r['tokens']:>9} | {r['edit_s']:>5.2f}s {ms(r['page_after_edit_s']):>10} | {r['idle_rss_mb']:>12.0f} "
              f"{r['warm_rss_mb']:>5.0f} {r['peak_rss_mb']:>5.0f} {r['peak_rss_end_mb']:>5.0f}")
    print("\nper 1k rows:")
    for r in results:
        k = r["rows"] / 1000
        print(f"{r['rows']:>6} rows: upload {r['upload_s'] / k * 1000:5.1f} ms, report {r['report_s'] / k * 1000:6.1f} ms, "
              f"report CPU {r['report_cpu_s'] / k * 1000:6.1f} ms, edit {r['edit_s'] / k * 1000:5.1f} ms, first page {r['first_page_s'] / k * 1000:5.1f} ms, "
              f"memory over warm {(r['peak_rss_mb'] - r['warm_rss_mb']) / k:5.2f} MB")
    for a, b in zip(results, results[1:]):
        rows, grew = b["rows"] / a["rows"], lambda key: b[key] / max(a[key], 1e-9)  # noqa: E731
        mem = (b["peak_rss_mb"] - b["warm_rss_mb"]) / max(a["peak_rss_mb"] - a["warm_rss_mb"], 1e-9)
        print(f"{a['rows']} -> {b['rows']} rows (x{rows:.2f}): upload x{grew('upload_s'):.2f} (CPU "
              f"x{grew('upload_cpu_s'):.2f}), report x{grew('report_s'):.2f} (CPU x{grew('report_cpu_s'):.2f}), edit x{grew('edit_s'):.2f}, first page x{grew('first_page_s'):.2f}, "
              f"memory over warm x{mem:.2f}")
        k = (b["rows"] - a["rows"]) / 1000
        print(f"{'':>8}per extra 1k rows: upload {(b['upload_s'] - a['upload_s']) / k * 1000:.1f} ms, report "
              f"{(b['report_s'] - a['report_s']) / k * 1000:.1f} ms, edit {(b['edit_s'] - a['edit_s']) / k * 1000:.1f} ms, "
              f"peak memory {(b['peak_rss_mb'] - a['peak_rss_mb']) / k:.2f} MB")
    big = results[-1]
    goals = [
        ("upload + validation", big["upload_s"], 10, "s"),
        ("page of 50 (worst of first/mid/last/search)",
         max(big[k] for k in ("first_page_s", "page_s", "last_page_s", "search_s", "search_first_s")), 0.3, "s"),
        ("quality report", big["report_s"], 30, "s"),
        ("peak RSS", max(big["peak_rss_mb"], big["peak_rss_end_mb"]), 1500, "MB"),
    ]
    print(f"\ngoals at {big['rows']} rows:")
    for what, value, goal, unit in goals:
        print(f"  {what:<45} {value:8.2f} {unit}  goal {'<=' if unit == 's' else '<'} {goal} {unit}  "
              f"{'ok' if value <= goal else 'MISSED'}")


if __name__ == "__main__":
    main()
