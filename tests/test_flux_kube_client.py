"""The Kubernetes client layer against a tiny fake API server (fast unit tests; the real
kube-apiserver is exercised by the *_stack tests): watch relists on 410 Gone, patches retry on
409 Conflict, and API errors become our exceptions naming the object."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from raibid_gitops.clients import kube as kube_mod
from raibid_gitops.clients.kube import Kube, ObjectRef
from raibid_gitops.errors import KubeConflict, KubeError, KubeNotFound
from raibid_gitops.gitops import flux

GROUP = "/apis/kustomize.toolkit.fluxcd.io/v1"
COLLECTION = f"{GROUP}/namespaces/flux-system/kustomizations"


def ks(rv: str, ready: str) -> dict[str, Any]:
    return {"apiVersion": flux.KUSTOMIZE_API, "kind": "Kustomization",
            "metadata": {"name": "raibid-config", "namespace": "flux-system", "resourceVersion": rv,
                         "generation": 1, "uid": "u1"},
            "status": {"observedGeneration": 1,
                       "conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": ""}]}}


class FakeAPI:
    """Scripted answers; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.lists = 0
        self.watches = 0
        self.patches = 0
        self.conflicts_left = 0


def handler_for(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def send_json(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def status(self, code: int, reason: str, message: str) -> None:
            self.send_json(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": message, "code": code})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            q = parse_qs(url.query)
            api.requests.append(("GET", url.path, q))
            if url.path == GROUP:
                self.send_json(200, {"kind": "APIResourceList", "groupVersion": flux.KUSTOMIZE_API, "resources": [
                    {"name": "kustomizations", "kind": "Kustomization", "namespaced": True},
                    {"name": "kustomizations/status", "kind": "Kustomization", "namespaced": True}]})
            elif url.path == COLLECTION and "watch" not in q:
                api.lists += 1
                item = ks(str(10 * api.lists), "Unknown")
                self.send_json(200, {"kind": "KustomizationList", "metadata": {"resourceVersion": str(10 * api.lists)},
                                     "items": [item]})
            elif url.path == COLLECTION:
                api.watches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                if api.watches == 1:
                    # The watch cache lost our version: an ERROR event with 410.
                    events = [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                           "message": "too old resource version"}}]
                else:
                    events = [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "21"}}},
                              {"type": "MODIFIED", "object": ks("22", "True")}]
                for e in events:
                    self.wfile.write(json.dumps(e).encode() + b"\n")
                    self.wfile.flush()
            elif url.path == f"{COLLECTION}/missing":
                self.status(404, "NotFound", 'kustomizations "missing" not found')
            elif url.path == f"{COLLECTION}/forbidden":
                self.status(403, "Forbidden", "user cannot get kustomizations")
            else:
                self.status(404, "NotFound", "no such path")

        def do_PATCH(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            api.requests.append(("PATCH", url.path, parse_qs(url.query)))
            api.patches += 1
            if api.conflicts_left > 0:
                api.conflicts_left -= 1
                self.status(409, "Conflict", "the object has been modified")
                return
            obj = ks("30", "True")
            obj["metadata"]["annotations"] = body.get("metadata", {}).get("annotations", {})
            self.send_json(200, obj)

    return Handler


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[FakeAPI, Kube]]:
    api = FakeAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(api))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
    }))
    client = kube_mod.connect(str(kubeconfig))
    yield api, client
    kube_mod.reset_clients()
    server.shutdown()
    server.server_close()


REF = ObjectRef(flux.KUSTOMIZE_API, "Kustomization", "raibid-config", "flux-system")


class TestWatch:
    def test_relists_after_410_and_resumes_from_bookmarks(self, fake: tuple[FakeAPI, Kube]) -> None:
        api, client = fake
        seen = []
        for obj in client.watch_object(REF, chunk=1):
            if obj is None:
                continue
            seen.append((obj["metadata"]["resourceVersion"], flux.condition(obj, "Ready").status))  # type: ignore[union-attr]
            if flux.is_ready(obj):
                break
        # list (rv 10) -> watch: 410 -> list again (rv 20) -> watch -> MODIFIED rv 22, Ready.
        assert seen == [("10", "Unknown"), ("20", "Unknown"), ("22", "True")]
        assert api.lists == 2 and api.watches == 2
        watches = [q for m, p, q in api.requests if m == "GET" and "watch" in q]
        assert watches[0]["resourceVersion"] == ["10"] and watches[1]["resourceVersion"] == ["20"]
        assert watches[0]["fieldSelector"] == ["metadata.name=raibid-config"]

    def test_wait_for(self, fake: tuple[FakeAPI, Kube]) -> None:
        _, client = fake
        obj = kube_mod.wait_for(client, REF, flux.is_ready, timeout=10)
        assert obj["metadata"]["resourceVersion"] == "22"


class TestErrors:
    def test_not_found_names_the_object(self, fake: tuple[FakeAPI, Kube]) -> None:
        _, client = fake
        ref = ObjectRef(flux.KUSTOMIZE_API, "Kustomization", "missing", "flux-system")
        with pytest.raises(KubeNotFound, match=r"^Kustomization flux-system/missing not found$"):
            client.get(ref)
        assert client.get_or_none(ref) is None

    def test_forbidden_is_readable(self, fake: tuple[FakeAPI, Kube]) -> None:
        _, client = fake
        ref = ObjectRef(flux.KUSTOMIZE_API, "Kustomization", "forbidden", "flux-system")
        with pytest.raises(KubeError, match="not allowed to get Kustomization flux-system/forbidden: user cannot"):
            client.get(ref)

    def test_unknown_kind(self, fake: tuple[FakeAPI, Kube]) -> None:
        _, client = fake
        with pytest.raises(KubeNotFound, match="does not serve kind Nope"):
            client.resource(flux.KUSTOMIZE_API, "Nope")

    def test_unreachable_server(self, tmp_path: Path) -> None:
        kubeconfig = tmp_path / "kc"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
        }))
        client = kube_mod.connect(str(kubeconfig))
        try:
            with pytest.raises(KubeError, match="cannot reach the Kubernetes API"):
                client.get(REF)
        finally:
            kube_mod.reset_clients()


class TestPatch:
    def test_conflict_retried(self, fake: tuple[FakeAPI, Kube]) -> None:
        api, client = fake
        api.conflicts_left = 2
        out = client.annotate(REF, {flux.REQUESTED_AT: "now"})
        assert out["metadata"]["annotations"] == {flux.REQUESTED_AT: "now"}
        assert api.patches == 3

    def test_conflict_gives_up(self, fake: tuple[FakeAPI, Kube]) -> None:
        api, client = fake
        api.conflicts_left = 100
        with pytest.raises(KubeConflict, match="kept changing"):
            client.annotate(REF, {flux.REQUESTED_AT: "now"})
        assert api.patches == kube_mod.PATCH_RETRIES
