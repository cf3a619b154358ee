"""One contract: the rendered ScaledJob trigger, the ConfigMap and the runtime names agree."""

from __future__ import annotations

from pathlib import Path

from raibid_gitops import contract
from raibid_gitops.gitops import generate, kustomize, layout
from raibid_gitops.settings import load_text


def rendered(root: Path) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in kustomize.build_objects(root / layout.OVERLAY_DIR)}


def check_agreement(root: Path) -> None:
    objs = rendered(root)
    cm = objs[("ConfigMap", contract.SETTINGS_CONFIGMAP)]
    settings = load_text(cm["data"][contract.SETTINGS_KEY])
    ns = settings.cluster.namespace
    assert cm["metadata"]["namespace"] == ns
    sj = objs[("ScaledJob", contract.AGENT_NAME)]
    trig = sj["spec"]["triggers"][0]
    assert trig["type"] == "redis-streams"
    md = trig["metadata"]
    assert md["address"] == settings.queue.redis_address
    assert md["stream"] == settings.queue.stream
    assert md["consumerGroup"] == settings.queue.consumer_group
    assert md["lagCount"] == str(settings.scaling.lag_count)
    assert md["activationLagCount"] == str(settings.scaling.activation_lag_count)
    auth = objs[("TriggerAuthentication", trig["authenticationRef"]["name"])]
    assert auth["spec"]["secretTargetRef"][0] == {"parameter": "password", "name": contract.REDIS_SECRET,
                                                 "key": contract.REDIS_SECRET_KEY}
    assert sj["spec"]["maxReplicaCount"] == settings.agents.max_replicas
    assert sj["spec"]["minReplicaCount"] == settings.agents.min_replicas
    assert sj["spec"]["rollout"]["strategy"] == "gradual"
    job = sj["spec"]["jobTargetRef"]
    assert job["activeDeadlineSeconds"] == settings.agents.job_timeout_seconds
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAIBID_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": contract.REDIS_SECRET,
                                                                         "key": contract.REDIS_SECRET_KEY}
    vol = {v["name"]: v for v in pod["volumes"]}
    assert vol["settings"]["configMap"]["name"] == contract.SETTINGS_CONFIGMAP
    mount = next(m for m in container["volumeMounts"] if m["name"] == "settings")
    assert "subPath" not in mount, "the kubelet only updates whole-directory ConfigMap mounts"
    # The restricted profile.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    role = objs[("Role", "raibid-settings-reader")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [contract.SETTINGS_CONFIGMAP], "verbs": ["get", "list", "watch"]}]
    rb = objs[("RoleBinding", "raibid-agent-settings-reader")]
    assert rb["subjects"][0]["namespace"] == ns
    assert objs[("Namespace", ns)]
    redis_args = objs[("StatefulSet", contract.REDIS_NAME)]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    gpus = settings.agents.gpus
    limits = container["resources"]["limits"]
    if gpus:
        assert pod["runtimeClassName"] == "nvidia" and limits["nvidia.com/gpu"] == str(gpus)
    else:
        assert "runtimeClassName" not in pod and "nvidia.com/gpu" not in limits
    # No secret value anywhere in the rendered output.
    assert not [o for o in objs.values() if o["kind"] == "Secret"]
    # The agent the ScaledJob runs understands what the manifest hands it.
    from raibid_agent.main import DEFAULT_GITEA_TOKEN_FILE, build_parser
    from raibid_gitops.clients.redis import PASSWORD_ENV

    args = build_parser().parse_args(container["args"])
    assert args.once and args.settings_dir == mount["mountPath"]
    assert PASSWORD_ENV in env
    token_file = env["RAIBID_GITEA_TOKEN_FILE"]["value"]
    assert token_file == DEFAULT_GITEA_TOKEN_FILE
    token_mount = next(m for m in container["volumeMounts"] if m["name"] == "gitea-token")
    assert token_file.startswith(token_mount["mountPath"] + "/")
    assert vol["gitea-token"]["secret"]["secretName"] == contract.GITEA_SECRET


def test_defaults_agree(config_repo: Path):
    check_agreement(config_repo)


def test_changed_settings_still_agree(tmp_path: Path):
    root = generate.init(tmp_path / "c", assignments=[
        "cluster.namespace=ci-two", "queue.redisAddress=raibid-redis.ci-two.svc.cluster.local:6380",
        "queue.stream=ci:jobs", "queue.consumerGroup=ci-agents", "scaling.lagCount=3", "agents.gpus=1",
        "agents.maxReplicas=4", "cluster.nodes.gpus=4",
    ]).path
    check_agreement(root)


def test_configmap_has_no_name_hash(config_repo: Path):
    assert ("ConfigMap", contract.SETTINGS_CONFIGMAP) in rendered(config_repo)


def test_redis_durability_flags_match_the_docs(project_root: Path):
    """docs/agent-and-queue.md names Redis's durability flags as `flag value`; base/redis.yaml
    must run exactly those (a doc that promises less fsyncing than the manifest, or more, misleads
    whoever reasons about what a crash can lose)."""
    import re

    from ruamel.yaml import YAML

    docs = (project_root / "docs" / "agent-and-queue.md").read_text()
    claimed = dict(re.findall(r"`(appendonly|appendfsync|maxmemory-policy) ([\w-]+)`", docs))
    assert set(claimed) == {"appendonly", "appendfsync", "maxmemory-policy"}, claimed

    docs_yaml = list(YAML(typ="safe").load_all((project_root / "base" / "redis.yaml").read_text()))
    sts = next(d for d in docs_yaml if d["kind"] == "StatefulSet")
    (container,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"]
    args = [str(a) for a in container["args"]]
    flags = {a[2:]: v for a, v in zip(args, args[1:], strict=False) if a.startswith("--")}
    assert {k: flags.get(k) for k in claimed} == claimed
    assert claimed["appendfsync"] == "always", "the safer choice: an acknowledged write survives a node crash"
