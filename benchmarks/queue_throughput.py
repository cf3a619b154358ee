"""Queue throughput, each figure next to its floor on the same throw-away Redis:

- **submit**: ``raibid_gitops.queue.submit`` (the entry, the status record and the index in one
  script) against a raw redis-py ``XADD`` loop of the same entry; both one round trip per job,
  no consumers running, blocks of each interleaved (target: >= 80 % of the raw rate); and again
  with 50,000 entries queued and none delivered (agents away), far past ``queue.maxLen``;
- **end to end, no-op jobs**: submit -> ack with warm raibid agents running the pipeline
  ``true`` (status transitions, logs, a process per step, result and ack in one script),
  against a raw XADD / XREADGROUP COUNT 1 / XACK loop with as many consumers;
- **scaling**: jobs that sleep 50 ms run by 1, 2 and 4 agents; the baseline of N agents is N
  times what 1 agent did in the same run (linear), and the ideal is N x 20 jobs/s.

Usage: python benchmarks/queue_throughput.py [--jobs 2000] [--rounds 7] [--consumers 4]
       [--sleep-jobs 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_agents import BENCH_SETTINGS, bench
from report import Row, emit, median

STREAM, GROUP = "bench:raw", "bench-raw"
SLEEP_MS = 50
#: Entries queued while no agent runs, for the submit-with-a-backlog figure, five times the
#: queue.maxLen it runs with (the default).
BACKLOG, BACKLOG_MAX_LEN = 50_000, 10_000


def _raw_consumer(url: str, password: str, name: str, n_total: int) -> None:
    import redis

    r = redis.Redis.from_url(url, password=password, decode_responses=True)
    while True:
        got = r.xreadgroup(GROUP, name, {STREAM: ">"}, count=1, block=500)
        if not got:
            info = next(g for g in r.xinfo_groups(STREAM) if g["name"] == GROUP)
            if int(info["entries-read"] or 0) >= n_total:
                return
            continue
        for _s, entries in got:
            for eid, _f in entries:
                r.xack(STREAM, GROUP, eid)


def _wait_done(client, stream: str, group: str, n: int, timeout: float = 600) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        info = next(g for g in client.xinfo_groups(stream) if g["name"] == group)
        if int(info["entries-read"] or 0) >= n and int(info["pending"]) == 0:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise SystemExit(f"{stream}: not done within {timeout:.0f}s ({info})")
        time.sleep(0.005)


def _settings_text(run: str) -> str:
    return BENCH_SETTINGS.replace('run: "true"', f'run: "{run}"')


def measure(jobs: int, rounds: int, consumers: int, sleep_jobs: int) -> list[Row]:
    from raibid_agent.volume_writer import kubelet_write
    from raibid_gitops import contract as c
    from raibid_gitops.queue import JobSpec, submit
    from raibid_gitops.settings import apply_assignments, load_text

    rows: list[Row] = []
    settings = load_text(BENCH_SETTINGS)
    spec = JobSpec("raibid/bench", "main", checkout=c.CHECKOUT_NONE)
    q = settings.queue
    with bench() as b:
        client = b.client()

        # -- submit: interleaved blocks, no consumers, a fresh stream per block (same length)
        per_block = max(50, jobs // rounds)
        raw_rates, rb_rates = [], []
        for r in range(rounds):
            stream = f"bench:submit:{r}"
            t0 = time.perf_counter()
            for i in range(per_block):
                client.xadd(stream, {"job_id": f"raw-{r}-{i}", "repo": spec.repo, "ref": spec.ref,
                                     "commit": spec.commit, "checkout": spec.checkout,
                                     "submitted_at": f"{time.time():.6f}"})
            raw_rates.append(per_block / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(per_block):
                submit(client, settings, spec)
            rb_rates.append(per_block / (time.perf_counter() - t0))
            client.delete(stream)
        rows.append(Row("queue submit rate (one round trip per job)", median(rb_rates), median(raw_rates), "jobs/s",
                        "raw XADD loop", better="higher", target="<= 1.25x (>= 80 % of raw)"))

        # -- submit while no agent runs and the backlog is far past queue.maxLen: the trim must
        # not read the backlog (each submit blocks Redis while its script runs).
        capped = apply_assignments(settings, {"queue.maxLen": BACKLOG_MAX_LEN})
        client.delete(q.stream)
        client.xgroup_create(q.stream, q.consumer_group, id="0", mkstream=True)
        for start in range(0, BACKLOG, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(BACKLOG, start + 1000)):
                pipe.xadd(q.stream, {"job_id": f"backlog-{i}"})
            pipe.execute()
        t0 = time.perf_counter()
        for _ in range(per_block):
            submit(client, capped, spec)
        backlog_rate = per_block / (time.perf_counter() - t0)
        rows.append(Row(f"queue submit rate, {BACKLOG:,} queued (maxLen {BACKLOG_MAX_LEN:,}), no agent running",
                        backlog_rate, median(raw_rates), "jobs/s", "raw XADD loop (above)", better="higher"))
        # Start the end-to-end runs from an empty queue.
        client.delete(q.stream, c.JOBS_INDEX, c.FINISHED_INDEX)
        for key in client.scan_iter(c.job_key("*")):
            client.delete(key)

        # -- end to end, no-op jobs: the raw loop first, then the agents
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_raw_consumer, args=(b.server.url, b.server.password, f"raw-{i}", jobs))
                 for i in range(consumers)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # consumers warm and blocked in XREADGROUP
        t0 = time.perf_counter()
        for i in range(jobs):
            client.xadd(STREAM, {"job_id": str(i)})
        raw_total = _wait_done(client, STREAM, GROUP, jobs) - t0
        for p in procs:
            p.join(30)

        ids = [f"noop-{i}" for i in range(consumers)]
        for a in ids:
            b.agent(a)
        b.wait_agents(ids)
        t0 = time.perf_counter()
        for _ in range(jobs):
            submit(client, settings, spec)
        rb_total = _wait_done(client, q.stream, q.consumer_group, jobs) - t0
        b.stop()
        rows.append(Row(f"queue end to end, no-op jobs, {consumers} agents", jobs / rb_total, jobs / raw_total,
                        "jobs/s", f"raw XADD/XREADGROUP/XACK loop, {consumers} consumers", better="higher"))

        # -- scaling: jobs that sleep 50 ms, 1 / 2 / 4 agents
        kubelet_write(b.settings_dir, {c.SETTINGS_KEY: _settings_text(f"sleep {SLEEP_MS / 1000}")})
        rates: dict[int, float] = {}
        done = jobs
        for n in (1, 2, 4):
            ids = [f"sleep{n}-{i}" for i in range(n)]
            for a in ids:
                b.agent(a)
            b.wait_agents(ids)
            m = sleep_jobs * n
            t0 = time.perf_counter()
            for _ in range(m):
                submit(client, settings, spec)
            done += m
            rates[n] = m / (_wait_done(client, q.stream, q.consumer_group, done) - t0)
            b.stop()
        ideal = 1000 / SLEEP_MS
        rows.append(Row(f"{SLEEP_MS} ms jobs, 1 agent", rates[1], ideal, "jobs/s", f"ideal {ideal:.0f} jobs/s",
                        better="higher"))
        for n in (2, 4):
            rows.append(Row(f"{SLEEP_MS} ms jobs, {n} agents", rates[n], n * rates[1], "jobs/s",
                            f"linear: {n} x 1 agent (ideal {n * ideal:.0f})", better="higher",
                            note=f"({rates[n] / (n * rates[1]) * 100:.0f} % of linear)"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--sleep-jobs", type=int, default=40, help="50 ms jobs per agent in the scaling runs")
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)
    emit(measure(args.jobs, args.rounds, args.consumers, args.sleep_jobs), args.json,
         f"Queue: {args.jobs} jobs, {args.consumers} consumers; submit in {args.rounds} interleaved blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
