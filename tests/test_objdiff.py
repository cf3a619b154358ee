"""Semantic diff of rendered objects: object, field path, old → new."""

from __future__ import annotations

import copy
from pathlib import Path

from raibid_gitops.gitops import kustomize, layout, objdiff
from raibid_gitops.gitops.change import set_settings


def scaledjob(max_replicas: int = 8, lag: str = "1", env: list | None = None) -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "raibid-agent", "namespace": "raibid-ci"},
        "spec": {
            "maxReplicaCount": max_replicas,
            "triggers": [{"type": "redis-streams", "metadata": {"lagCount": lag}}],
            "jobTargetRef": {"template": {"spec": {"containers": [
                {"name": "agent",
                 "env": env if env is not None else [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            ]}}},
        },
    }


class TestDiffObjects:
    def test_changed_fields_are_named_with_old_and_new(self):
        changes = objdiff.diff_objects([scaledjob()], [scaledjob(12, "2")])
        assert len(changes) == 1 and changes[0].action == "changed"
        assert changes[0].ref == "ScaledJob/raibid-ci/raibid-agent"
        got = {f.path: (f.old, f.new) for f in changes[0].fields}
        assert got == {"spec.maxReplicaCount": (8, 12), "spec.triggers[0].metadata.lagCount": ("1", "2")}

    def test_identical_objects_give_no_change(self):
        assert objdiff.diff_objects([scaledjob()], [copy.deepcopy(scaledjob())]) == []
        assert objdiff.format_text([]) == "no change to the rendered objects\n"

    def test_named_lists_match_by_name_not_position(self):
        old = scaledjob(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        new = scaledjob(env=[{"name": "B", "value": "3"}, {"name": "A", "value": "1"}, {"name": "C", "value": "x"}])
        [change] = objdiff.diff_objects([old], [new])
        paths = {f.path: (f.old, f.new) for f in change.fields}
        base = "spec.jobTargetRef.template.spec.containers[name=agent].env"
        assert paths == {f"{base}[name=B].value": ("2", "3"),
                         f"{base}[name=C]": (objdiff.MISSING, {"name": "C", "value": "x"})}

    def test_added_and_removed_objects(self):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}
        changes = objdiff.diff_objects([scaledjob(), cm], [scaledjob(), {**cm, "metadata": {"name": "y"}}])
        assert [(c.ref, c.action) for c in changes] == [("ConfigMap/y", "added"), ("ConfigMap/n/x", "removed")]

    def test_type_change_is_a_change(self):
        [change] = objdiff.diff_objects([scaledjob(lag="1")], [scaledjob(lag=1)])  # type: ignore[arg-type]
        assert change.fields[0].format() == 'spec.triggers[0].metadata.lagCount: "1" → 1'

    def test_multiline_strings_diff_by_line(self):
        old = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"},
               "data": {"settings.yaml": "a: 1\nb: 2\nc: 3\n"}}
        new = copy.deepcopy(old)
        new["data"]["settings.yaml"] = "a: 1\nb: 5\nc: 3\n"
        [change] = objdiff.diff_objects([old], [new])
        assert [f.format() for f in change.fields] == ["data.settings.yaml@line 2: b: 2 → b: 5"]

    def test_text_and_data_forms(self):
        changes = objdiff.diff_objects([scaledjob()], [scaledjob(12)])
        assert objdiff.format_text(changes) == "ScaledJob/raibid-ci/raibid-agent:\n  spec.maxReplicaCount: 8 → 12\n"
        assert objdiff.to_data(changes) == [{"object": "ScaledJob/raibid-ci/raibid-agent", "action": "changed",
                                             "fields": [{"field": "spec.maxReplicaCount", "old": 8, "new": 12}]}]


def test_diff_of_a_real_render(config_repo: Path):
    """The diff set prints for a pool-size change, from real kustomize output."""
    before = kustomize.build_objects(config_repo / layout.OVERLAY_DIR)
    set_settings(["agents.maxReplicas=10"], repo=config_repo)
    after = kustomize.build_objects(config_repo / layout.OVERLAY_DIR)
    text = objdiff.format_text(objdiff.diff_objects(before, after))
    assert "ScaledJob/raibid-ci/raibid-agent:\n  spec.maxReplicaCount: 8 → 10\n" in text
    assert "ConfigMap/raibid-ci/raibid-settings:" in text
