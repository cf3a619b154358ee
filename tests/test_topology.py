"""Several nodes and queue.mode (issue 15), without a cluster: the settings' rules and their
messages, hostile input to every new setting and argument, what the generated `topology`
component renders (kustomize), what verify catches, and the Sentinel URL clients take."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures_gitops import git_state

from raibid_gitops import settings as sm
from raibid_gitops.clients.redis import acks, describe, parse_sentinel_url, url_for
from raibid_gitops.errors import RedisUnavailable, SettingsError
from raibid_gitops.gitops import generate, kustomize, layout, verify


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(SettingsError) as exc:
        sm.validate_data(data)
    return "\n".join(p.format() for p in exc.value.problems)


def three_nodes(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"cluster": {"nodes": {"count": 3}, "capacity": {"cpu": "60", "memory": "384Gi"}}}
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return data


class TestNodeRules:
    """The capacity check covers the whole cluster and each node: messages name both fields."""

    def test_an_agent_bigger_than_a_node_never_fits(self):
        msg = problems(three_nodes(agents={"cpu": "24", "maxReplicas": 1}))
        assert "agents.cpu: agents.cpu (24) is more than one node offers: cluster.nodes.cpu (20)" in msg
        msg = problems(three_nodes(agents={"memory": "200Gi", "maxReplicas": 1}))
        assert "agents.memory (200Gi)" in msg and "cluster.nodes.memory (128Gi)" in msg

    def test_packing_node_by_node_not_only_in_total(self):
        # 60 CPU in total would take ten 6-CPU agents; three 20-CPU nodes hold only nine.
        msg = problems(three_nodes(agents={"cpu": "6", "maxReplicas": 10}))
        assert "agents.maxReplicas (10) agents do not fit the nodes: one node holds 3" in msg
        assert "cluster.nodes.count (3) nodes hold 9" in msg
        assert sm.validate_data(three_nodes(agents={"cpu": "6", "maxReplicas": 9})).agents.max_replicas == 9

    def test_capacity_within_the_nodes(self):
        msg = problems({"cluster": {"capacity": {"cpu": "60"}, "nodes": {"count": 2}}})
        assert "cluster.capacity.cpu (60) exceeds what the nodes offer: cluster.nodes.count (2) x " \
               "cluster.nodes.cpu (20) = 40" in msg

    def test_gpu_agents_only_where_gpus_are(self):
        assert "agents.gpus (2) is more than one node has: cluster.nodes.gpus (1)" in problems(
            {"agents": {"gpus": 2, "maxReplicas": 1}})
        # One GPU per DGX Spark: two GPU agents need two nodes.
        assert "one node holds 1 (agents.gpus (1) in cluster.nodes.gpus (1))" in problems(
            {"agents": {"gpus": 1, "maxReplicas": 2}})
        assert sm.validate_data(three_nodes(agents={"gpus": 1, "maxReplicas": 3})).agents.gpus == 1

    def test_a_file_from_before_nodes_means_one_node_of_its_capacity(self):
        s = sm.validate_data({"cluster": {"capacity": {"cpu": "40", "memory": "256Gi"}}, "agents": {"maxReplicas": 20}})
        assert (s.cluster.nodes.count, s.cluster.nodes.cpu, s.cluster.nodes.memory) == (1, "40", "256Gi")

    def test_the_template_is_one_dgx_spark(self):
        s = sm.defaults()
        assert (s.cluster.nodes.count, s.cluster.nodes.cpu, s.cluster.nodes.memory, s.cluster.nodes.gpus) == \
               (1, "20", "128Gi", 1)
        assert s.queue.mode == "single"


class TestSentinelRules:
    def test_ack_replicas_within_replicas(self):
        assert "queue.sentinel.ackReplicas (3) must not exceed queue.sentinel.replicas (2)" in problems(
            {"queue": {"sentinel": {"ackReplicas": 3}}})

    def test_sentinels_in_the_namespace(self):
        msg = problems({"queue": {"mode": "sentinel",
                                  "sentinel": {"addresses": "s.raibid-ci.svc.cluster.local:26379,"
                                                            "s.other.svc.cluster.local:26379"}}})
        assert "queue.sentinel.addresses (s.other.svc.cluster.local:26379) points at namespace 'other'" in msg
        # Only checked when they are used.
        assert sm.validate_data({"queue": {"sentinel": {"addresses": "s.other.svc.cluster.local:26379"}}})

    def test_url_for_follows_the_mode(self):
        assert url_for(sm.defaults()) == "redis://raibid-redis.raibid-ci.svc.cluster.local:6379/0"
        s = sm.validate_data({"queue": {"mode": "sentinel"}})
        assert url_for(s) == "redis+sentinel://raibid-redis-sentinel.raibid-ci.svc.cluster.local:26379/raibid/0"
        assert acks(sm.defaults()) == (0, 0) and acks(s) == (1, 5000)
        assert acks(sm.validate_data({"queue": {"mode": "sentinel", "sentinel": {"ackReplicas": 0}}})) == (0, 0)


@pytest.mark.parametrize("data, key, words", [
    ({"cluster": {"nodes": {"count": 65}}}, "cluster.nodes.count", "less than or equal to 64"),
    ({"cluster": {"nodes": {"count": 0}}}, "cluster.nodes.count", "greater than or equal to 1"),
    ({"cluster": {"nodes": {"count": "3"}}}, "cluster.nodes.count", "valid integer"),
    ({"cluster": {"nodes": {"count": 3.0}}}, "cluster.nodes.count", "valid integer"),
    ({"cluster": {"nodes": {"count": True}}}, "cluster.nodes.count", "valid integer"),
    ({"cluster": {"nodes": {"count": 10**50}}}, "cluster.nodes.count", "a number of 51 digits"),
    ({"cluster": {"nodes": {"cpu": "20\n"}}}, "cluster.nodes.cpu", "not a Kubernetes quantity"),
    ({"cluster": {"nodes": {"cpu": 0}}}, "cluster.nodes.cpu", "must be more than 0"),
    ({"cluster": {"nodes": {"memory": True}}}, "cluster.nodes.memory", "not a boolean"),
    ({"cluster": {"nodes": {"gpus": 9}}}, "cluster.nodes.gpus", "less than or equal to 8"),
    ({"cluster": {"nodes": {"gpu": 1}}}, "cluster.nodes.gpu", "did you mean cluster.nodes.gpus"),
    ({"queue": {"mode": "Sentinel"}}, "queue.mode", "'single' or 'sentinel'"),
    ({"queue": {"mode": "sentinel\n"}}, "queue.mode", "'single' or 'sentinel'"),
    ({"queue": {"sentinel": {"addresses": "a:1,b:2,c:3,d:4,e:5,f:6"}}}, "queue.sentinel.addresses", "should match"),
    ({"queue": {"sentinel": {"addresses": "a:1\n"}}}, "queue.sentinel.addresses", "should match"),
    ({"queue": {"sentinel": {"addresses": "a:1,"}}}, "queue.sentinel.addresses", "should match"),
    ({"queue": {"sentinel": {"addresses": "a:70000"}}}, "queue.sentinel.addresses", "not between 1 and 65535"),
    ({"queue": {"sentinel": {"addresses": "x" * 5000 + ":1"}}}, "queue.sentinel.addresses", "at most"),
    ({"queue": {"sentinel": {"masterName": "a b"}}}, "queue.sentinel.masterName", "should match"),
    ({"queue": {"sentinel": {"replicas": 0}}}, "queue.sentinel.replicas", "greater than or equal to 1"),
    ({"queue": {"sentinel": {"ackTimeoutSeconds": 26}}}, "queue.sentinel.ackTimeoutSeconds", "less than or equal"),
    ({"queue": {"sentinel": {"ackReplicas": -1}}}, "queue.sentinel.ackReplicas", "greater than or equal to 0"),
])
def test_hostile_values_are_refused_by_name(data, key, words):
    msg = problems(data)
    assert f"{key}:" in msg and words in msg, msg
    assert "x" * 100 not in msg


@pytest.mark.parametrize("item, words", [
    ("cluster.nodes.count=3\n", "must be an integer"),
    ("cluster.nodes.count= 3", "must be an integer"),
    ("cluster.nodes.count=three", "must be an integer"),
    ("queue.sentinel.ackReplicas=1.0", "must be an integer"),
])
def test_key_value_parsing(item, words):
    with pytest.raises(SettingsError, match=words):
        sm.parse_assignments([item])


class TestSentinelUrl:
    def test_parsed(self):
        u = parse_sentinel_url("redis+sentinel://a.b:26379,127.0.0.1:1/raibid/3")
        assert u is not None and u.sentinels == (("a.b", 26379), ("127.0.0.1", 1)) and (u.master, u.db) == ("raibid", 3)
        assert parse_sentinel_url("redis://h:1/0") is None
        assert describe("redis+sentinel://a:1/m/0") == "the primary 'm' of Sentinel a:1"

    @pytest.mark.parametrize("url", [
        "redis+sentinel://a:1/m/0\n", "redis+sentinel://:secret@a:1/m", "redis+sentinel://a:1",
        "redis+sentinel://a:99999/m", "redis+sentinel://" + ",".join(["a:1"] * 6) + "/m",
        "redis+sentinel://a:1/m" + "x" * 5000,
    ])
    def test_refused_without_echoing(self, url):
        with pytest.raises(RedisUnavailable) as exc:
            parse_sentinel_url(url)
        assert "secret" not in str(exc.value) and "x" * 100 not in str(exc.value)


def _render(root: Path) -> list[dict[str, Any]]:
    return kustomize.build_objects(root / layout.OVERLAY_DIR)


def _get(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


class TestTopologyComponent:
    """The generated component, rendered by kustomize and checked by verify."""

    def test_default_renders_as_one_node_one_redis(self, tmp_path: Path):
        root = generate.init(tmp_path / "c").path
        objs = _render(root)
        sj = _get(objs, "ScaledJob", "raibid-agent")
        assert "topologySpreadConstraints" not in sj["spec"]["jobTargetRef"]["template"]["spec"]
        [trigger] = sj["spec"]["triggers"]
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["address"] == "raibid-redis.raibid-ci.svc.cluster.local:6379"
        assert "sentinelMaster" not in trigger["metadata"]
        assert not [o for o in objs if "sentinel" in o["metadata"]["name"] or "replica" in o["metadata"]["name"]]
        ta = _get(objs, "TriggerAuthentication", "raibid-redis")
        assert [r["parameter"] for r in ta["spec"]["secretTargetRef"]] == ["password"]

    def test_init_nodes_spreads_agents(self, tmp_path: Path):
        root = generate.init(tmp_path / "c", nodes=3, assignments=["agents.maxReplicas=24"]).path
        s = sm.load_path(root / layout.SETTINGS_PATH)
        assert (s.cluster.nodes.count, s.cluster.capacity.cpu, s.cluster.capacity.memory) == (3, "60", "384Gi")
        spec = _get(_render(root), "ScaledJob", "raibid-agent")["spec"]["jobTargetRef"]["template"]["spec"]
        assert spec["topologySpreadConstraints"] == [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "raibid-agent"}}}]
        assert verify.verify(root).ok

    def test_init_nodes_takes_the_per_node_shape_given(self, tmp_path: Path):
        root = generate.init(tmp_path / "c", nodes=2, assignments=["cluster.nodes.cpu=16",
                                                                   "cluster.nodes.memory=64Gi"]).path
        s = sm.load_path(root / layout.SETTINGS_PATH)
        assert (s.cluster.capacity.cpu, s.cluster.capacity.memory) == ("32", "128Gi")

    def test_sentinel_mode(self, tmp_path: Path):
        root = generate.init(tmp_path / "c", assignments=[
            "cluster.namespace=ci-ha", "queue.redisAddress=raibid-redis.ci-ha.svc.cluster.local:6379",
            "queue.mode=sentinel", "queue.sentinel.addresses=raibid-redis-sentinel.ci-ha.svc.cluster.local:26379",
            "queue.sentinel.masterName=queue", "queue.sentinel.replicas=3"]).path
        report = verify.verify(root)
        assert report.ok, [p.format() for p in report.problems]
        objs = report.objects
        [trigger] = _get(objs, "ScaledJob", "raibid-agent")["spec"]["triggers"]
        assert trigger["type"] == "redis-sentinel-streams"
        assert trigger["metadata"]["address"] == "raibid-redis-sentinel.ci-ha.svc.cluster.local:26379"
        assert trigger["metadata"]["sentinelMaster"] == "queue"
        ta = _get(objs, "TriggerAuthentication", "raibid-redis")
        assert {r["parameter"] for r in ta["spec"]["secretTargetRef"]} == {"password", "sentinelPassword"}
        replicas = _get(objs, "StatefulSet", "raibid-redis-replica")
        sentinels = _get(objs, "StatefulSet", "raibid-redis-sentinel")
        primary = _get(objs, "StatefulSet", "raibid-redis")
        assert replicas["spec"]["replicas"] == 3 and sentinels["spec"]["replicas"] == 3
        assert primary["spec"]["serviceName"] == "raibid-redis"  # immutable: unchanged from single mode
        for sts in (primary, replicas, sentinels):
            assert sts["metadata"]["namespace"] == "ci-ha"
            [container] = sts["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAIBID_MASTER_NAME"] == "queue"
            assert container["command"][0] == "sh" and container["command"][1].startswith("/scripts/")
        scripts = next(o for o in objs
                       if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("raibid-redis-scripts"))
        assert set(scripts["data"]) == {"redis-start.sh", "sentinel-start.sh"}
        assert _get(objs, "Service", "raibid-redis-replica")["spec"]["clusterIP"] == "None"
        assert {"redis-ha-servers", "redis-ha-sentinels", "agent-egress-redis-ha"} <= {
            o["metadata"]["name"] for o in objs if o["kind"] == "NetworkPolicy"}

    def test_verify_catches_a_repository_without_the_component(self, tmp_path: Path):
        root = generate.init(tmp_path / "c").path
        k = root / layout.OVERLAY_DIR / "kustomization.yaml"
        k.write_text(k.read_text().replace("  - topology\n", "  []\n").replace("components:\n", "components:"))
        msgs = [p.format() for p in verify.verify(root).problems]
        assert any("does not include the generated component 'topology'" in m for m in msgs), msgs

    def test_verify_catches_a_patch_that_overrides_the_trigger(self, tmp_path: Path):
        root = generate.init(tmp_path / "c", assignments=["queue.mode=sentinel"]).path
        patch = root / layout.OVERLAY_DIR / "agent-scaledjob-patch.yaml"
        patch.write_text(patch.read_text() + "- op: replace\n  path: /spec/triggers/0/metadata/address\n"
                                              "  value: raibid-redis.raibid-ci.svc.cluster.local:6379\n")
        msgs = [p.format() for p in verify.verify(root).problems]
        assert any("does not reach Redis as queue.mode sentinel says" in m and
                   "expected redis-sentinel-streams at raibid-redis-sentinel" in m for m in msgs), msgs

    def test_verify_catches_a_hand_edited_component(self, tmp_path: Path):
        root = generate.init(tmp_path / "c").path
        comp = root / layout.TOPOLOGY_PATH
        comp.write_text(comp.read_text().replace("6379", "6380"))
        msgs = [p.format() for p in verify.verify(root).problems]
        assert any(layout.TOPOLOGY_PATH in m and "out of date" in m for m in msgs), msgs

    def test_set_switches_mode_as_one_commit(self, config_repo: Path):
        from raibid_gitops.gitops.change import set_settings

        before = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=config_repo, capture_output=True,
                                text=True).stdout
        set_settings(["queue.mode=sentinel", "cluster.nodes.count=3", "cluster.capacity.cpu=60"], repo=config_repo)
        after = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=config_repo, capture_output=True,
                               text=True).stdout
        assert int(after) == int(before) + 1
        changed = subprocess.run(["git", "show", "--name-only", "--format=", "HEAD"], cwd=config_repo,
                                 capture_output=True, text=True).stdout.split()
        assert set(changed) == {layout.SETTINGS_PATH, layout.TOPOLOGY_PATH}
        assert "redis-sentinel-streams" in (config_repo / layout.TOPOLOGY_PATH).read_text()
        assert verify.verify(config_repo).ok


def raibid(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("value", ["0", "65", " 3", "3\n", "3.0", "x", "1" * 30])
def test_init_nodes_refuses_bad_counts(tmp_path: Path, value: str):
    r = raibid("gitops", "init", str(tmp_path / "c"), "--nodes", value, cwd=tmp_path)
    assert r.returncode == 2 and "--nodes" in r.stderr and "from 1 to 64" in r.stderr, r.stderr
    assert "1" * 30 not in r.stderr and not (tmp_path / "c").exists()


def test_init_nodes_and_count_conflict(tmp_path: Path):
    r = raibid("gitops", "init", str(tmp_path / "c"), "--nodes", "3", "--set", "cluster.nodes.count=2", cwd=tmp_path)
    assert r.returncode == 2 and "--nodes and cluster.nodes.count both give the number of nodes" in r.stderr
    assert not (tmp_path / "c").exists()


def test_set_refuses_an_agent_bigger_than_a_node_and_changes_nothing(config_repo: Path):
    state = git_state(config_repo)
    r = raibid("gitops", "set", "cluster.nodes.count=3", "cluster.capacity.cpu=60", "agents.cpu=24",
               "agents.maxReplicas=2", cwd=config_repo)
    assert r.returncode == 2, r.stderr
    assert "agents.cpu (24) is more than one node offers: cluster.nodes.cpu (20)" in r.stderr
    assert git_state(config_repo) == state


class TestQueueTabShowsWhereTheQueueLives:
    """The TUI's Queue tab: the primary, the replicas (a lagging one stands out), the Sentinels
    and the failovers; a Sentinel set without replicas is called out."""

    def _text(self, redis) -> str:  # type: ignore[no-untyped-def]
        from rich.console import Console

        from raibid_tui.sources.queue import QueueStats
        from raibid_tui.widgets.queue import stats_table

        console = Console(width=160, record=True)
        console.print(stats_table(QueueStats("raibid:jobs", "raibid-agents", "raibid:jobs:dead", redis=redis)))
        return console.export_text()

    def test_sentinel_mode(self):
        from raibid_gitops.queue.stats import Failover, RedisTopology, Replica

        text = self._text(RedisTopology("sentinel", "10.0.0.2:6379", (Replica("10.0.0.1:6379", "online", 9, 0),),
                                        3, 2, (Failover(1_800_000_000.0, "10.0.0.1:6379", "10.0.0.2:6379"),)))
        assert "10.0.0.2:6379  (sentinel, primary)" in text
        assert "10.0.0.1:6379  online, lag 0s" in text
        assert "3 (quorum 2)" in text
        assert "1, last 2027-01-15 08:00:00: 10.0.0.1:6379 → 10.0.0.2:6379" in text

    def test_no_replica_left(self):
        from raibid_gitops.queue.stats import RedisTopology

        text = self._text(RedisTopology("sentinel", "10.0.0.2:6379", (), 3, 2, ()))
        assert "none  (no copy survives losing the primary)" in text and "none seen" in text

    def test_single_mode_and_hostile_fields(self):
        from raibid_gitops.queue.stats import RedisTopology, Replica

        text = self._text(RedisTopology("single", "raibid-redis:6379", (Replica("[b]x" * 50, "online", 0, None),)))
        assert "raibid-redis:6379  (single, primary)" in text and "sentinels" not in text
        assert "[b]x" in text and "[b]x" * 20 not in text  # shown as written, cut short
