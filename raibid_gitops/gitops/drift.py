"""`raibid gitops diff`: the overlay and the Flux objects (working tree or a commit) against
the live cluster.

Each rendered object is sent to the API server as a **server-side apply dry-run** under
kustomize-controller's field manager, with the ownership labels Flux adds — i.e. exactly the
request Flux would make. The answer (defaulting, admission and field ownership included) is
compared with the live object, so the diff shows what applying would change and nothing
else: server-managed fields (managedFields, resourceVersion, status, ...) are ignored, and
fields another manager owns that the manifests do not set are left alone, as Flux leaves them.

With ``--ref HEAD`` (or the working tree, when clean) it shows **drift**: what someone changed
in the cluster by hand since Flux applied. Objects in the Kustomization's inventory that are no
longer rendered are reported as ``pruned`` when the Kustomization prunes.

Exit code: 0 no change, 1 changes, >1 error (as ``flux diff``).
"""

from __future__ import annotations

import copy
import io
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import ConfigRepoError, KubeError, KubeNotFound, shown
from raibid_gitops.gitops import flux
from raibid_gitops.gitops.layout import CLUSTER_DIR, FLUX_CLUSTER_OBJECT, FLUX_NAMESPACE, FLUX_OBJECT_NAME, OVERLAY_DIR

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube

#: Fields the API server writes; never part of a difference someone made.
#: Field lines shown per object in text output; a rewritten ConfigMap would otherwise print
#: every line of settings.yaml. -o yaml/json always has them all.
MAX_TEXT_FIELDS = 20
SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")


@dataclass(frozen=True)
class FieldDiff:
    path: str
    live: Any
    desired: Any

    def to_dict(self) -> dict[str, Any]:
        from raibid_gitops.gitops.objdiff import MISSING

        out: dict[str, Any] = {"field": self.path}
        if self.live is not MISSING:
            out["live"] = self.live
        if self.desired is not MISSING:
            out["desired"] = self.desired
        return out


@dataclass(frozen=True)
class ObjectDiff:
    ref: str
    action: str  # created | changed | pruned
    fields: tuple[FieldDiff, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.ref, "action": self.action, "fields": [f.to_dict() for f in self.fields]}


@dataclass
class DiffReport:
    source: str  # "working tree" or "<ref> (<sha>)"
    kustomization: str
    changes: list[ObjectDiff] = field(default_factory=list)
    unchanged: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kustomization": self.kustomization, "changed": self.changed,
                "unchanged": self.unchanged, "changes": [c.to_dict() for c in self.changes], "notes": self.notes}

    def format_text(self) -> str:
        from raibid_gitops.gitops.objdiff import format_value

        lines = [f"# note: {n}" for n in self.notes]
        for ch in self.changes:
            if ch.action != "changed":
                lines.append(f"{ch.ref}: would be {ch.action}")
                continue
            lines.append(f"{ch.ref}:")
            shown = ch.fields if len(ch.fields) <= MAX_TEXT_FIELDS else ch.fields[:MAX_TEXT_FIELDS]
            lines.extend(f"  {f.path}: {format_value(f.live)} (live) → {format_value(f.desired)}" for f in shown)
            if len(shown) < len(ch.fields):
                lines.append(f"  ... {len(ch.fields) - len(shown)} more (all of them with -o yaml)")
        if not self.changes:
            lines.append(f"no change: the cluster matches {self.source} ({self.unchanged} objects)")
        return "\n".join(lines) + "\n"


# --- rendering ---------------------------------------------------------------------------------


