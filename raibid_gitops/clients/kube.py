"""The Kubernetes API through the official client, with our errors and one client per context.

- One ``ApiClient`` per (kubeconfig, context): :func:`connect` caches them, so the CLI, the
  TUI and ``sync`` share connections instead of re-reading the kubeconfig per call.
- Flux objects are custom resources (``CustomObjectsApi``); other objects (for ``diff``) go
  through a small discovery cache (group/version -> kind -> plural, namespaced) and raw calls.
- Watches list first, then watch from the list's resourceVersion, and relist on 410 Gone:
  nothing that happened between the list and the watch is missed.
- Every ``ApiException`` / connection failure is turned into :class:`KubeError` (or
  :class:`KubeNotFound`, :class:`KubeConflict`) with a message naming the object, e.g.
  ``Kustomization flux-system/raibid-config not found``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import KubeConflict, KubeError, KubeNotFound

if TYPE_CHECKING:  # pragma: no cover
    from kubernetes.client import ApiClient

#: Retries of a patch refused with 409 Conflict (someone else wrote the object meanwhile).
#: A merge patch without a resourceVersion rarely conflicts; 5 tries covers a busy controller.
PATCH_RETRIES = 5
#: Longest part of an API error body shown in a message: the rest is noise for a user.
MAX_ERROR_BODY = 600
#: A server-side watch is closed by us after this many seconds at most and resumed from the
#: last resourceVersion; it bounds how stale the "elapsed" progress line can get.
WATCH_CHUNK_SECONDS = 10
#: Field manager used for raibid's own writes (annotations, suspend).
FIELD_MANAGER = "raibid-gitops"


@dataclass(frozen=True)
class ObjectRef:
    """Names one object: enough to say what failed, and to find it."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("name", "")),
                   meta.get("namespace"))


#: (apiVersion, kind) -> (plural, namespaced) of built-in kinds: fixed by Kubernetes, so no
#: discovery round trip is spent on them (custom resources are discovered: their CRD may be
#: missing, and discovery says so).
BUILTIN_RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Event"): ("events", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "Node"): ("nodes", False),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("batch/v1", "Job"): ("jobs", True),
}


@dataclass(frozen=True)
class Resource:
    """What discovery says about a kind: its URL segment and whether it is namespaced."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


# --- errors ----------------------------------------------------------------------------------


def _body_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        text = str(body).strip()
    else:
        text = str(data.get("message") or body) if isinstance(data, dict) else str(body)
    return text if len(text) <= MAX_ERROR_BODY else text[:MAX_ERROR_BODY] + " ..."


def translate(exc: BaseException, what: str, *, verb: str = "") -> KubeError:
    """One place mapping client failures to our exceptions; ``what`` names the object."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        detail = _body_message(exc.body) or str(exc.reason or "").strip()
        if status == 404:
            return KubeNotFound(f"{what} not found", status=404)
        if status == 409:
            return KubeConflict(f"{what} changed meanwhile ({detail})", status=409)
        if status in (401, 403):
            return KubeError(f"not allowed to {verb or 'access'} {what}: {detail}", status=status,
                             hint="check the kubeconfig's user and its RBAC permissions")
        if status == 0:
            return KubeError(f"cannot reach the Kubernetes API for {what}: {detail}")
        return KubeError(f"{verb + ' ' if verb else ''}{what} failed ({status}): {detail}", status=status)
    if isinstance(exc, ConfigException):
        return KubeError(f"cannot load the Kubernetes configuration: {exc}",
                         hint="pass --kubeconfig/--context, or set KUBECONFIG")
    # urllib3 / socket errors: the API server is down or unreachable.
    return KubeError(f"cannot reach the Kubernetes API for {what}: {type(exc).__name__}: {exc}",
                     hint="is the cluster running, and is the kubeconfig's server address right?")


