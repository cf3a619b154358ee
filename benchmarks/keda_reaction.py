"""KEDA's reaction on the real local stack: a job submitted -> the first agent Job, next to the
configured ``scaling.pollingInterval``.

For each polling interval: ``raibid gitops set scaling.pollingInterval=P`` and ``sync`` (which
returns once Flux applied it and KEDA accepted the ScaledJob), then ``--runs`` times: submit one
job, time until KEDA's Job exists (the API server's view, polled every 20 ms), take the job off
the stream as an agent would (XREADGROUP + XACK) and delete the Job. KEDA looks at the stream
once per interval, so the expected reaction is uniform in [0, P]: mean P/2, worst P. The
baseline column is that expectation.

Usage::

    python benchmarks/keda_reaction.py [--runs 5] [--intervals 2,5] [--json FILE]

Starts its own stack (needs ``raibid-devstack build``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pool_stack import pool_stack
from report import Row, emit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--intervals", default="2,5", help="pollingInterval values to measure, comma-separated")
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)
    intervals = [int(x) for x in args.intervals.split(",") if x.strip()]

    from raibid_gitops.clients.redis import connect

    results: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="raibid-bench-keda-") as tmp:
        work = Path(tmp)
        with pool_stack(work) as st:
            kube, gitea, redis, ns = st.kube, st.gitea, st.redis, st.namespace
            kube.kubectl("-n", "flux-system", "create", "secret", "generic", "raibid-config-auth",
                         f"--from-literal=username={gitea.admin_user}", f"--from-literal=password={gitea.token}")
            name = "bench-" + uuid.uuid4().hex[:6]
            clone = gitea.api("POST", f"/orgs/{gitea.org}/repos", {"name": name, "private": True})["clone_url"]  # type: ignore[index]
            env = {**os.environ, "RAIBID_GITEA_TOKEN": gitea.token, "RAIBID_GITEA_USER": gitea.admin_user,
                   "KUBECONFIG": str(kube.kubeconfig), "RAIBID_REDIS_URL": redis.url,
                   "RAIBID_REDIS_PASSWORD": redis.password}
            repo = work / "config"

            def raibid(*a: str) -> str:
                p = subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *a], cwd=repo if repo.exists() else work,
                                   env=env, capture_output=True, text=True)
                if p.returncode:
                    raise SystemExit(f"raibid {' '.join(a)} failed:\n{p.stdout}{p.stderr}")
                return p.stdout

            raibid("gitops", "init", str(repo), "--remote", clone, "--set", f"gitea.url={gitea.url}",
                   "--set", f"gitea.owner={gitea.org}", "--set", f"gitea.repo={name}")
            subprocess.run(["git", "push", "-q", "origin", "main"], cwd=repo, env=gitea.git_env(env), check=True)
            kube.kubectl("apply", "-k", str(repo / "clusters" / "dgx-spark"))
            raibid("gitops", "sync", "-q")
            client = connect(redis.url, password=redis.password)

            def jobs() -> int:
                return len(json.loads(kube.kubectl("get", "jobs", "-n", ns, "-o", "json"))["items"])

            for p in intervals:
                raibid("gitops", "set", f"scaling.pollingInterval={p}")
                raibid("gitops", "sync", "-q")
                results[p] = []
                for i in range(args.runs):
                    raibid("queue", "submit", "--repo", "raibid/app", "--ref", "main", "--no-checkout")
                    t0 = time.monotonic()
                    while jobs() == 0:
                        time.sleep(0.02)
                    dt = time.monotonic() - t0
                    results[p].append(dt)
                    print(f"pollingInterval {p}s run {i + 1}: first Job after {dt:.2f}s", file=sys.stderr)
                    # An agent takes the job: lag back to 0. Then remove the Job.
                    taken = client.xreadgroup("raibid-agents", "bench", {"raibid:jobs": ">"}, count=10)
                    for _stream, entries in taken or []:
                        for entry_id, _fields in entries:
                            client.xack("raibid:jobs", "raibid-agents", entry_id)
                    kube.kubectl("delete", "jobs", "-n", ns, "--all", "--wait=true", "--timeout=60s")
                    # Land the next submit at a random point of KEDA's polling cycle.
                    time.sleep(p * ((i * 0.37) % 1))

    print(f"KEDA reaction: job submitted -> first agent Job ({args.runs} runs per interval, seconds)")
    print(f"{'pollingInterval':>16}  {'median':>7}  {'max':>7}  {'baseline mean P/2':>18}  {'baseline max P':>15}")
    for p, vals in results.items():
        print(f"{p:>16}  {statistics.median(vals):7.2f}  {max(vals):7.2f}  {p / 2:18.2f}  {p:15.2f}")
    emit([Row(f"KEDA reaction: submit -> first agent Job (pollingInterval {p} s)", statistics.median(vals), p / 2,
              "s", "expected P/2 (KEDA polls every P)") for p, vals in results.items()], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
