"""KEDA's side of "in effect": did the scaler accept the ScaledJob Flux applied, and how many
agent Jobs does it run.

Flux applying a commit proves only that the API server stored the ScaledJob. KEDA then parses
its triggers and connects to Redis; if that fails the pool never scales, while Flux (whose kstatus
does not read a custom resource's Ready condition) reports success. So ``sync`` also waits for
the ScaledJob's ``Ready`` condition, which KEDA sets on every reconcile:

- ``Ready=False`` (``ScaledJobCheckFailed``, ``TriggerError``, ...) is a failure with KEDA's message;
- ``Ready=True`` is acceptance;
- no condition yet (or ``Unknown``): KEDA has not reconciled it; keep waiting (is it running?).

KEDA writes no ``observedGeneration``, so a verdict written for the previous generation looks
the same as one for the new: right after Flux changed the ScaledJob, a ``True`` may hide a
rejection to come and a ``False`` may be a rejection the commit fixes. :class:`ScalerWatch`
therefore takes a changed verdict at once, and one that looks as before only after it has stood
for :data:`SETTLE_SECONDS` (acceptance; KEDA reconciles a change from its watch within
milliseconds) or :data:`RECHECK_SECONDS` (rejection). For the same reason the
generated Flux Kustomization's health check (``healthCheckExprs``) has only a ``current``
expression: a ``failed`` one would fail a fixing commit on the stale ``False`` at once.

Pure functions over API dicts, plus :class:`ScalerWatch` and :func:`pools`, which read through
:class:`~raibid_gitops.clients.kube.Kube`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import KubeError, KubeNotFound, SyncFailed, SyncTimeout
from raibid_gitops.gitops import flux

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube, ObjectRef

KEDA_API = "keda.sh/v1alpha1"
SCALED_JOB = "ScaledJob"
#: KEDA labels every Job it creates for a ScaledJob with the ScaledJob's name.
SCALED_JOB_LABEL = "scaledjob.keda.sh/name"

#: How long after Flux applied a changed ScaledJob a Ready=True is still suspected of being
#: the previous generation's. KEDA's own reconcile of a changed object is watch-driven and
#: takes milliseconds; two seconds covers a loaded 2-core machine with a wide margin.
SETTLE_SECONDS = 2.0

#: How long a changed ScaledJob's rejection that looks like the one before the change is given
#: to turn into an acceptance (the commit may fix it). KEDA's reconcile of the change can queue
#: behind one still failing on the old trigger (a Redis connection timing out).
RECHECK_SECONDS = 15.0

#: The KEDA release the local stack runs and the tests prove the rendered trigger against.
TESTED_VERSION = "2.21.0"
#: Releases whose redis-streams scaler refuses what raibid renders, and why. Read from each
#: release's pkg/scalers/redis_streams_scaler.go: 2.16.0 moved to typed metadata parsing, where
#: ``activationLagCount: "0"`` reads as "not set", and Validate() then demands it with
#: ``lagCount``; 2.17.0 gave it a default of 0. Releases up to 2.15 required the key and
#: accepted "0"; 2.17.0 and later accept it.
INCOMPATIBLE_VERSIONS: Mapping[str, str] = {
    "2.16.0": "activationLagCount required for Redis lag",
    "2.16.1": "activationLagCount required for Redis lag",
}
_VERSION = re.compile(r"v?(\d+\.\d+\.\d+)")


def upgrade_hint(message: str = "", version: str | None = None) -> str | None:
    """What to tell a user whose KEDA refuses the trigger, or None when nothing is known."""
    v = normalise_version(version)
    if v in INCOMPATIBLE_VERSIONS or any(m in message for m in INCOMPATIBLE_VERSIONS.values()):
        running = f"KEDA {v}" if v else "this KEDA (2.16.x refuses it)"
        return (f"{running} rejects the redis-streams trigger raibid renders (lagCount with "
                f"activationLagCount \"0\"); upgrade KEDA to 2.17.0 or later ({TESTED_VERSION} is tested)")
    return None


def normalise_version(text: str | None) -> str | None:
    m = _VERSION.search(text or "")
    return m.group(1) if m else None


# --- the ScaledJob as data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """KEDA's Ready condition of one ScaledJob: ``state`` is accepted, rejected or pending."""

    state: str
    reason: str = ""
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.state == "accepted"

    @property
    def rejected(self) -> bool:
        return self.state == "rejected"