@contextmanager
def _errors(what: str, verb: str = "") -> Iterator[None]:
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        yield
    except (ApiException, ConfigException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, what, verb=verb) from exc


# --- connections -------------------------------------------------------------------------------

_clients: dict[tuple[str | None, str | None], Kube] = {}


def connect(kubeconfig: str | None = None, context: str | None = None) -> Kube:
    """The client for (kubeconfig, context), made once per process.

    ``kubeconfig`` None means ``$KUBECONFIG`` (colon-separated list allowed) or
    ``~/.kube/config``; inside a Pod with neither, the in-cluster service account.
    """
    # Keyed by the file actually used, so a changed $KUBECONFIG gets its own client.
    key = (kubeconfig or os.environ.get("KUBECONFIG"), context)
    if key not in _clients:
        _clients[key] = Kube(_new_api_client(kubeconfig, context), context=context)
    return _clients[key]


def _new_api_client(kubeconfig: str | None, context: str | None) -> ApiClient:
    import kubernetes

    # The kubernetes package is untyped; keep its Any out of our signatures.
    client: Any = kubernetes.client
    config: Any = kubernetes.config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    default = os.path.expanduser("~/.kube/config")
    with _errors("the kubeconfig"):
        if not path and not os.path.exists(default) and os.environ.get("KUBERNETES_SERVICE_HOST"):
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            api: ApiClient = client.ApiClient(cfg)
            return api
        if path and not any(os.path.exists(p) for p in path.split(os.pathsep)):
            raise KubeError(f"kubeconfig {path} does not exist",
                            hint="pass --kubeconfig PATH or set KUBECONFIG")
        made: ApiClient = config.new_client_from_config(config_file=path or None, context=context)
        return made


def reset_clients() -> None:
    """Forget cached clients (tests that start a new cluster under the same kubeconfig path)."""
    for kube in _clients.values():
        kube.close()
    _clients.clear()


