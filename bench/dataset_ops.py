"""Datasets at Alpaca scale, through a real `studio serve` over HTTP.

For generated Alpaca-like datasets of each size (default 5k / 20k / 52k rows), each on a
fresh studio process, prints:
  1. upload and validation: POST /api/datasets of the JSONL file (goal <= 10 s at 52k);
  2. one page of 50 rows: GET /api/datasets/{id}/page, the first call (snapshot parsed)
     and the median of later calls, plain and with a search (goal <= 300 ms);
  3. the quality report, tokenization included, with the demo base's fast tokenizer and
     the Alpaca template (goal <= 30 s);
  4. the studio process's peak resident memory, VmHWM (goal < 1.5 GB);
and each figure per 1k rows, to show the growth is linear.

    python bench/datasets.py [--sizes 5000,20000,52000] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    """Rows shaped like Stanford Alpaca: ~40% with an input, outputs of 20-150 words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = " ".join(rng.sample(TOPICS, 2))
        row = {
            "instruction": f"{rng.choice(VERBS)} {topic} in simple terms ({i}).",
            "input": " ".join(rng.choices(WORDS, k=rng.randint(8, 40))) if rng.random() < 0.4 else "",
            "output": " ".join(rng.choices(WORDS, k=rng.randint(20, 150))).capitalize() + ".",
            "category": rng.choice(("open_qa", "brainstorm", "summary", "classify", "rewrite")),
        }
        rows.append(row)
    for i in range(0, n, 100):  # some duplicates for the report to find
        rows[i] = dict(rows[(i + 50) % n])
    return rows


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def bench_size(n: int, max_length: int) -> dict:
    rows = alpaca_rows(n)
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp) / "data", max_upload_mb=1000)
        processes = Processes(Path(tmp))
        try:
            url = server_starter(processes)(settings)
            server_pid = processes.procs[0].pid
            base_rss = peak_rss_mb(server_pid)
            with httpx.Client(base_url=url, timeout=300) as client:
                upload_s, response = timed(lambda: client.post("/api/datasets", files={"file": ("alpaca.jsonl", body)}))
                response.raise_for_status()
                dataset_id = response.json()["id"]
                page = f"/api/datasets/{dataset_id}/page"
                first_s, _ = timed(lambda: client.get(page, params={"offset": n // 2, "limit": 50}).raise_for_status())
                pages = [timed(lambda: client.get(page, params={"offset": n // 2, "limit": 50}).raise_for_status())[0] for _ in range(10)]
                searches = [timed(lambda: client.get(page, params={"search": "volcanoes", "limit": 50}).raise_for_status())[0] for _ in range(5)]
                report_s, report = timed(
                    lambda: client.post(
                        f"/api/datasets/{dataset_id}/quality",
                        json={"base_model": "demo", "max_length": max_length, "template": {"name": "alpaca"}},
                    )
                )
                report.raise_for_status()
                report = report.json()
            return {
                "rows": n,
                "mb": len(body) / 1e6,
                "upload_s": upload_s,
                "first_page_ms": first_s * 1000,
                "page_ms": statistics.median(pages) * 1000,
                "search_ms": statistics.median(searches) * 1000,
                "report_s": report_s,
                "tokens": report["tokens"]["total"],
                "truncated": report["truncated"]["rows"],
                "duplicates": report["exact_duplicates"]["rows"],
                "idle_rss_mb": base_rss,
                "peak_rss_mb": peak_rss_mb(server_pid),
            }
        finally:
            processes.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000,52000")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        result = bench_size(n, args.max_length)
        results.append(result)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}), flush=True)
    print()
    print(f"{'rows':>7} {'MB':>6} {'upload s':>9} {'page ms':>8} {'1st page':>9} {'search ms':>9} "
          f"{'report s':>9} {'tokens':>10} {'peak MB':>8} | per 1k rows: {'upload':>7} {'report':>7} {'MB':>6}")
    for r in results:
        k = r["rows"] / 1000
        print(
            f"{r['rows']:>7} {r['mb']:>6.1f} {r['upload_s']:>9.2f} {r['page_ms']:>8.1f} {r['first_page_ms']:>9.1f} "
            f"{r['search_ms']:>9.1f} {r['report_s']:>9.2f} {r['tokens']:>10} {r['peak_rss_mb']:>8.0f} | "
            f"{'':>12} {r['upload_s'] / k:>7.3f} {r['report_s'] / k:>7.3f} {(r['peak_rss_mb'] - r['idle_rss_mb']) / k:>6.2f}"
        )
    for a, b in zip(results, results[1:]):
        k = (b["rows"] - a["rows"]) / 1000
        print(
            f"{a['rows']} -> {b['rows']} rows, per extra 1k rows: upload {(b['upload_s'] - a['upload_s']) / k:.3f} s, "
            f"report {(b['report_s'] - a['report_s']) / k:.3f} s, peak memory {(b['peak_rss_mb'] - a['peak_rss_mb']) / k:.2f} MB"
        )
    print("goals at 52k rows: upload <= 10 s, page <= 300 ms, report <= 30 s, peak < 1500 MB")


if __name__ == "__main__":
    main()