def render(root: Path, ref: str | None, subdir: str = OVERLAY_DIR) -> tuple[list[dict[str, Any]], str]:
    """``subdir``'s objects (default: the overlay) from the working tree or from commit ``ref``,
    and a label for it."""
    from raibid_gitops.gitops.kustomize import build_objects

    if ref is None:
        return build_objects(root / subdir), "the working tree"
    sha = _resolve(root, ref)
    with tempfile.TemporaryDirectory(prefix="raibid-diff-") as tmp:
        # git archive: a clean export of that commit, without touching the working tree or
        # leaving a registered worktree behind if we are interrupted.
        proc = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", sha],
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ConfigRepoError(f"cannot export {ref} ({sha[:12]}): {proc.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        if not (Path(tmp) / subdir).is_dir():
            raise ConfigRepoError(f"{ref} ({sha[:12]}) has no {subdir}")
        return build_objects(Path(tmp) / subdir), f"{ref} ({sha[:12]})"


def _resolve(root: Path, ref: str) -> str:
    if ref.startswith("-") or "\n" in ref:  # an option to git, or a second line: not a revision
        raise ConfigRepoError(f"{shown(ref)} is not a commit of {root}", hint="e.g. --ref HEAD or --ref origin/main")
    proc = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ConfigRepoError(f"{shown(ref)} is not a commit of {root}",
                              hint="pass a branch, tag or commit, e.g. --ref HEAD or --ref origin/main")
    return proc.stdout.strip()


# --- comparing ----------------------------------------------------------------------------------


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what the server manages."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in SERVER_METADATA:
        meta.pop(key, None)
    for key in ("annotations", "labels"):
        if key in meta and not meta[key]:
            meta.pop(key)
    return out


def field_diffs(live: dict[str, Any], desired: dict[str, Any]) -> tuple[FieldDiff, ...]:
    from raibid_gitops.gitops.objdiff import diff_objects

    changes = diff_objects([normalize(live)], [normalize(desired)])
    return tuple(FieldDiff(f.path, f.old, f.new) for c in changes for f in c.fields)


def with_flux_labels(obj: dict[str, Any], ks_name: str, ks_namespace: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    labels = out.setdefault("metadata", {}).setdefault("labels", {}) or {}
    labels[flux.OWNER_NAME_LABEL] = ks_name
    labels[flux.OWNER_NAMESPACE_LABEL] = ks_namespace
    out["metadata"]["labels"] = labels
    return out


def _ref_text(obj: dict[str, Any]) -> str:
    from raibid_gitops.gitops.objdiff import object_ref

    return object_ref(obj)


def _inventory(ks: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(namespace, name, group, kind, version) of each object Flux applied last time."""
    out = []
    for entry in ((ks.get("status") or {}).get("inventory") or {}).get("entries") or []:
        parts = str(entry.get("id", "")).split("_")
        if len(parts) == 4:
            ns, name, group, kind = parts
            out.append((ns, name, group, kind, str(entry.get("v", "v1"))))
    return out


def diff(kube: Kube, root: Path, *, ref: str | None = None, kustomization: str = FLUX_OBJECT_NAME,
         namespace: str = FLUX_NAMESPACE) -> DiffReport:
    """The overlay against what ``kustomization`` applied and, since Flux manages its own
    objects, clusters/dgx-spark against what raibid-cluster applied: a hand-patched Flux object
    is drift like any other."""
    from raibid_gitops.clients.kube import ObjectRef

    objects, source = render(root, ref)
    report = DiffReport(source=source, kustomization=f"{namespace}/{kustomization}")
    cluster_ks = ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, FLUX_CLUSTER_OBJECT, namespace)
    if kube.get_or_none(cluster_ks) is not None:
        flux_objects, _ = render(root, ref, CLUSTER_DIR)
        _compare(kube, report, flux_objects, FLUX_CLUSTER_OBJECT, namespace)
    else:
        report.notes.append(f"{cluster_ks} not found: Flux does not manage its own objects here, so "
                            f"{CLUSTER_DIR} is not compared")
    _compare(kube, report, objects, kustomization, namespace)
    return report


def _compare(kube: Kube, report: DiffReport, objects: list[dict[str, Any]], kustomization: str,
             namespace: str) -> None:
    """Add to ``report`` how ``objects``, applied by ``kustomization``, differ from the cluster."""
    from raibid_gitops.clients.kube import ObjectRef

    ks = kube.get_or_none(ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, kustomization, namespace))
    if ks is None:
        report.notes.append(f"Kustomization {namespace}/{kustomization} not found: comparing without its "
                            "inventory (nothing reported as pruned)")
    rendered_keys: set[tuple[str, str, str, str]] = set()
    new_namespaces: set[str] = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        ref_ = ObjectRef.of(obj)
        rendered_keys.add((meta.get("namespace") or "", ref_.name, ref_.group, ref_.kind))
        live = kube.get_or_none(ref_)
        if live is None:
            if ref_.kind == "Namespace" and not ref_.api_version.count("/"):
                new_namespaces.add(ref_.name)
            elif meta.get("namespace") in new_namespaces:
                report.changes.append(ObjectDiff(_ref_text(obj), "created"))
                continue
        desired_in = with_flux_labels(obj, kustomization, namespace)
        try:
            desired = kube.apply_dry_run(desired_in, field_manager=flux.KUSTOMIZE_FIELD_MANAGER)
        except KubeNotFound:
            # Its namespace does not exist yet (created by the same apply).
            report.changes.append(ObjectDiff(_ref_text(obj), "created"))
            continue
        except KubeError as exc:
            raise KubeError(f"the API server refused {_ref_text(obj)} (dry-run): {exc.message}",
                            status=exc.status) from exc
        if live is None:
            report.changes.append(ObjectDiff(_ref_text(obj), "created"))
            continue
        fields = field_diffs(live, desired)
        if fields:
            report.changes.append(ObjectDiff(_ref_text(obj), "changed", fields))
        else:
            report.unchanged += 1
    if ks is not None and (ks.get("spec") or {}).get("prune"):
        for ns, name, group, kind, version in _inventory(ks):
            if (ns, name, group, kind) in rendered_keys:
                continue
            api = f"{group}/{version}" if group else version
            if kube.get_or_none(ObjectRef(api, kind, name, ns or None)) is not None:
                report.changes.append(ObjectDiff(f"{kind}/{ns + '/' if ns else ''}{name}", "pruned"))