class Kube:
    """A connection to one cluster context."""

    def __init__(self, api_client: ApiClient, context: str | None = None):
        self.api_client = api_client
        self.context = context
        self._resources: dict[str, dict[str, Resource]] = {}

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    def close(self) -> None:
        api: Any = self.api_client
        # Closing a connection pool must never mask the real outcome of a command.
        with suppress(Exception):
            api.close()

    # -- raw calls ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None,
              body: Any = None, content_type: str = "application/json", timeout: Any = 60) -> Any:
        """Send one request; returns the raw urllib3 response (body unread) or raises
        ApiException for a non-2xx status. Works with the client before and after its move
        to the new OpenAPI generator (v35), whose ``call_api`` signature differs."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        client: Any = self.api_client
        if hasattr(client, "param_serialize"):
            req = client.param_serialize(method, path, query_params=list(query or []), header_params=headers,
                                         body=body, auth_settings=["BearerToken"])
            resp = client.call_api(*req, _request_timeout=timeout)
            if not 200 <= resp.status <= 299:
                resp.read()
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
            return resp.response
        return client.call_api(  # pragma: no cover - kubernetes < 35
            path, method, query_params=list(query or []), header_params=headers, body=body,
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
            _request_timeout=timeout,
        )

    def request(self, method: str, path: str, *, what: str, verb: str = "", query: list[tuple[str, Any]] | None = None,
                body: Any = None, content_type: str = "application/json", timeout: float = 60) -> Any:
        """One API call; returns the decoded JSON body."""
        with _errors(what, verb):
            resp = self._send(method, path, query=query, body=body, content_type=content_type, timeout=timeout)
            data = resp.data
        return json.loads(data) if data else None

    # -- discovery ---------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> Resource:
        """Plural and scope of ``kind`` in ``api_version`` (one discovery call per group/version;
        none for the built-in kinds raibid reads, whose names every API server has)."""
        builtin = BUILTIN_RESOURCES.get((api_version, kind))
        if builtin is not None:
            return Resource(api_version, kind, builtin[0], builtin[1])
        if api_version not in self._resources:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                data = self.request("GET", path, what=f"API group {api_version}")
            except KubeNotFound as exc:
                raise KubeNotFound(f"the cluster does not serve {api_version}",
                                   hint="is its CRD installed?", status=404) from exc
            found: dict[str, Resource] = {}
            for r in data.get("resources", []):
                if "/" in r["name"]:
                    continue  # subresources such as status, scale
                found[r["kind"]] = Resource(api_version, r["kind"], r["name"], bool(r.get("namespaced")))
            self._resources[api_version] = found
        try:
            return self._resources[api_version][kind]
        except KeyError as exc:
            raise KubeNotFound(f"the cluster does not serve kind {kind} in {api_version}", status=404) from exc

    # -- generic objects ---------------------------------------------------------------------

    def get(self, ref: ObjectRef) -> dict[str, Any]:
        res = self.resource(ref.api_version, ref.kind)
        return self.request("GET", res.path(ref.namespace, ref.name), what=str(ref), verb="get")

    def get_or_none(self, ref: ObjectRef) -> dict[str, Any] | None:
        try:
            return self.get(ref)
        except KubeNotFound:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> dict[str, Any]:
        res = self.resource(api_version, kind)
        where = f" in namespace {namespace}" if namespace else ""
        query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
        return self.request("GET", res.path(namespace), what=f"{res.plural}{where}", verb="list", query=query)

    def patch(self, ref: ObjectRef, patch: Mapping[str, Any], *, verb: str = "patch") -> dict[str, Any]:
        """JSON merge patch, retried on 409 Conflict."""
        res = self.resource(ref.api_version, ref.kind)
        last: KubeConflict | None = None
        for attempt in range(PATCH_RETRIES):
            try:
                return self.request(
                    "PATCH", res.path(ref.namespace, ref.name), what=str(ref), verb=verb, body=dict(patch),
                    content_type="application/merge-patch+json", query=[("fieldManager", FIELD_MANAGER)],
                )
            except KubeConflict as exc:
                last = exc
                # Back off a little more each time: the other writer is usually a controller
                # finishing its status update within milliseconds.
                if attempt + 1 < PATCH_RETRIES:
                    time.sleep(0.05 * (2 ** attempt))
        assert last is not None
        raise KubeConflict(f"{ref} kept changing; gave up after {PATCH_RETRIES} tries ({last.message})", status=409)

    def annotate(self, ref: ObjectRef, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        return self.patch(ref, {"metadata": {"annotations": dict(annotations)}}, verb="annotate")

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER,
              force: bool = False) -> dict[str, Any]:
        """Server-side apply of ``obj``; an apply that changes nothing leaves the object (and its
        resourceVersion) as it was."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        query: list[tuple[str, Any]] = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self.request(
            "PATCH", res.path(ref.namespace if res.namespaced else None, ref.name), what=str(ref),
            verb="apply", body=dict(obj), content_type="application/apply-patch+yaml", query=query,
        )

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``obj``; KubeConflict (409) when it exists already."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        return self.request("POST", res.path(ref.namespace if res.namespaced else None), what=str(ref),
                            verb="create", body=dict(obj))

    def apply_dry_run(self, obj: Mapping[str, Any], *, field_manager: str, force: bool = True) -> dict[str, Any]:
        """Server-side apply with ``dryRun=All``: what the object would become, admission and
        defaulting included, without changing anything."""
        ref = ObjectRef.of(obj)
        res = self.resource(ref.api_version, ref.kind)
        query: list[tuple[str, Any]] = [("dryRun", "All"), ("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return self.request(
            "PATCH", res.path(ref.namespace if res.namespaced else None, ref.name), what=str(ref),
            verb="dry-run apply", body=dict(obj), content_type="application/apply-patch+yaml",
            query=query,
        )

    # -- watching ------------------------------------------------------------------------------

    def watch(self, api_version: str, kind: str, namespace: str | None = None, *, field_selector: str = "",
              label_selector: str = "", chunk: float = WATCH_CHUNK_SECONDS, deadline: float | None = None,
              cancel: Cancel | None = None, what: str | None = None,
              since: str | None = None) -> Iterator[WatchEvent]:
        """The one list-and-watch loop every reader uses (sync, status, the TUI, the agent).

        Lists first (a ``SYNC`` event carrying every object, keyed by uid), then watches from
        the list's resourceVersion; each change is an ``ADDED``/``MODIFIED``/``DELETED``
        event. When the server says the version is too old (410 Gone, as an ERROR event or an
        HTTP answer) it lists again at once — a new ``SYNC`` — so nothing that happened between
        two watches is missed. A watch request lasts at most ``chunk`` seconds; one that ends
        with no event yields ``TICK`` (so callers can check deadlines or refresh progress).
        Ends when ``cancel`` is set (which also closes the open response) or, after a TICK,
        when ``deadline`` (time.monotonic) has passed. Other failures raise KubeError.
        ``since``: a resourceVersion the caller has listed already; the first request is then
        a watch from it, not a list.
        """
        res = self.resource(api_version, kind)
        ns = namespace if res.namespaced else None
        what = what or (f"{res.plural}" + (f" in namespace {namespace}" if namespace else ""))
        query = [(k, v) for k, v in (("fieldSelector", field_selector), ("labelSelector", label_selector)) if v]
        rv: str | None = since
        while cancel is None or not cancel.is_set():
            if rv is None:
                data = self.request("GET", res.path(ns), what=what, verb="list", query=query)
                items: dict[str, dict[str, Any]] = {}
                for item in data.get("items") or []:
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    items[str((item.get("metadata") or {}).get("uid", ""))] = item
                rv = str(data["metadata"]["resourceVersion"])
                yield WatchEvent("SYNC", items=items)
            remaining = chunk if deadline is None else max(1.0, min(chunk, deadline - time.monotonic()))
            gone = got_event = False
            for event in self._watch_once(res, ns, query, rv, what=what, timeout=remaining, cancel=cancel):
                typ, obj = event.get("type"), event.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        gone = True
                        break
                    raise KubeError(f"watch of {what} failed: {obj.get('message', obj)}", status=obj.get("code"))
                rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                if typ == "BOOKMARK":
                    continue
                obj.setdefault("apiVersion", api_version)
                obj.setdefault("kind", kind)
                got_event = True
                yield WatchEvent(str(typ), obj=obj)
            if cancel is not None and cancel.is_set():
                return
            if gone:
                rv = None
                continue
            if not got_event:
                yield WatchEvent("TICK")
                if deadline is not None and time.monotonic() >= deadline:
                    return

    def watch_object(self, ref: ObjectRef, *, deadline: float | None = None, chunk: float = WATCH_CHUNK_SECONDS,
                     cancel: Cancel | None = None) -> Iterator[dict[str, Any] | None]:
        """The object now, then every new version of it, until the caller stops iterating; None
        every ``chunk`` seconds without a change. Deletion raises KubeNotFound."""
        for ev in self.watch(ref.api_version, ref.kind, ref.namespace, field_selector=f"metadata.name={ref.name}",
                             chunk=chunk, deadline=deadline, what=str(ref), cancel=cancel):
            if ev.type == "SYNC":
                if not ev.items:
                    raise KubeNotFound(f"{ref} not found", status=404)
                yield next(iter(ev.items.values()))
            elif ev.type == "DELETED":
                raise KubeNotFound(f"{ref} was deleted", status=404)
            elif ev.type == "TICK":
                yield None
            else:
                yield ev.obj

    def watch_list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   chunk: float = WATCH_CHUNK_SECONDS) -> Iterator[dict[str, dict[str, Any]]]:
        """Every object of ``kind`` (in ``namespace``, or all), keyed by uid: the list first,
        then a fresh snapshot after each change. Runs until the caller stops iterating."""
        objects: dict[str, dict[str, Any]] = {}
        for ev in self.watch(api_version, kind, namespace, chunk=chunk):
            if ev.type == "SYNC":
                objects = dict(ev.items or {})
            elif ev.type == "TICK" or ev.obj is None:
                continue
            elif ev.type == "DELETED":
                objects.pop(str(ev.obj["metadata"].get("uid", "")), None)
            else:
                objects[str(ev.obj["metadata"].get("uid", ""))] = ev.obj
            yield dict(objects)

    def _watch_once(self, res: Resource, namespace: str | None, query: Sequence[tuple[str, Any]], rv: str, *,
                    what: str, timeout: float, cancel: Cancel | None = None) -> Iterator[dict[str, Any]]:
        """One watch request: events until the server closes it after ``timeout`` seconds."""
        params: list[tuple[str, Any]] = [
            ("watch", "true"), ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"), ("timeoutSeconds", max(1, int(timeout))), *query,
        ]
        try:
            with _errors(what, "watch"):
                # Client-side guard a bit longer than the server's own timeout.
                resp = self._send("GET", res.path(namespace), query=params, timeout=(10, timeout + 15))
        except KubeError as exc:
            if exc.status == 410:
                # Some servers refuse a too-old resourceVersion with HTTP 410 instead of an
                # ERROR event; the callers treat both alike: list again.
                yield {"type": "ERROR", "object": {"code": 410, "message": exc.message}}
                return
            raise
        if cancel is not None and not cancel.attach(resp):
            resp.close()
            return
        finished = False
        try:
            with _errors(what, "watch"):
                buf = b""
                for chunk in resp.stream(None, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
                if buf.strip():
                    yield json.loads(buf)
                finished = True
        except KubeError:
            if cancel is not None and cancel.is_set():
                return  # the socket was closed under us on purpose
            raise
        except json.JSONDecodeError as exc:
            raise KubeError(f"watch of {what} returned malformed data: {exc}") from exc
        finally:
            if cancel is not None:
                cancel.detach(resp)
            if finished:
                resp.release_conn()  # fully read: the connection can be reused
            else:
                resp.close()  # abandoned mid-stream: never hand a half-read socket back to the pool


@dataclass(frozen=True)
class WatchEvent:
    """One step of :meth:`Kube.watch`: ``SYNC`` (``items``: every object, by uid, after a
    list), ``ADDED``/``MODIFIED``/``DELETED`` (``obj``), or ``TICK`` (a quiet watch request)."""

    type: str
    obj: dict[str, Any] | None = None
    items: dict[str, dict[str, Any]] | None = None


class Cancel:
    """Ends watches from another thread at once: :meth:`set` also closes their open responses
    (a watch otherwise sits in a socket read until the server's timeout)."""

    def __init__(self) -> None:
        import threading

        self._event = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def set(self) -> None:
        self._event.set()
        with self._lock:
            open_ = list(self._open)
        for resp in open_:
            with suppress(Exception):  # closing on the way out must never raise
                resp.shutdown()

    def attach(self, resp: Any) -> bool:
        """Register an open response; False when already cancelled."""
        with self._lock:
            if self._event.is_set():
                return False
            self._open.add(resp)
            return True

    def detach(self, resp: Any) -> None:
        with self._lock:
            self._open.discard(resp)


def wait_for(kube: Kube, ref: ObjectRef, done: Callable[[dict[str, Any]], bool], *, timeout: float) -> dict[str, Any]:
    """Watch ``ref`` until ``done(obj)``; raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for obj in kube.watch_object(ref, deadline=deadline):
        if obj is not None and done(obj):
            return obj
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{ref}: condition not met within {timeout:.0f}s")
    raise AssertionError("unreachable")  # pragma: no cover
