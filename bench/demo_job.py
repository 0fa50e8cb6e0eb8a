"""The default demo job, timed the way a new user runs it: `studio up` on a fresh data
dir, the demo dataset uploaded, a job on the `demo` base with no settings changed.

Prints the wall time from launch to `succeeded` (goal: within 3 minutes on 2 CPU cores),
the time to the first step, and held-out loss and exact match at every eval (goal: exact
match visibly rises).

    python bench/demo_job.py [--rows 3200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="demo rows (default: the demo dataset's size)")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    from studio.core.demo import DEMO_ROWS, demo_dataset

    data_dir = Path(tempfile.mkdtemp(prefix="demo-job-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k != "REDIS_URL"}
    up = subprocess.Popen(
        [sys.executable, "-m", "studio", "up", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(data_dir / "up.log", "wb"),
        start_new_session=True,
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_for(lambda: client.get("/api/health").status_code == 200, 120, "studio up")
        rows = demo_dataset(args.rows or DEMO_ROWS)
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        dataset = client.post("/api/datasets", files={"file": ("demo.jsonl", body)}).json()
        request = {"dataset_id": dataset["id"], "base_model": "demo"}
        estimate = client.post("/api/jobs/plan", json=request).json().get("estimate_seconds")
        started = time.monotonic()
        job = client.post("/api/jobs", json=request).json()
        first_step = wait_for(
            lambda: client.get(f"/api/jobs/{job['id']}").json()["step"] > 0 and time.monotonic(), 300, "first step"
        )
        final = wait_for(
            lambda: (j := client.get(f"/api/jobs/{job['id']}").json())["status"] in ("succeeded", "failed", "cancelled")
            and j,
            args.timeout,
            "job end",
        )
        wall = time.monotonic() - started
        points = client.get(f"/api/jobs/{job['id']}/metrics").json()
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(30)

    evals = [p for p in points if p["split"] == "eval"]
    train = [p for p in points if p["split"] == "train"]
    print(f"demo job: {len(rows)} rows, status {final['status']}, {final['step']} steps")
    if final["status"] != "succeeded":
        print(f"error: {final['error']}")
        return 1
    print(f"launch -> first step      {first_step - started:6.1f} s")
    print(f"launch -> succeeded       {wall:6.1f} s   (goal <= 180 s on 2 CPU cores)")
    if estimate:
        held = estimate["low"] <= wall <= estimate["high"]
        print(f"estimate before launch    {estimate['low']:.0f}-{estimate['high']:.0f} s ({estimate['basis']}): "
              + ("held" if held else "MISSED"))
    else:
        print("estimate before launch    none")
    print(f"train loss first/last     {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}")
    print("step   eval loss   exact match")
    for p in evals:
        print(f"{p['step']:5d}   {p['loss']:9.3f}   {p['exact_match']:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
