"""Push to applied on the real local stack: a plain `git push` with Gitea's webhook calling Flux's
Receiver, next to the same push picked up by the GitRepository's interval polling.

The stack is bootstrapped with `raibid bootstrap` (Receiver, webhook, Secrets). Each run commits a
ConfigMap-only settings change and pushes it with plain git; the time is from the end of the
push until the Kustomization raibid-config reports that commit applied (the API server's view,
polled every 50 ms). Then the webhook is removed and the same is measured with polling only, at
``--interval`` (the default flux.interval is 1m; a shorter one keeps the baseline quick; expect a
mean of about half of it).

Usage::

    python benchmarks/push_to_apply.py [--runs 5] [--interval 20s] [--json FILE]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pool_stack import pool_stack
from report import Row, emit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", default="20s", help="flux.interval for the polling baseline")
    ap.add_argument("--json", help="also write the rows to this file (for python -m benchmarks)")
    args = ap.parse_args(argv)

    from raibid_gitops.cli.gitops_sync import duration

    results: dict[str, list[float]] = {"webhook": [], "polling": []}
    phases: dict[str, list[float]] = {"hook": [], "artifact": []}
    with tempfile.TemporaryDirectory(prefix="raibid-bench-push-") as tmp:
        work = Path(tmp)
        with pool_stack(work) as st:
            kube, flux, gitea = st.kube, st.flux, st.gitea
            env = {**os.environ, "RAIBID_GITEA_TOKEN": gitea.token, "RAIBID_GITEA_USER": gitea.admin_user,
                   "KUBECONFIG": str(kube.kubeconfig), "GIT_TERMINAL_PROMPT": "0"}
            repo = work / "config"

            def run(*cmd: str, cwd: Path = work) -> str:
                p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
                if p.returncode:
                    raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{p.stdout}{p.stderr}")
                return p.stdout

            run(sys.executable, "-m", "raibid_gitops.cli", "bootstrap", "--gitea-url", gitea.url, "--dir", str(repo),
                "--receiver-url", flux.receiver_url, "--set", f"flux.interval={args.interval}")

            def state() -> tuple[str | None, str | None, str | None]:
                """(the GitRepository's requestedAt annotation, its artifact's revision, the
                Kustomization's lastAppliedRevision), in one API call."""
                items = json.loads(kube.kubectl("get", "gitrepository,kustomization", "raibid-config",
                                                "-n", "flux-system", "-o", "json"))["items"]
                by_kind = {o["kind"]: o for o in items}
                gr, ks = by_kind.get("GitRepository", {}), by_kind.get("Kustomization", {})
                requested = ((gr.get("metadata") or {}).get("annotations") or {}).get("reconcile.fluxcd.io/requestedAt")
                artifact = ((gr.get("status") or {}).get("artifact") or {}).get("revision")
                return requested, artifact, (ks.get("status") or {}).get("lastAppliedRevision")

            def one(label: str, n: int) -> None:
                settings = repo / "overlays" / "dgx-spark" / "settings.yaml"
                text = settings.read_text()
                current = next(line for line in text.splitlines() if "logMaxLen:" in line)
                settings.write_text(text.replace(current, f"  logMaxLen: {10000 + n + 1}"))
                run("git", "-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qam", f"bench {n}",
                    cwd=repo)
                sha = run("git", "rev-parse", "HEAD", cwd=repo).strip()
                requested_before = state()[0]
                run("git", "push", "-q", cwd=repo)
                t0 = time.monotonic()
                # Where the time goes: Gitea delivering the webhook (the Receiver then sets the
                # GitRepository's requestedAt), source-controller fetching, kustomize-controller applying.
                marks: dict[str, float] = {}
                want = f"main@sha1:{sha}"
                # Polling applies within one interval; both paths within a minute more, or never.
                deadline = 3 * duration(args.interval) + 60
                while "applied" not in marks:
                    if time.monotonic() - t0 > deadline:
                        raise SystemExit(f"{label} run: {sha[:12]} not applied {deadline:.0f} s after the push "
                                         f"(seen: {marks or 'nothing'})")
                    requested, artifact, applied = state()
                    now = time.monotonic() - t0
                    if requested != requested_before:
                        marks.setdefault("hook", now)
                    if artifact == want:
                        marks.setdefault("artifact", now)
                    if applied == want:
                        marks.setdefault("applied", now)
                    time.sleep(0.05)
                results[label].append(marks["applied"])
                if label == "webhook":
                    for phase in ("hook", "artifact"):
                        phases[phase].append(marks.get(phase, float("nan")))
                seen = ", ".join(f"{name} {marks[key]:.2f}s" for key, name in
                                 (("hook", "Receiver called"), ("artifact", "artifact"), ("applied", "applied"))
                                 if key in marks)
                print(f"{label} run {len(results[label])}: {seen} after the push", file=sys.stderr)

            for i in range(args.runs):
                one("webhook", i)
            for hook in gitea.api("GET", "/repos/raibid/raibid-config/hooks"):  # type: ignore[union-attr]
                gitea.api("DELETE", f"/repos/raibid/raibid-config/hooks/{hook['id']}")
            for i in range(args.runs):
                one("polling", args.runs + i)

    print(f"push -> applied ({args.runs} runs each, seconds; polling at flux.interval={args.interval})")
    print(f"{'':>22}  {'median':>7}  {'max':>7}")
    for label, vals in (("webhook (Receiver)", results["webhook"]), ("interval polling", results["polling"])):
        print(f"{label:>22}  {statistics.median(vals):7.2f}  {max(vals):7.2f}")
    print(f"{'webhook: Receiver called':>22}  {statistics.median(phases['hook']):7.2f}  {max(phases['hook']):7.2f}"
          "   (Gitea's delivery of the push event)")
    print(f"{'webhook: artifact':>22}  {statistics.median(phases['artifact']):7.2f}  {max(phases['artifact']):7.2f}"
          "   (source-controller fetched the commit)")
    w, p = statistics.median(results["webhook"]), statistics.median(results["polling"])
    print(f"webhook is {p / w:.0f}x faster (median)")
    emit([Row("plain git push -> applied (webhook to Flux's Receiver)", w, p, "s",
              f"interval polling at flux.interval={args.interval}")], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