def verdict(scaled_job: Mapping[str, Any]) -> Verdict:
    ready = flux.condition(scaled_job, "Ready")
    if ready is None or ready.status == "Unknown":
        return Verdict("pending", ready.reason if ready else "", ready.message if ready else "")
    return Verdict("accepted" if ready.true else "rejected", ready.reason, ready.message)


def scaled_jobs_in(ks: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(namespace, name) of each ScaledJob a Kustomization applied (its status.inventory).

    Inventory ids are ``<namespace>_<name>_<group>_<kind>``; Kubernetes names cannot hold
    ``_``, so the split is unambiguous."""
    out: list[tuple[str, str]] = []
    for entry in ((ks.get("status") or {}).get("inventory") or {}).get("entries") or []:
        parts = str(entry.get("id", "")).split("_")
        if len(parts) == 4 and parts[2] == "keda.sh" and parts[3] == SCALED_JOB:
            out.append((parts[0], parts[1]))
    return out


def ref(namespace: str, name: str) -> ObjectRef:
    from raibid_gitops.clients.kube import ObjectRef

    return ObjectRef(KEDA_API, SCALED_JOB, name, namespace)


# --- waiting for KEDA's verdict ------------------------------------------------------------------


class ScalerWatch:
    """KEDA's verdict on the ScaledJobs of one sync.

    ``before`` holds each ScaledJob's ``metadata.generation`` and verdict when the sync
    started. KEDA writes no observedGeneration, so for a ScaledJob whose generation has
    changed since, only a verdict that differs from the one before is known to be about the
    new generation. One that looks the same is judged after a wait: an acceptance after
    :data:`SETTLE_SECONDS`, a rejection (perhaps the old one, about to be fixed) after
    :data:`RECHECK_SECONDS`. An unchanged ScaledJob is judged by its current verdict.
    """

    def __init__(self, kube: Kube, before: Mapping[tuple[str, str], tuple[int | None, str]],
                 clock: Callable[[], float] = time.monotonic,
                 keda_version: Callable[[], str | None] | None = None) -> None:
        self.kube = kube
        self.before = dict(before)
        self.clock = clock
        self.keda_version = keda_version
        self._changed_at: dict[tuple[str, str], float] = {}
        self._first_look: dict[tuple[str, str], float] = {}

    @staticmethod
    def snapshot(obj: Mapping[str, Any] | None) -> tuple[int | None, str]:
        """What ``before`` holds for one ScaledJob: (generation, verdict state)."""
        if obj is None:
            return None, "absent"
        return (obj.get("metadata") or {}).get("generation"), verdict(obj).state

    def check(self, targets: list[tuple[str, str]]) -> dict[tuple[str, str], Verdict]:
        """The settled verdicts (pending ones left out); raises SyncFailed on a settled rejection.

        A rejection is trusted at once only when it is new (the generation changed and the
        verdict before was not a rejection); otherwise after it has stood RECHECK_SECONDS since
        the change, or since the first look when no change came (while Flux has yet to apply
        the commit, an unchanged ScaledJob's old rejection may be about to be fixed)."""
        out: dict[tuple[str, str], Verdict] = {}
        now = self.clock()
        for key in targets:
            obj = self.kube.get_or_none(ref(*key))
            if obj is None:
                continue
            v = verdict(obj)
            first = self._first_look.setdefault(key, now)
            gen_before, state_before = self.before.get(key, (None, "absent"))
            changed = (obj.get("metadata") or {}).get("generation") != gen_before
            since = now - (self._changed_at.setdefault(key, now) if changed else first)
            if v.rejected:
                if (not changed or state_before == "rejected") and since < RECHECK_SECONDS:
                    continue
                raise self.rejection(key, v)
            if v.accepted:
                if changed and state_before == "accepted" and since < SETTLE_SECONDS:
                    continue  # maybe still the previous generation's acceptance
                out[key] = v
        return out

    def rejection(self, key: tuple[str, str], v: Verdict) -> SyncFailed:
        hint = upgrade_hint(v.message, self.keda_version() if self.keda_version else None)
        return SyncFailed(
            f"KEDA rejected {ref(*key)}: {v.reason}: {v.message}".rstrip(": "),
            hint=hint or "the pool cannot scale until KEDA accepts it: check the trigger's settings (queue.*, "
                         "scaling.*), that Redis is reachable at queue.redisAddress and the Secret raibid-redis; "
                         "KEDA's log has the cause (kubectl -n keda logs deploy/keda-operator)",
        )

    def wait(self, targets: list[tuple[str, str]], *, deadline: float, timeout_text: str,
             report: Callable[[str], None], poll: float = 0.25) -> dict[tuple[str, str], Verdict]:
        """Until every target is accepted (settled); SyncFailed on a rejection, SyncTimeout when
        KEDA has not said anything in time."""
        while True:
            try:
                verdicts = self.check(targets)
            except KubeNotFound as exc:
                raise SyncFailed("a ScaledJob Flux applied is gone") from exc
            waiting = [k for k in targets if k not in verdicts]
            if not waiting:
                return verdicts
            if self.clock() >= deadline:
                names = ", ".join(str(ref(*k)) for k in waiting)
                raise SyncTimeout(f"timed out after {timeout_text} waiting for KEDA to accept {names}",
                                  hint="is the KEDA operator running? (kubectl -n keda get deploy keda-operator)")
            report(f"waiting for KEDA to accept {ref(*waiting[0])}")
            time.sleep(poll)


# --- the pool as it is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """One ScaledJob and the agent Jobs KEDA created for it."""

    namespace: str
    name: str
    max_replicas: int | None
    min_replicas: int | None
    verdict: Verdict
    active: int
    succeeded: int
    failed: int

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "maxReplicas": self.max_replicas,
                "minReplicas": self.min_replicas, "keda": self.verdict.state, "reason": self.verdict.reason,
                "message": self.verdict.message, "jobs": {"active": self.active, "succeeded": self.succeeded,
                                                          "failed": self.failed}}


def job_counts(jobs: list[Mapping[str, Any]]) -> tuple[int, int, int]:
    """(active, succeeded, failed) Jobs, by their Complete/Failed conditions."""
    active = succeeded = failed = 0
    for job in jobs:
        conds = flux.conditions(job)
        if (c := conds.get("Complete")) and c.true:
            succeeded += 1
        elif (c := conds.get("Failed")) and c.true:
            failed += 1
        else:
            active += 1
    return active, succeeded, failed


def pool_of(scaled_job: Mapping[str, Any], jobs: list[Mapping[str, Any]]) -> Pool:
    meta = scaled_job.get("metadata") or {}
    spec = scaled_job.get("spec") or {}
    active, succeeded, failed = job_counts(jobs)
    return Pool(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
                max_replicas=spec.get("maxReplicaCount"), min_replicas=spec.get("minReplicaCount"),
                verdict=verdict(scaled_job), active=active, succeeded=succeeded, failed=failed)


def pools(kube: Kube, namespace: str | None = None) -> list[Pool]:
    """Every ScaledJob (in ``namespace`` or all) with its Jobs; [] when KEDA's CRDs are absent."""
    try:
        sjs = kube.list(KEDA_API, SCALED_JOB, namespace).get("items") or []
    except KubeNotFound:
        return []
    out = []
    for sj in sjs:
        meta = sj.get("metadata") or {}
        jobs = kube.list("batch/v1", "Job", meta.get("namespace"),
                         label_selector=f"{SCALED_JOB_LABEL}={meta.get('name')}").get("items") or []
        out.append(pool_of(sj, jobs))
    return sorted(out, key=lambda p: (p.namespace, p.name))


def installed_version(kube: Kube) -> str | None:
    """The KEDA operator's version from its Deployment (label app.kubernetes.io/version, else the
    image tag), as the release manifests and the Helm chart install it; None when not found."""
    try:
        deps = kube.list("apps/v1", "Deployment", None, label_selector="app=keda-operator").get("items") or []
        if not deps:
            deps = kube.list("apps/v1", "Deployment", None,
                             label_selector="app.kubernetes.io/name=keda-operator").get("items") or []
    except KubeError:
        return None
    for dep in deps:
        labels = (dep.get("metadata") or {}).get("labels") or {}
        if v := normalise_version(labels.get("app.kubernetes.io/version")):
            return v
        for c in (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            if v := normalise_version(str(c.get("image", "")).rpartition(":")[2]):
                return v
    return None
