"""The whole loop on the local stack: a number committed in git governs how many agent Jobs
KEDA runs.

Real components only: Gitea holds the config repository; Flux (source-, kustomize-controller)
applies it with ``wait: true``; kube-controller-manager, kube-scheduler and a KWOK node make
Redis's StatefulSet Available and give KEDA's Jobs Pods; the KEDA operator (v2.21.0) reads the
job stream's lag from a real redis-server and creates the Jobs; the real ``raibid-agent``
takes a job as the agent in a Pod would.

KWOK runs no containers: an agent Pod is Running but nothing in it consumes the stream, so the
lag KEDA sees stays as submitted, which is what lets these tests count Jobs against
``maxReplicas``. Where a test needs the job consumed, it starts the agent itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_pool import POLL, Pool, start_agent

pytestmark = pytest.mark.stack


class TestDefaultRepositoryIsReady:
    """`flux.wait: true` (the default users get) reaches Ready at the pushed commit."""

    def test_ready_with_redis_available(self, pool: Pool) -> None:
        ks = pool.get("kustomization", "raibid-config", "-n", "flux-system")
        head = pool.git("rev-parse", "HEAD")
        assert ks["spec"]["wait"] is True
        assert ks["status"]["lastAppliedRevision"] == f"main@sha1:{head}"
        sts = pool.get("statefulset", "raibid-redis", "-n", pool.namespace)
        assert sts["status"].get("readyReplicas") == 1 == sts["status"].get("availableReplicas")
        redis_pod = pool.get("pod", "raibid-redis-0", "-n", pool.namespace)
        assert redis_pod["spec"]["nodeName"] == "dgx-spark-1"  # placed by kube-scheduler
        pvc = pool.get("pvc", "data-raibid-redis-0", "-n", pool.namespace)
        assert pvc["status"]["phase"] == "Bound"
        sj = pool.scaled_job()
        ready = {c["type"]: c for c in sj["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True", ready
        assert pool.jobs() == []  # scale from zero: nothing queued, no agent


class TestScaling:
    """KEDA creates the agent Jobs the committed settings call for."""

    def test_one_job_wakes_exactly_one_agent(self, pool: Pool, tmp_path: Path) -> None:
        assert pool.job_count_over(2 * POLL) == {0}
        job_id = pool.submit(1)[0]
        pool.wait("KEDA's first agent Job", lambda: len(pool.jobs()) >= 1, timeout=60)
        # While its agent starts (the Pod Running, not yet Ready) the job is still lag; KEDA
        # counts that Job as pending (pendingPodConditions: [Ready]) and adds no second one.
        assert pool.job_count_over(3 * POLL) == {1}, pool.diagnostics()
        # The agent in that Pod takes the job (KWOK runs no container: we run it, and answer
        # its readinessProbe as the kubelet would).
        agent = start_agent(pool, tmp_path / "agent.log")
        try:
            assert agent.wait(120) == 0, (tmp_path / "agent.log").read_text()
        finally:
            if agent.poll() is None:
                agent.kill()
        status = json.loads(pool.raibid("queue", "status", job_id, "-o", "json").stdout)
        assert status["state"] == "succeeded", status
        [pod] = pool.pods()
        assert status["agent"] == pod["metadata"]["name"], status
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
        assert ready == "True", (tmp_path / "agent.log").read_text()
        # Several KEDA polls later there is still exactly the one Job (activationLagCount "0":
        # one queued job woke the pool; lag 0 since the agent took it).
        assert pool.job_count_over(3 * POLL) == {1}, pool.diagnostics()

    def test_committed_threshold_governs_the_pool(self, pool: Pool) -> None:
        # A reviewed change: pull request, merge, sync.
        out = pool.raibid("gitops", "set", "agents.maxReplicas=3", "scaling.lagCount=2", "--pr").stdout
        number = _pr_number(pool)
        pool.raibid("gitops", "pr", "merge", str(number))
        pool.git("pull", "-q", "--ff-only", "origin", "main")
        pool.sync()
        sj = pool.scaled_job()
        assert sj["spec"]["maxReplicaCount"] == 3 and sj["spec"]["triggers"][0]["metadata"]["lagCount"] == "2", out

        pool.submit(10)
        pool.wait("3 agent Jobs", lambda: len(pool.jobs()) >= 3, timeout=60)
        assert pool.job_count_over(4 * POLL) == {3}, pool.diagnostics()

        # A direct commit raises the cap: exactly 5, never more.
        pool.raibid("gitops", "set", "agents.maxReplicas=5")
        pool.sync()
        pool.wait("5 agent Jobs", lambda: len(pool.jobs()) >= 5, timeout=60)
        assert pool.job_count_over(4 * POLL) == {5}, pool.diagnostics()

        # What `status` shows: the pool as it is beside the pool as committed.
        data = json.loads(pool.raibid("gitops", "status", "-o", "json").stdout)
        [p] = [x for x in data["pools"] if x["namespace"] == pool.namespace]
        assert p["maxReplicas"] == 5 and p["jobs"]["active"] == 5 and p["keda"] == "accepted"

    def test_pods_carry_what_the_scaledjob_renders(self, pool: Pool) -> None:
        settings = json.loads(pool.raibid("gitops", "get", "-o", "json").stdout)
        pool.submit(1)
        pod = pool.wait("an agent Pod on the node",
                        lambda: next((p for p in pool.pods() if p["spec"].get("nodeName")), None), timeout=60)
        spec = pod["spec"]
        [c] = spec["containers"]
        assert c["image"] == settings["agents"]["image"]
        assert c["args"] == ["--once", "--settings-dir", "/etc/raibid/settings"]
        for kind in ("requests", "limits"):
            assert c["resources"][kind]["cpu"] == settings["agents"]["cpu"]
            assert c["resources"][kind]["memory"] == settings["agents"]["memory"]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["settings"]["mountPath"] == "/etc/raibid/settings" and "subPath" not in mounts["settings"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["settings"]["configMap"]["name"] == "raibid-settings"
        assert spec["nodeName"] == "dgx-spark-1" and spec["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
        assert spec["serviceAccountName"] == "raibid-agent"
        job = pool.jobs()[0]
        assert job["spec"]["activeDeadlineSeconds"] == settings["agents"]["jobTimeoutSeconds"]
        assert pod["status"]["phase"] == "Running"


class TestKedaVerdict:
    """`sync` succeeds only when KEDA accepts the ScaledJob, and says why when it does not."""

    def test_unreachable_redis_fails_sync_with_kedas_message(self, pool: Pool) -> None:
        # A hand edit that verifies (the name is in the namespace) but names a Service that
        # does not exist: KEDA cannot reach Redis, so the pool could never scale.
        bad = f"raibid-redis-typo.{pool.namespace}.svc.cluster.local:6379"
        pool.raibid("gitops", "set", f"queue.redisAddress={bad}")
        proc = pool.sync("--timeout", "90s", check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"ScaledJob {pool.namespace}/raibid-agent" in proc.stderr
        assert "ScaledJobCheckFailed" in proc.stderr  # KEDA's reason, from its Ready condition
        # Fixed by the next commit: sync is green again, and KEDA accepts the ScaledJob.
        pool.raibid("gitops", "set", f"queue.redisAddress=raibid-redis.{pool.namespace}.svc.cluster.local:6379")
        pool.sync()
        ready = {c["type"]: c for c in pool.scaled_job()["status"]["conditions"]}["Ready"]
        assert ready["status"] == "True", ready


def _pr_number(p: Pool) -> int:
    pulls = p.gitea.api("GET", f"/repos/{p.owner}/{p.name}/pulls?state=open")
    assert isinstance(pulls, list) and len(pulls) == 1, pulls
    return int(pulls[0]["number"])
