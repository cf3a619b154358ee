"""Pickup latency with a warm agent: submit -> the agent starts the job, p50 / p99.

Jobs are submitted one at a time, each after the previous one finished, so every pickup is
from an agent blocked in XREADGROUP (the warm case; a cold ScaledJob adds KEDA's polling
interval and a pod start). Beside it, the raw floor: XADD -> a consumer blocked in
XREADGROUP receives it.

Usage: python benchmarks/pickup_latency.py [--jobs 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_agents import BENCH_SETTINGS, bench, percentile, side_by_side, summary
from report import Row, emit

STREAM, GROUP = "bench:raw", "bench-raw"


def _raw_consumer(url: str, password: str, n: int, out) -> None:  # type: ignore[no-untyped-def]
    import redis

    r = redis.Redis.from_url(url, password=password, decode_responses=True)
    for _ in range(n):
        got = None
        while not got:
            got = r.xreadgroup(GROUP, "raw", {STREAM: ">"}, count=1, block=1000)
        eid, fields = got[0][1][0]
        out.put(time.time() - float(fields["t"]))
        r.xack(STREAM, GROUP, eid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args()

    from raibid_gitops import contract as c
    from raibid_gitops.queue import JobSpec, get_job, submit
    from raibid_gitops.settings import load_text

    with bench() as b:
        client = b.client()
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_raw_consumer, args=(b.server.url, b.server.password, args.jobs, q))
        p.start()
        time.sleep(1.0)
        raw: list[float] = []
        for _ in range(args.jobs):
            client.xadd(STREAM, {"t": f"{time.time():.6f}"})
            raw.append(q.get(timeout=30))
        p.join(10)

        settings = load_text(BENCH_SETTINGS)
        b.agent("warm")
        b.wait_agents(["warm"])
        spec = JobSpec("raibid/bench", "main", checkout=c.CHECKOUT_NONE)
        rb: list[float] = []
        for _ in range(args.jobs):
            job_id = submit(client, settings, spec).job_id
            while True:
                job = get_job(client, job_id)
                if job.final:
                    break
                time.sleep(0.002)
            rb.append(job.started_at - job.submitted_at)  # type: ignore[operator]

    side_by_side(f"Pickup latency, warm consumer, {args.jobs} sequential jobs", [
        ("raw XADD -> XREADGROUP", summary(raw)),
        ("raibid submit -> running", summary(rb)),
    ])
    emit([Row("pickup, warm agent: submit -> running (p50)", percentile(rb, 50) * 1000, percentile(raw, 50) * 1000,
              "ms", "raw XADD -> XREADGROUP"),
          Row("pickup, warm agent: submit -> running (p99)", percentile(rb, 99) * 1000, percentile(raw, 99) * 1000,
              "ms", "raw XADD -> XREADGROUP")], args.json)


if __name__ == "__main__":
    main()
