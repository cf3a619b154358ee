"""KEDA semantics as data (raibid_gitops/gitops/keda.py): pure functions, no cluster.

The behaviour against a real KEDA operator is in test_pool_stack.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from raibid_gitops.errors import SyncFailed
from raibid_gitops.gitops import keda


def _sj(*conditions: dict[str, str], generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "raibid-agent", "namespace": "raibid-ci", "generation": generation},
            "spec": {"maxReplicaCount": 8, "minReplicaCount": 0},
            "status": {"conditions": list(conditions)}}


class TestVerdict:
    def test_ready_true_is_accepted(self) -> None:
        v = keda.verdict(_sj({"type": "Ready", "status": "True", "reason": "ScaledJobReady"}))
        assert v.accepted and not v.rejected and v.reason == "ScaledJobReady"

    def test_ready_false_is_rejected_with_kedas_words(self) -> None:
        v = keda.verdict(_sj({"type": "Ready", "status": "False", "reason": "ScaledJobCheckFailed",
                              "message": "Failed to ensure ScaledJob is correctly created"}))
        assert v.rejected and v.message.startswith("Failed to ensure")

    @pytest.mark.parametrize("conds", [(), ({"type": "Ready", "status": "Unknown"},),
                                       ({"type": "Active", "status": "True"},)])
    def test_no_verdict_yet_is_pending(self, conds: tuple[dict[str, str], ...]) -> None:
        assert keda.verdict(_sj(*conds)).state == "pending"

    def test_no_status_at_all_is_pending(self) -> None:
        assert keda.verdict({"metadata": {"name": "x"}}).state == "pending"


class TestInventory:
    def test_scaled_jobs_are_read_from_the_inventory(self) -> None:
        ks = {"status": {"inventory": {"entries": [
            {"id": "raibid-ci_raibid-agent_keda.sh_ScaledJob", "v": "v1alpha1"},
            {"id": "raibid-ci_raibid-settings__ConfigMap", "v": "v1"},
            {"id": "_raibid-ci__Namespace", "v": "v1"},
            {"id": "raibid-ci_raibid-redis_keda.sh_TriggerAuthentication", "v": "v1alpha1"},
            {"id": "garbage", "v": "v1"},
        ]}}}
        assert keda.scaled_jobs_in(ks) == [("raibid-ci", "raibid-agent")]

    def test_no_inventory(self) -> None:
        assert keda.scaled_jobs_in({}) == [] == keda.scaled_jobs_in({"status": {"inventory": None}})


class TestUpgradeHint:
    @pytest.mark.parametrize("version", ["2.16.0", "2.16.1", "v2.16.1", "ghcr.io/kedacore/keda:2.16.1"])
    def test_known_rejecting_releases(self, version: str) -> None:
        hint = keda.upgrade_hint("", keda.normalise_version(version))
        assert hint and "2.17.0 or later" in hint and keda.TESTED_VERSION in hint

    def test_rejection_text_from_the_log_gives_the_hint_without_a_version(self) -> None:
        assert keda.upgrade_hint("error parsing redis stream metadata: activationLagCount required for Redis lag")

    @pytest.mark.parametrize("version", [None, "2.15.1", "2.17.0", "2.21.0", "garbage"])
    def test_other_releases_get_none(self, version: str | None) -> None:
        assert keda.upgrade_hint("Failed to ensure ScaledJob is correctly created", version) is None


class TestPool:
    def test_jobs_are_counted_by_their_conditions(self) -> None:
        done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
        running: dict[str, Any] = {"status": {"active": 1}}
        pool = keda.pool_of(_sj({"type": "Ready", "status": "True"}), [done, failed, running, running])
        assert (pool.active, pool.succeeded, pool.failed) == (2, 1, 1)
        assert pool.max_replicas == 8 and pool.verdict.accepted
        assert pool.to_dict()["jobs"] == {"active": 2, "succeeded": 1, "failed": 1}


class _Kube:
    """Answers get_or_none with a ScaledJob whose generation and Ready status a test sets."""

    def __init__(self, generation: int, ready: str) -> None:
        self.generation, self.ready = generation, ready

    def get_or_none(self, ref: Any) -> dict[str, Any]:
        return _sj({"type": "Ready", "status": self.ready, "reason": "R", "message": "m"},
                   generation=self.generation)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


KEY = ("raibid-ci", "raibid-agent")


class TestScalerWatch:
    """KEDA writes no observedGeneration: which verdicts are trusted when (see ScalerWatch)."""

    def watch(self, kube: _Kube, before: tuple[int | None, str]) -> tuple[keda.ScalerWatch, _Clock]:
        clock = _Clock()
        return keda.ScalerWatch(kube, {KEY: before}, clock=clock), clock  # type: ignore[arg-type]

    def test_a_new_rejection_fails_at_once(self) -> None:
        w, _ = self.watch(_Kube(2, "False"), (1, "accepted"))
        with pytest.raises(SyncFailed, match="KEDA rejected ScaledJob raibid-ci/raibid-agent: R: m"):
            w.check([KEY])

    def test_a_new_acceptance_counts_at_once(self) -> None:
        w, _ = self.watch(_Kube(2, "True"), (1, "rejected"))
        assert w.check([KEY])[KEY].accepted

    def test_an_acceptance_as_before_waits_to_settle(self) -> None:
        kube = _Kube(2, "True")
        w, clock = self.watch(kube, (1, "accepted"))
        assert w.check([KEY]) == {}
        clock.now += keda.SETTLE_SECONDS
        assert w.check([KEY])[KEY].accepted

    def test_an_acceptance_as_before_that_turns_into_a_rejection_fails(self) -> None:
        kube = _Kube(2, "True")
        w, clock = self.watch(kube, (1, "accepted"))
        assert w.check([KEY]) == {}
        kube.ready = "False"
        clock.now += 0.5
        with pytest.raises(SyncFailed):
            w.check([KEY])

    def test_a_rejection_as_before_is_given_time_to_be_fixed(self) -> None:
        kube = _Kube(2, "False")
        w, clock = self.watch(kube, (1, "rejected"))
        assert w.check([KEY]) == {}
        clock.now += keda.RECHECK_SECONDS / 2
        kube.ready = "True"
        assert w.check([KEY])[KEY].accepted

    def test_a_rejection_as_before_that_stays_fails_after_the_recheck_time(self) -> None:
        w, clock = self.watch(_Kube(2, "False"), (1, "rejected"))
        assert w.check([KEY]) == {}
        clock.now += keda.RECHECK_SECONDS
        with pytest.raises(SyncFailed):
            w.check([KEY])

    def test_an_unchanged_rejection_waits_for_flux_to_apply(self) -> None:
        kube = _Kube(1, "False")
        w, clock = self.watch(kube, (1, "rejected"))
        assert w.check([KEY]) == {}  # Flux may not have applied the fixing commit yet
        kube.generation, kube.ready = 2, "True"
        clock.now += 1
        assert w.check([KEY])[KEY].accepted

    def test_an_unchanged_acceptance_counts(self) -> None:
        w, _ = self.watch(_Kube(1, "True"), (1, "accepted"))
        assert w.check([KEY])[KEY].accepted

    def test_pending_is_neither(self) -> None:
        w, clock = self.watch(_Kube(1, "Unknown"), (None, "absent"))
        clock.now += 60
        assert w.check([KEY]) == {}
