"""Sync latency on the real local stack: commit pushed -> applied, over several runs.

Three numbers per run, each for a fresh commit:

- **raibid sync**  — ``raibid_gitops.gitops.sync.sync`` (annotate, then *watch* until the
  Kustomization has applied this commit and is Ready), measured from the end of ``git push``.
- **floor**        — when the controllers' own status said so, two ways:
  *status ts*: the Kustomization's ``status.history`` entry for the commit records when
  kustomize-controller first applied it (``firstReconciled``; Kubernetes timestamps have 1 s
  resolution and are truncated, so this reads up to 1 s low);
  *watch*: an independent watch, opened before the push, notes the moment the status write
  with ``lastAppliedRevision`` = the commit and ``Ready=True`` reaches the API (ms resolution).
  Nothing that reads the API can report "applied" earlier than that.
- **annotate+poll** — what ``flux reconcile kustomization --with-source`` does: annotate the
  GitRepository, poll every 2 s (the flux CLI's default interval) until it has handled the
  request and is Ready, then the same for the Kustomization. Also recorded: whether the
  revision it ended at is the pushed commit — flux reconcile does not check (fluxcd/flux2#479).

Usage::

    python benchmarks/sync_latency.py [--runs 5]                 # starts its own stack
    python benchmarks/sync_latency.py --kubeconfig K --gitea-url U --gitea-user A --gitea-token T

The stack must be built (``raibid-devstack build``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from raibid_gitops.clients import kube as kube_mod
from raibid_gitops.clients.git import Auth, Repo
from raibid_gitops.clients.kube import Kube, ObjectRef
from raibid_gitops.errors import KubeError, RaibidError
from raibid_gitops.gitops import flux
from raibid_gitops.gitops.generate import init
from raibid_gitops.gitops.layout import SETTINGS_PATH
from raibid_gitops.gitops.reporting import Silent
from raibid_gitops.gitops.sync import SyncOptions, sync

#: The flux CLI's default --poll-interval for `flux reconcile`.
FLUX_POLL_INTERVAL = 2.0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class Bench:
    def __init__(self, kube: Kube, gitea_url: str, user: str, token: str, workdir: Path,
                 prepare_namespace: Any = None):
        self.kube, self.gitea_url, self.user, self.token = kube, gitea_url, user, token
        #: Called with the workload namespace before Flux applies it: KEDA needs Redis's Secret
        #: there (and the address mapped) to accept the ScaledJob, which sync waits for.
        self.prepare_namespace = prepare_namespace
        self.name = "bench" + uuid.uuid4().hex[:6]
        self.ns = f"{self.name}-flux"
        self.workdir = workdir
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        self.auth_args = ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
        self.counter = 0
        #: revision -> wall time the observer first saw it applied and Ready
        self.seen: dict[str, float] = {}

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = requests.request(method, f"{self.gitea_url}/api/v1{path}", json=body, timeout=30,
                                headers={"Authorization": f"token {self.token}"})
        resp.raise_for_status()
        return resp.json() if resp.content else None

    @property
    def ks_ref(self) -> ObjectRef:
        return ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, self.name, self.ns)

    @property
    def src_ref(self) -> ObjectRef:
        return ObjectRef(flux.SOURCE_API, flux.GIT_REPOSITORY, self.name, self.ns)

    def setup(self) -> None:
        repo = self.api("POST", "/user/repos", {"name": self.name, "private": True, "default_branch": "main"})
        url = repo["clone_url"]
        self.repo = self.workdir / self.name
        wl = f"{self.name}-ci"
        init(self.repo, remote=url, assignments=[
            f"cluster.namespace={wl}", f"queue.redisAddress=raibid-redis.{wl}.svc.cluster.local:6379",
            "flux.wait=false", "flux.interval=10m", f"gitea.url={self.gitea_url}", f"gitea.repo={self.name}",
        ])
        self.push()
        if self.prepare_namespace is not None:
            self.prepare_namespace(wl)
        k = self.kube
        k.request("POST", "/api/v1/namespaces", what="ns", body={"metadata": {"name": self.ns}})
        k.request("POST", f"/api/v1/namespaces/{self.ns}/secrets", what="secret",
                  body={"metadata": {"name": "auth"}, "stringData": {"username": self.user, "password": self.token}})
        for obj in (flux.git_repository(self.name, self.ns, url=url, interval="10m", secret="auth"),
                    flux.kustomization(self.name, self.ns, source=self.name, interval="10m")):
            res = k.resource(obj["apiVersion"], obj["kind"])
            k.request("POST", res.path(self.ns), what=obj["kind"], body=obj)
        kube_mod.wait_for(k, self.ks_ref, lambda o: flux.is_ready(o) and bool(flux.applied_revision(o)), timeout=120)
        threading.Thread(target=self._observe, daemon=True, name="observer").start()

    def _observe(self) -> None:
        # Ends when teardown deletes the Kustomization (KubeNotFound).
        with contextlib.suppress(RaibidError):
            self._observe_until_deleted()

    def _observe_until_deleted(self) -> None:
        for obj in self.kube.watch_object(self.ks_ref):
            if obj is not None and flux.is_ready(obj):
                rev = flux.applied_revision(obj)
                if rev and rev not in self.seen:
                    self.seen[rev] = time.time()

    def watch_floor(self, sha: str, pushed_at: float) -> float | None:
        # The observer may lag the CLI by a scheduling slice; give it a moment.
        deadline = time.monotonic() + 5
        while f"main@sha1:{sha}" not in self.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = self.seen.get(f"main@sha1:{sha}")
        return None if seen is None else seen - pushed_at

    def teardown(self) -> None:
        # Best effort: a stack started here is thrown away right after.
        for ref in (self.ks_ref, self.src_ref):
            with contextlib.suppress(KubeError):
                res = self.kube.resource(ref.api_version, ref.kind)
                self.kube.request("DELETE", res.path(ref.namespace, ref.name), what=str(ref))
        with contextlib.suppress(requests.RequestException):
            self.api("DELETE", f"/repos/{self.user}/{self.name}")

    def push(self) -> None:
        git(self.repo, *self.auth_args, "push", "-q", "origin", "HEAD:refs/heads/main")

    def commit_and_push(self) -> tuple[str, float]:
        self.counter += 1
        path = self.repo / SETTINGS_PATH
        text = path.read_text()
        # maxLen only reaches the ConfigMap: a real change Flux applies, with no marked fields.
        import re

        text = re.sub(r"maxLen: \d+", f"maxLen: {10000 + self.counter}", text, count=1)
        path.write_text(text)
        git(self.repo, "commit", "-qam", f"bench {self.counter}")
        sha = git(self.repo, "rev-parse", "HEAD")
        self.push()
        return sha, time.time()

    def floor(self, sha: str, pushed_at: float) -> float | None:
        ks = self.kube.get(self.ks_ref)
        for entry in (ks.get("status") or {}).get("history") or []:
            # Each bench commit changes the rendered objects, so its history entry (keyed by
            # the objects' digest) is new and firstReconciled is when this commit was applied.
            if (entry.get("metadata") or {}).get("revision") == f"main@sha1:{sha}" and entry.get("firstReconciled"):
                return max(0.0, parse_time(entry["firstReconciled"]) - pushed_at)
        return None

    def run_sync(self) -> tuple[float, float | None, float | None]:
        sha, pushed_at = self.commit_and_push()
        t = time.monotonic()
        repo = Repo(self.repo, auth=Auth(self.token, self.user))
        sync(self.repo, self.kube, SyncOptions(kustomization=self.name, namespace=self.ns, timeout=120),
             Silent(), repo=repo)
        return time.monotonic() - t, self.floor(sha, pushed_at), self.watch_floor(sha, pushed_at)

    def run_poll(self) -> tuple[float, bool, float | None, float | None]:
        """flux reconcile ks --with-source: annotate source, poll; annotate ks, poll."""
        sha, pushed_at = self.commit_and_push()
        t = time.monotonic()
        for ref in (self.src_ref, self.ks_ref):
            token = flux.request_token()
            self.kube.annotate(ref, {flux.REQUESTED_AT: token})
            deadline = time.monotonic() + 120
            while True:
                time.sleep(FLUX_POLL_INTERVAL)
                obj = self.kube.get(ref)
                if flux.last_handled(obj) == token and flux.is_ready(obj):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ref} not reconciled")
        elapsed = time.monotonic() - t
        applied = flux.applied_revision(self.kube.get(self.ks_ref))
        return elapsed, applied == f"main@sha1:{sha}", self.floor(sha, pushed_at), self.watch_floor(sha, pushed_at)


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:6.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kubeconfig")
    ap.add_argument("--gitea-url")
    ap.add_argument("--gitea-user")
    ap.add_argument("--gitea-token", default=os.environ.get("RAIBID_GITEA_TOKEN"))
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)

    stopper = None
    with tempfile.TemporaryDirectory(prefix="raibid-bench-") as tmp:
        workdir = Path(tmp)
        if args.kubeconfig and args.gitea_url and args.gitea_user and args.gitea_token:
            kubeconfig, url, user, token = args.kubeconfig, args.gitea_url, args.gitea_user, args.gitea_token
        else:
            from raibid_gitops.devstack import processes
            from raibid_gitops.devstack.keda import start_keda
            from raibid_gitops.devstack.redis_server import free_loopback_address, start_redis

            print("starting the local stack (kube-apiserver, Flux, KEDA, Redis, Gitea) ...", file=sys.stderr)
            kube_stack = processes.start_kube(workdir / "kube")
            started: list[Any] = [kube_stack]
            try:
                started.append(processes.start_flux(kube_stack, workdir / "flux"))
                keda = start_keda(kube_stack, workdir / "keda")
                started.append(keda)
                redis = start_redis(workdir / "redis", port=6379, host=free_loopback_address(6379))
                started.append(redis)
                gitea = processes.start_gitea(workdir / "gitea")
                started.append(gitea)
            except BaseException:
                for proc in reversed(started):
                    proc.stop()
                raise

            def stop() -> None:
                for proc in reversed(started):
                    proc.stop()

            def prepare(namespace: str) -> None:
                keda.hosts.add(f"raibid-redis.{namespace}.svc.cluster.local", redis.host)
                kube_stack.kubectl("create", "namespace", namespace)
                kube_stack.kubectl("-n", namespace, "create", "secret", "generic", "raibid-redis",
                                   f"--from-literal=password={redis.password}")

            stopper = stop
            kubeconfig, url, user, token = str(kube_stack.kubeconfig), gitea.url, gitea.admin_user, gitea.token
        bench = Bench(kube_mod.connect(kubeconfig), url, user, token, workdir,
                      prepare_namespace=prepare if stopper else None)
        try:
            bench.setup()
            rows: list[tuple[Any, ...]] = []
            for i in range(args.runs):
                s, s_ts, s_w = bench.run_sync()
                p, p_ok, p_ts, p_w = bench.run_poll()
                rows.append((s, s_ts, s_w, p, p_ts, p_w, p_ok))
                print(f"run {i + 1}: sync {s:.2f}s (floor ts {fmt(s_ts).strip()} watch {fmt(s_w).strip()}), "
                      f"annotate+poll {p:.2f}s (floor ts {fmt(p_ts).strip()} watch {fmt(p_w).strip()}, "
                      f"right commit: {p_ok})", file=sys.stderr)
        finally:
            bench.teardown()
            if stopper:
                stopper()

    print(f"sync latency, commit pushed -> applied and Ready ({args.runs} runs, seconds)")
    head = ("run", "raibid sync", "floor ts", "floor watch", "annotate+poll", "floor ts", "floor watch",
            "poll commit ok")
    print("  ".join(f"{h:>{max(len(h), 6)}}" for h in head))

    def line(label: str, vals: tuple[Any, ...]) -> str:
        cells = [label] + [fmt(v) if not isinstance(v, bool) else str(v) for v in vals]
        return "  ".join(f"{c:>{max(len(h), 6)}}" for c, h in zip(cells, head, strict=True))

    for i, r in enumerate(rows, 1):
        print(line(str(i), r))

    def med(col: int) -> float | None:
        vals = [float(v) for r in rows if (v := r[col]) is not None]
        return statistics.median(vals) if vals else None

    print(line("median", (med(0), med(1), med(2), med(3), med(4), med(5), all(r[6] for r in rows))))
    print("floor ts: kustomize-controller's status.history firstReconciled minus the end of the push "
          "(1 s resolution, truncated: may read up to 1 s low)")
    print("floor watch: first watch event with lastAppliedRevision = the commit and Ready=True, minus the end of "
          "the push")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import Row, emit

    emit([Row("sync: push -> applied and Ready", med(0), med(2), "s", "watch of the controller's status write"),
          Row("flux reconcile (annotate + poll 2 s)", med(3), med(5), "s", "watch of the controller's status write",
              note="(flux reconcile does not check the commit)")], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
