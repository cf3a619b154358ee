"""Regenerate raibid_gitops/schemas/: JSON Schemas of every kind the overlay renders.

Sources (no network): the Kubernetes OpenAPI v3 documents in the k8s.io/kubernetes module,
and the CRDs collected by the stack build (Flux, KEDA). Each output file is self-contained
($refs rewritten to #/$defs) and strict: an object with declared properties refuses unknown
ones, because the API server would silently prune them from a CRD and a typo like
``maxReplicaCont`` would go unnoticed.

    python scripts/gen_schemas.py  # after `raibid-devstack build`
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from raibid_gitops.devstack import versions

OUT = Path(__file__).resolve().parent.parent / "raibid_gitops" / "schemas"

BUILTINS = {
    # (apiVersion, kind): (openapi file, schema name)
    ("v1", "Namespace"): ("api__v1_openapi.json", "io.k8s.api.core.v1.Namespace"),
    ("v1", "Service"): ("api__v1_openapi.json", "io.k8s.api.core.v1.Service"),
    ("v1", "ConfigMap"): ("api__v1_openapi.json", "io.k8s.api.core.v1.ConfigMap"),
    ("v1", "Secret"): ("api__v1_openapi.json", "io.k8s.api.core.v1.Secret"),
    ("v1", "ServiceAccount"): ("api__v1_openapi.json", "io.k8s.api.core.v1.ServiceAccount"),
    ("apps/v1", "StatefulSet"): ("apis__apps__v1_openapi.json", "io.k8s.api.apps.v1.StatefulSet"),
    ("apps/v1", "Deployment"): ("apis__apps__v1_openapi.json", "io.k8s.api.apps.v1.Deployment"),
    ("batch/v1", "Job"): ("apis__batch__v1_openapi.json", "io.k8s.api.batch.v1.Job"),
    ("rbac.authorization.k8s.io/v1", "Role"):
        ("apis__rbac.authorization.k8s.io__v1_openapi.json", "io.k8s.api.rbac.v1.Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"):
        ("apis__rbac.authorization.k8s.io__v1_openapi.json", "io.k8s.api.rbac.v1.RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"):
        ("apis__networking.k8s.io__v1_openapi.json", "io.k8s.api.networking.v1.NetworkPolicy"),
}
CRDS = {
    "keda.sh_scaledjobs.yaml", "keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml",
    "source.toolkit.fluxcd.io_gitrepositories.yaml", "kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    "notification.toolkit.fluxcd.io_receivers.yaml", "notification.toolkit.fluxcd.io_providers.yaml",
    "notification.toolkit.fluxcd.io_alerts.yaml",
}


def strict(node):
    if isinstance(node, dict):
        if (
            "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def rewrite_refs(node, seen: set[str]):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            seen.add(name)
            node["$ref"] = "#/$defs/" + name
        for v in node.values():
            rewrite_refs(v, seen)
    elif isinstance(node, list):
        for v in node:
            rewrite_refs(v, seen)


def builtin_schema(doc: dict, name: str, api_version: str, kind: str) -> dict:
    schemas = doc["components"]["schemas"]
    defs: dict[str, dict] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if n in defs:
            continue
        s = copy.deepcopy(schemas[n])
        found: set[str] = set()
        rewrite_refs(s, found)
        defs[n] = s
        todo.extend(found - defs.keys())
    root = {"$ref": f"#/$defs/{name}"}
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{api_version} {kind}",
           "allOf": [root], "$defs": defs}
    # apiVersion and kind must be exactly these (the file is chosen by them).
    strict(defs)
    return out


def main() -> int:
    k8s = json.loads(subprocess.check_output(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.K8S_VERSION}"], text=True))["Dir"]
    spec_dir = Path(k8s) / "api" / "openapi-spec" / "v3"
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    index = {}
    for (api_version, kind), (fname, name) in BUILTINS.items():
        doc = json.loads((spec_dir / fname).read_text())
        schema = builtin_schema(doc, name, api_version, kind)
        fn = f"{api_version.replace('/', '_')}_{kind}.json"
        (OUT / fn).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
        index[f"{api_version}/{kind}"] = fn
    yaml = YAML(typ="safe", pure=True)
    crd_dir = versions.crd_dir()
    for f in sorted(CRDS):
        crd = yaml.load((crd_dir / f).read_text())
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for ver in crd["spec"]["versions"]:
            if not ver.get("served", True) or ver.get("deprecated"):
                continue
            s = strict(copy.deepcopy(ver["schema"]["openAPIV3Schema"]))
            # Object metadata is validated by the API server, not the CRD schema.
            s.setdefault("properties", {})["metadata"] = {"type": "object"}
            s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            s["title"] = f"{group}/{ver['name']} {kind}"
            fn = f"{group}_{ver['name']}_{kind}.json"
            (OUT / fn).write_text(json.dumps(s, separators=(",", ":"), sort_keys=True))
            index[f"{group}/{ver['name']}/{kind}"] = fn
    sources = {"kubernetes": versions.K8S_VERSION,
               **{c.name: c.version for c in versions.COMPONENTS if c.name.endswith("controller")},
               "keda": versions.KEDA_MODULE[1]}
    (OUT / "index.json").write_text(json.dumps({"sources": sources, "kinds": index}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(index)} schemas to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
