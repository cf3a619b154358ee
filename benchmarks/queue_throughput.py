"""Queue throughput: no-op jobs, submit -> ack, raibid agents vs a raw redis-py loop.

Both on the same throw-away Redis with the same number of consumer processes:

- raw: XADD N entries; each consumer loops XREADGROUP COUNT 1 / XACK (the floor: what Redis
  and redis-py can do with no job semantics at all);
- raibid: `submit` N no-checkout jobs (entry + status record, one script) to warm agents
  running the no-op pipeline `true` (status transitions, logs, a process per step, result
  and ack in one script).

Usage: python benchmarks/queue_throughput.py [--jobs 2000] [--consumers 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_agents import bench, side_by_side  # noqa: E402

STREAM, GROUP = "bench:raw", "bench-raw"


def _raw_consumer(url: str, password: str, name: str, n_total: int) -> None:
    import redis

    r = redis.Redis.from_url(url, password=password, decode_responses=True)
    while True:
        got = r.xreadgroup(GROUP, name, {STREAM: ">"}, count=1, block=500)
        if not got:
            info = r.xinfo_groups(STREAM)[0]
            if int(info["entries-read"] or 0) >= n_total:
                return
            continue
        for _s, entries in got:
            for eid, _f in entries:
                r.xack(STREAM, GROUP, eid)


def _wait_done(client, stream: str, group: str, n: int) -> float:  # type: ignore[no-untyped-def]
    while True:
        info = next(g for g in client.xinfo_groups(stream) if g["name"] == group)
        if int(info["entries-read"] or 0) >= n and int(info["pending"]) == 0:
            return time.perf_counter()
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--consumers", type=int, default=4)
    args = ap.parse_args()

    from raibid_gitops import contract as c
    from raibid_gitops.queue import JobSpec, submit
    from raibid_gitops.settings import load_text

    from local_agents import BENCH_SETTINGS

    with bench() as b:
        client = b.client()
        # -- raw loop
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_raw_consumer, args=(b.server.url, b.server.password, f"raw-{i}", args.jobs))
                 for i in range(args.consumers)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # consumers warm and blocked in XREADGROUP
        t0 = time.perf_counter()
        for i in range(args.jobs):
            client.xadd(STREAM, {"job_id": str(i)})
        raw_submit = time.perf_counter() - t0
        raw_total = _wait_done(client, STREAM, GROUP, args.jobs) - t0
        for p in procs:
            p.join(30)

        # -- raibid agents
        settings = load_text(BENCH_SETTINGS)
        ids = [f"bench-{i}" for i in range(args.consumers)]
        for a in ids:
            b.agent(a)
        b.wait_agents(ids)
        spec = JobSpec("raibid/bench", "main", checkout=c.CHECKOUT_NONE)
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            submit(client, settings, spec)
        rb_submit = time.perf_counter() - t0
        rb_total = _wait_done(client, settings.queue.stream, settings.queue.consumer_group, args.jobs) - t0
        states = {}
        for jid in client.zrange(c.JOBS_INDEX, 0, -1):
            s = client.hget(c.job_key(jid), c.REC_STATE)
            states[s] = states.get(s, 0) + 1

    n = args.jobs
    side_by_side(f"Queue throughput: {n} no-op jobs, {args.consumers} consumers, submit -> ack", [
        ("", f"{'raw redis-py loop':>22}   {'raibid agents':>16}"),
        ("submit rate (jobs/s)", f"{n / raw_submit:22.0f}   {n / rb_submit:16.0f}"),
        ("end to end (jobs/s)", f"{n / raw_total:22.0f}   {n / rb_total:16.0f}"),
        ("wall time (s)", f"{raw_total:22.2f}   {rb_total:16.2f}"),
        ("raibid final states", str(states)),
    ])


if __name__ == "__main__":
    main()
