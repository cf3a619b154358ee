"""Pilot tests driving each TUI tab against the real local stack (kube-apiserver, Redis, Gitea),
and the app started by `raibid tui` in tmux, in a real terminal.

Flux objects are created directly in the API server with their status written through the
status subresource (no Flux sync needed); the reconcile test plays the controllers' part by
answering the requestedAt annotation, so the TUI's waiting logic runs against real watches.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from raibid_tui.app import RaibidApp
from raibid_tui.screens.confirm import ConfirmScreen
from raibid_tui.screens.diff import DiffScreen
from raibid_tui.screens.flux_detail import FluxDetailScreen
from raibid_tui.sources import build

pytestmark = pytest.mark.stack

SRC = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KS = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
REV1 = "main@sha1:" + "1111aaaa" * 5
REV2 = "main@sha1:" + "2222bbbb" * 5
CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
SIZE = (170, 40)


def _cond(status: str, reason: str, message: str) -> list[dict]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message,
             "lastTransitionTime": "2026-11-28T00:00:00Z", "observedGeneration": 1}]


class FluxObjects:
    """Create Flux objects in a namespace and write their status like the controllers do."""

    def __init__(self, api_client, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.ns = namespace

    def get(self, kind: tuple[str, str, str], name: str) -> dict:
        return self.api.get_namespaced_custom_object(kind[0], kind[1], self.ns, kind[2], name)

    def set_status(self, kind: tuple[str, str, str], name: str, status: dict) -> dict:
        obj = self.get(kind, name)
        obj["status"] = {"observedGeneration": obj["metadata"].get("generation", 1), **status}
        return self.api.replace_namespaced_custom_object_status(kind[0], kind[1], self.ns, kind[2], name, obj)

    def git_repository(self, name: str, revision: str = REV1) -> dict:
        self.api.create_namespaced_custom_object(*SRC[:2], self.ns, SRC[2], {
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": name},
            "spec": {"interval": "1m", "url": "http://127.0.0.1:1/raibid/raibid-config.git",
                     "ref": {"branch": "main"}}})
        return self.set_status(SRC, name, {
            "artifact": {"revision": revision, "path": "p", "url": "http://x/a.tar.gz", "digest": "sha256:00",
                         "lastUpdateTime": "2026-11-28T00:00:00Z"},
            "conditions": _cond("True", "Succeeded", f"stored artifact for revision '{revision}'")})

    def kustomization(self, name: str, source: str, applied: str = REV1) -> dict:
        self.api.create_namespaced_custom_object(*KS[:2], self.ns, KS[2], {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": name},
            "spec": {"interval": "1m", "path": "./overlays/dgx-spark", "prune": True,
                     "sourceRef": {"kind": "GitRepository", "name": source}}})
        return self.set_status(KS, name, {
            "lastAppliedRevision": applied, "lastAttemptedRevision": applied,
            "conditions": _cond("True", "ReconciliationSucceeded", f"Applied revision: {applied}")})


def _flux_controllers_running() -> bool:
    """Are Flux controllers (children of this pytest) watching the session's API server?"""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and (b"source-controller" in cmdline or b"kustomize-controller" in cmdline):
            return True
    return False


@pytest.fixture(scope="module")
def api_server(request, tmp_path_factory):
    """The API server for tests that write Flux status themselves: the session's ``kube``,
    unless real Flux controllers already watch it (they would overwrite the status we write);
    then one of this module's own."""
    if not _flux_controllers_running():
        yield request.getfixturevalue("kube")
        return
    from raibid_gitops.devstack import processes

    # A bare API server: these tests write the controllers' status themselves.
    stack = processes.start_kube(tmp_path_factory.mktemp("tui-kube"), nodes=0)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def api_client(api_server):
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(api_server.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(api_server) -> str:
    name = f"tui-{uuid.uuid4().hex[:10]}"
    api_server.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def objs(api_client, namespace):
    """A GitRepository and a Kustomization with status; deleted after (a namespace is never
    really deleted here: no namespace controller), so Flux controllers started later in the
    session do not pick them up."""
    o = FluxObjects(api_client, namespace)
    o.git_repository("raibid-config")
    o.kustomization("raibid-config", "raibid-config")
    yield o
    for kind in (KS, SRC):
        try:
            o.api.delete_namespaced_custom_object(*kind[:2], namespace, kind[2], "raibid-config")
        except Exception:  # noqa: BLE001 - already deleted by the test
            pass


def run_async(fn):
    """Run an async test body with asyncio.run (no pytest-asyncio needed); fixtures still
    resolve from the wrapped signature."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def until(pilot, cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def flux_app(kube, namespace: str, *, redis_url: str = CLOSED_PORT_URL, repo: Path | None = None,
             gitea_url: str | None = None, gitea_token: str | None = None) -> RaibidApp:
    sources = build(kubeconfig=str(kube.kubeconfig), namespace=namespace, repo=repo, redis_url=redis_url,
                    gitea_url=gitea_url, gitea_token=gitea_token)
    return RaibidApp(sources)


def ks_row(app: RaibidApp):
    return next((r for r in app.query_one("#flux-panel").rows.values() if r.kind == "Kustomization"), None)


class TestSameActionsAsTheCli:
    """The TUI's suspend, resume and reconcile and the CLI's are one implementation: on two
    identical Kustomizations, each leaves the same object behind (spec, and the reconcile
    request annotation)."""

    def _cli(self, api_server, namespace, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "gitops", *args, "-n", namespace,
                               "--kubeconfig", str(api_server.kubeconfig)], capture_output=True, text=True,
                              timeout=120)

    def _state(self, objs, name: str) -> tuple[dict, list[str]]:
        obj = objs.get(KS, name)
        spec = {k: v for k, v in obj["spec"].items()}
        return spec, sorted((obj["metadata"].get("annotations") or {}).keys())

    def test_suspend_resume_and_reconcile_request(self, api_server, objs, namespace):
        from raibid_gitops.errors import SyncTimeout

        objs.kustomization("by-cli", "raibid-config")
        objs.kustomization("by-tui", "raibid-config")
        source = build(kubeconfig=str(api_server.kubeconfig), namespace=namespace, redis_url=CLOSED_PORT_URL).flux
        rows = {r.name: r for r in source.list("Kustomization")[0]}

        assert self._cli(api_server, namespace, "suspend", "ks", "by-cli").returncode == 0
        source.set_suspended(rows["by-tui"], True)
        assert self._state(objs, "by-cli") == self._state(objs, "by-tui")
        assert objs.get(KS, "by-tui")["spec"]["suspend"] is True

        assert self._cli(api_server, namespace, "resume", "ks", "by-cli").returncode == 0
        source.set_suspended(rows["by-tui"], False)
        cli_state, tui_state = self._state(objs, "by-cli"), self._state(objs, "by-tui")
        assert cli_state == tui_state
        assert "suspend" not in tui_state[0]  # removed, as `flux resume` does, not set to false
        assert "reconcile.fluxcd.io/requestedAt" in tui_state[1]  # and a reconcile requested

        # Reconcile: no controller answers here, so both wait out their timeout after making
        # the same request (on the source first, then the Kustomization).
        before = objs.get(SRC, "raibid-config")["metadata"].get("annotations", {}).get(
            "reconcile.fluxcd.io/requestedAt")
        cli = self._cli(api_server, namespace, "reconcile", "ks", "by-cli", "--timeout", "2s")
        assert cli.returncode == 3, cli.stderr
        with pytest.raises(SyncTimeout):
            source.reconcile(rows["by-tui"], progress=lambda _m: None, timeout=2)
        after = objs.get(SRC, "raibid-config")["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
        assert after != before  # the source was asked (by both, the TUI last)
        assert self._state(objs, "by-cli")[1] == self._state(objs, "by-tui")[1]


class TestFluxTabLive:
    """The Flux tab against kube-apiserver: watches, in-place rows, actions, detail view."""

    @run_async
    async def test_rows_follow_the_watch(self, api_server, objs):
        """Rows appear from one list; a status change updates the same row (keyed by uid) with
        the failing newer commit in ATTEMPTED; a deletion removes the row; no relist happened."""
        app = flux_app(api_server, objs.ns)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one("#flux-panel")
            await until(pilot, lambda: len(panel.rows) == 2, what="two rows")
            ks = ks_row(app)
            assert ks.revision == REV1 and ks.status == "Ready"
            objs.set_status(KS, "raibid-config", {
                "lastAppliedRevision": REV1, "lastAttemptedRevision": REV2,
                "conditions": _cond("False", "BuildFailed", "kustomize build failed")})
            await until(pilot, lambda: ks_row(app).status == "Failed", what="the Failed status")
            row = ks_row(app)
            assert row.uid == ks.uid and row.failing_new_commit
            cells = panel.table.get_row(row.uid)
            assert "⚠ main@2222bbbb" in str(cells[6]) and "BuildFailed" in str(cells[9])
            assert panel.table.row_count == 2
            objs.api.delete_namespaced_custom_object(*SRC[:2], objs.ns, SRC[2], "raibid-config")
            await until(pilot, lambda: len(panel.rows) == 1, what="the deleted row to go")
            assert panel.table.row_count == 1
        assert app.sources.flux.lists == {"GitRepository": 1, "Kustomization": 1}  # one list each, then watches

    @run_async
    async def test_failed_and_waiting_with_commits_apart(self, api_server, objs, config_repo):
        """Issue 17: a Kustomization with Ready=False BuildFailed while Flux retries
        (Reconciling=True) is Failed, not Reconciling; the applied commit and the attempted one
        each show their own subject, in the table and in the detail view; DependencyNotReady
        (transient in the library) is Waiting, not failed."""
        def commit(message: str) -> str:
            settings = config_repo / "overlays/dgx-spark/settings.yaml"
            settings.write_text(settings.read_text() + f"# {message}\n")
            subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message],
                           cwd=config_repo, check=True)
            return subprocess.run(["git", "rev-parse", "HEAD"], cwd=config_repo, capture_output=True, text=True,
                                  check=True).stdout.strip()

        applied, attempted = commit("redis: appendonly yes"), commit("agents: maxReplicas 8 -> 12")
        rev_applied, rev_attempted = f"main@sha1:{applied}", f"main@sha1:{attempted}"
        objs.set_status(KS, "raibid-config", {
            "lastAppliedRevision": rev_applied, "lastAttemptedRevision": rev_attempted,
            "conditions": [
                {"type": "Reconciling", "status": "True", "reason": "ProgressingWithRetry",
                 "message": "Detecting drift for revision", "lastTransitionTime": "2026-11-28T00:00:00Z"},
                *_cond("False", "BuildFailed", "kustomize build failed: accumulating resources")]})
        app = flux_app(api_server, objs.ns, repo=config_repo)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one("#flux-panel")
            await until(pilot, lambda: ks_row(app) is not None and ks_row(app).revision == rev_applied,
                        what="the Kustomization row")
            row = ks_row(app)
            assert (row.status, row.reason) == ("Failed", "BuildFailed") and row.failing_new_commit
            assert (row.subject, row.attempted_subject) == ("redis: appendonly yes", "agents: maxReplicas 8 -> 12")
            cells = [str(c) for c in panel.table.get_row(row.uid)]
            assert cells[3:7] == ["Failed", f"main@{applied[:8]}", "redis: appendonly yes",
                                  f"⚠ main@{attempted[:8]} agents: maxReplicas…"]
            panel.table.move_cursor(row=panel.table.get_row_index(row.uid))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, FluxDetailScreen), what="the detail view")
            lines = str(app.screen.query_one("#detail-fields").render()).splitlines()
            at = next(i for i, line in enumerate(lines) if line.startswith("Applied"))
            assert rev_applied in lines[at] and lines[at + 1].split() == ["commit", "redis:", "appendonly", "yes"]
            assert rev_attempted in lines[at + 2] and "⚠ failed: not applied" in lines[at + 2]
            assert "agents: maxReplicas 8 -> 12" in lines[at + 3]
            await pilot.press("escape")

            objs.set_status(KS, "raibid-config", {
                "lastAppliedRevision": rev_applied, "lastAttemptedRevision": rev_attempted,
                "conditions": _cond("False", "DependencyNotReady", "dependency 'x/infra' is not ready")})
            await until(pilot, lambda: ks_row(app).status != "Failed", what="the status to change")
            row = ks_row(app)
            assert (row.status, row.failed, row.failing_new_commit) == ("Waiting", False, False)
            assert str(panel.table.get_row(row.uid)[6]).startswith(f"… main@{attempted[:8]}")

    @run_async
    async def test_all_namespaces(self, api_server, objs):
        """-A watches every namespace: the test namespace's rows are among them."""
        sources = build(kubeconfig=str(api_server.kubeconfig), all_namespaces=True, redis_url=CLOSED_PORT_URL)
        app = RaibidApp(sources)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one("#flux-panel")
            await until(pilot, lambda: sum(r.namespace == objs.ns for r in panel.rows.values()) == 2,
                        what="the test namespace's rows")
            assert "all namespaces" in app.sub_title

    @run_async
    async def test_suspend_and_resume_are_confirmed(self, api_server, objs):
        """s asks first (n leaves it alone); y suspends through the API; s, y resumes."""
        app = flux_app(api_server, objs.ns)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one("#flux-panel")
            await until(pilot, lambda: len(panel.rows) == 2, what="two rows")
            panel.table.move_cursor(row=panel.table.get_row_index(ks_row(app).uid))
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("n")
            await pilot.pause(0.5)
            assert not objs.get(KS, "raibid-config")["spec"].get("suspend", False)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("y")
            await until(pilot, lambda: ks_row(app).suspended, what="the watch to show it suspended")
            assert objs.get(KS, "raibid-config")["spec"]["suspend"] is True
            await pilot.press("s", "y")
            await until(pilot, lambda: not ks_row(app).suspended, what="resumed")

    @run_async
    async def test_reconcile_waits_until_the_commit_is_applied(self, api_server, objs):
        """r, y annotates the source, then the Kustomization, and reports success only once
        the Kustomization has applied the source's new revision (controllers simulated)."""
        stop = threading.Event()
        steps: list[str] = []

        def controllers() -> None:
            # Answer each requestedAt like source- and kustomize-controller would.
            handled: dict[str, str] = {}
            while not stop.is_set():
                for kind, name in ((SRC, "raibid-config"), (KS, "raibid-config")):
                    obj = objs.get(kind, name)
                    token = (obj["metadata"].get("annotations") or {}).get("reconcile.fluxcd.io/requestedAt")
                    if token and handled.get(kind[2]) != token:
                        handled[kind[2]] = token
                        time.sleep(0.3)
                        if kind is SRC:
                            steps.append("source")
                            objs.set_status(SRC, name, {
                                "lastHandledReconcileAt": token,
                                "artifact": {"revision": REV2, "path": "p", "url": "http://x/b.tar.gz",
                                             "digest": "sha256:01", "lastUpdateTime": "2026-11-28T00:01:00Z"},
                                "conditions": _cond("True", "Succeeded", "stored artifact")})
                        else:
                            steps.append("kustomization")
                            objs.set_status(KS, name, {
                                "lastHandledReconcileAt": token, "lastAppliedRevision": REV2,
                                "lastAttemptedRevision": REV2,
                                "conditions": _cond("True", "ReconciliationSucceeded", f"Applied revision: {REV2}")})
                stop.wait(0.2)

        thread = threading.Thread(target=controllers, daemon=True)
        thread.start()
        app = flux_app(api_server, objs.ns)
        notes: list[str] = []
        try:
            async with app.run_test(size=SIZE) as pilot:
                original = app.notify
                app.notify = lambda message, **kw: (notes.append(str(message)), original(message, **kw))[1]
                panel = app.query_one("#flux-panel")
                await until(pilot, lambda: len(panel.rows) == 2, what="two rows")
                panel.table.move_cursor(row=panel.table.get_row_index(ks_row(app).uid))
                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
                await pilot.press("y")
                await until(pilot, lambda: any("applied main@2222bbbb" in n for n in notes), timeout=30,
                            what="the success notification")
                assert steps == ["source", "kustomization"]
                assert ks_row(app).revision == REV2
        finally:
            stop.set()
            thread.join(5)

    @run_async
    async def test_detail_shows_conditions_and_events(self, api_server, objs):
        """enter opens the detail view: the Ready condition and the object's events."""
        from kubernetes import client

        ks = objs.get(KS, "raibid-config")
        objs.core.create_namespaced_event(objs.ns, client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"raibid-config.{uuid.uuid4().hex[:8]}"),
            involved_object=client.V1ObjectReference(
                api_version="kustomize.toolkit.fluxcd.io/v1", kind="Kustomization", name="raibid-config",
                namespace=objs.ns, uid=ks["metadata"]["uid"]),
            reason="ReconciliationSucceeded", message="Reconciliation finished in 1.2s", type="Normal",
            source=client.V1EventSource(component="kustomize-controller"),
            last_timestamp=ks["metadata"]["creationTimestamp"]))
        app = flux_app(api_server, objs.ns)
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one("#flux-panel")
            await until(pilot, lambda: len(panel.rows) == 2, what="two rows")
            panel.table.move_cursor(row=panel.table.get_row_index(ks["metadata"]["uid"]))
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, FluxDetailScreen), what="the detail view")
            events = app.screen.query_one("#detail-events")
            await until(pilot, lambda: events.row_count == 1, what="the event")
            assert "Reconciliation finished" in str(events.get_row_at(0)[4])
            assert app.screen.query_one("#detail-conditions").row_count == 1
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, FluxDetailScreen), what="closed")


class TestQueueAndAgentsTabs:
    """The Queue and Agents tabs against a real Redis; a dead Redis only banners its tabs."""

    @run_async
    async def test_queue_numbers(self, api_server, namespace, redis_server, redis_client, monkeypatch):
        """Length, lag, pending, oldest pending age and dead letters as Redis reports them;
        throughput counts entries acknowledged between samples."""
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        r = redis_client
        r.xgroup_create("raibid:jobs", "raibid-agents", id="0", mkstream=True)
        for i in range(5):
            r.xadd("raibid:jobs", {"job_id": f"j{i}"})
        got = r.xreadgroup("raibid-agents", "agent-a", {"raibid:jobs": ">"}, count=3)
        r.xack("raibid:jobs", "raibid-agents", got[0][1][0][0])
        r.xadd("raibid:jobs:dead", {"job_id": "old", "reason": "maxDeliveries"})
        app = flux_app(api_server, namespace, redis_url=redis_server.url)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            panel = app.query_one("#queue-panel")
            await until(pilot, lambda: panel.last is not None, what="queue stats")
            s = panel.last
            assert (s.length, s.lag, s.pending, s.dead_letters, s.consumers) == (5, 2, 2, 1, 1)
            assert s.oldest_pending_age is not None and s.oldest_pending_age < 60
            got = r.xreadgroup("raibid-agents", "agent-a", {"raibid:jobs": ">"}, count=2)
            for _, entries in got:
                for entry_id, _ in entries:
                    r.xack("raibid:jobs", "raibid-agents", entry_id)
            await until(pilot, lambda: sum(panel.last.throughput) >= 2, timeout=15, what="throughput")
            assert not app.query_one("#queue-banner").shown

    @run_async
    async def test_jobs_listed(self, api_server, namespace, redis_server, redis_client, agents, monkeypatch):
        """Issue 17: the Queue tab lists the jobs, not only the numbers — id, state, repo, ref,
        commit, agent and age, newest first, from the records the producer and a real agent
        wrote; a new job appears on top without the others being re-added; at most the newest
        50 are listed."""
        from fixtures_redis import wait_until

        from raibid_gitops import contract
        from raibid_gitops.queue import JobSpec, get_job, submit
        from raibid_gitops.settings import defaults

        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        settings = defaults()

        def job(repo: str = "raibid/app", ref: str = "main", commit: str = "") -> str:
            return submit(redis_client, settings, JobSpec(repo=repo, ref=ref, commit=commit,
                                                          checkout=contract.CHECKOUT_NONE)).job_id

        done = job(ref="refs/tags/v1.2.0", commit="0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c")
        agents.spawn(once=True, agent_id="agent-once")
        wait_until(lambda: get_job(redis_client, done).state == contract.STATE_SUCCEEDED, 30, what="the job to run")
        queued = [job(repo="raibid/raibid-config", ref="feature/scaling"), job()]
        app = flux_app(api_server, namespace, redis_url=redis_server.url)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            panel = app.query_one("#queue-panel")
            table = app.query_one("#jobs-table")
            await until(pilot, lambda: table.row_count == 3, what="three jobs")
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(3)]
            assert [r[0] for r in rows] == [queued[1], queued[0], done]  # newest first
            assert rows[1][1:6] == ["queued", "raibid/raibid-config", "feature/scaling", "-", "-"]
            assert rows[2][1:6] == ["succeeded", "raibid/app", "refs/tags/v1.2.0", "0f1e2d3c4b5a", "agent-once"]
            assert rows[2][6].endswith("s")  # an age, from the record's submission time
            newest = job(ref="hotfix")
            await until(pilot, lambda: table.row_count == 4, what="the new job")
            assert [str(table.get_row_at(i)[0]) for i in range(4)] == [newest, queued[1], queued[0], done]
            # Keyed rows: the three were kept (a cleared table would have re-added them after it).
            assert table.keys() == [queued[1], queued[0], done, newest]
            more = [job() for _ in range(55)]
            await until(pilot, lambda: panel.last is not None and panel.last.jobs[0].id == more[-1],
                        what="the 55 new jobs")
            await pilot.pause()
            assert table.row_count == 50 and str(table.get_row_at(0)[0]) == more[-1]
            assert done not in set(table.keys())  # older than the newest 50
            assert panel.last.jobs_error == "" and not app.query_one("#queue-banner").shown

    @run_async
    async def test_malformed_job_record_is_not_an_outage(self, api_server, namespace, redis_server, redis_client,
                                                        monkeypatch):
        """A job record that does not parse (anything can write to Redis) says so above the
        jobs list; the numbers stay current and no "Redis unreachable" banner appears."""
        from raibid_gitops import contract

        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        redis_client.zadd(contract.JOBS_INDEX, {"j-bad": 1.0})
        redis_client.hset(contract.job_key("j-bad"), mapping={"state": "queued", "submitted_at": "yesterday"})
        app = flux_app(api_server, namespace, redis_url=redis_server.url)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            panel = app.query_one("#queue-panel")
            await until(pilot, lambda: panel.last is not None, what="the queue")
            assert "could not be read" in panel.last.jobs_error and "ValueError" in panel.last.jobs_error
            assert "cannot list them" in str(app.query_one("#jobs-title").render())
            assert not app.query_one("#queue-banner").shown

    @run_async
    async def test_redis_down_banners_only_its_tabs(self, api_server, objs):
        """With Redis unreachable, Queue and Agents show a banner; Flux keeps its live rows."""
        app = flux_app(api_server, objs.ns, redis_url=CLOSED_PORT_URL)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.query_one("#queue-banner").shown, what="the queue banner")
            await until(pilot, lambda: app.query_one("#agents-banner").shown, what="the agents banner")
            assert "127.0.0.1:1" in str(app.query_one("#queue-banner").render())
            await until(pilot, lambda: len(app.query_one("#flux-panel").rows) == 2, what="flux rows")
            assert not app.query_one("#flux-banner").shown


def _config_repo_in(config_repo: Path, namespace: str) -> str:
    """Point the config repo's settings at ``namespace`` (so its live ConfigMap is the test's
    own), commit, and return the settings text."""
    path = config_repo / "overlays/dgx-spark/settings.yaml"
    text = path.read_text().replace("raibid-ci", namespace)
    path.write_text(text)
    subprocess.run(["git", "commit", "-qam", "settings in the test namespace"], cwd=config_repo, check=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})
    return text


def _open_pull(gitea, full: str, branch: str, title: str) -> dict:
    """Open a PR; Gitea records a pushed branch asynchronously, so retry briefly on 404."""
    from raibid_gitops.devstack.processes import StackError

    deadline = time.monotonic() + 20
    while True:
        try:
            return gitea.api("POST", f"/repos/{full}/pulls", {"head": branch, "base": "main", "title": title})
        except StackError as exc:
            if time.monotonic() > deadline:
                branches = gitea.api("GET", f"/repos/{full}/branches")
                raise AssertionError(f"cannot open a PR; branches: {branches}") from exc
            time.sleep(0.5)


def _agent_watching_configmap(api_server, namespace: str, redis_server, log_path: Path) -> subprocess.Popen:
    """A long-lived real agent reading raibid-settings through the API (`--settings-configmap`),
    as a pod of the pool does; its output goes to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "raibid_agent.main", "--settings-configmap", "-n", namespace, "--kubeconfig",
             str(api_server.kubeconfig), "--redis-url", redis_server.url, "--agent-id", "agent-watching",
             "--gitea-token-file", "/nonexistent"],
            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)


class TestChangesTab:
    """The Changes tab against Gitea, the API server and Redis."""

    @run_async
    async def test_settings_pulls_diff_merge_and_stale_agents(self, api_server, api_client, namespace, gitea,
                                                              gitea_repo, config_repo, redis_server, redis_client,
                                                              monkeypatch):
        """HEAD, live ConfigMap and agents by hash; the open PR with its raibid/verify status;
        enter shows the diff, m and y merge it; an agent on other settings is stale."""
        from kubernetes import client

        from raibid_gitops.settings import load_text

        text = _config_repo_in(config_repo, namespace)
        head_hash = load_text(text).hash()
        client.CoreV1Api(api_client).create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="raibid-settings"), data={"settings.yaml": text}))
        # Publish the repo on Gitea and open a PR that changes a setting.
        gitea_repo.git("remote", "add", "origin", gitea_repo.clone_url, cwd=config_repo)
        gitea_repo.git("push", "-q", "origin", "main", cwd=config_repo)
        gitea_repo.git("checkout", "-qb", "raibid/set-lag", cwd=config_repo)
        settings = config_repo / "overlays/dgx-spark/settings.yaml"
        settings.write_text(settings.read_text().replace("lagCount: 1", "lagCount: 2", 1))
        gitea_repo.git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "scaling: lagCount 1 -> 2",
                       cwd=config_repo)
        head = gitea_repo.git("rev-parse", "HEAD", cwd=config_repo).strip()
        gitea_repo.git("push", "-q", "origin", "raibid/set-lag", cwd=config_repo)
        gitea_repo.git("checkout", "-q", "main", cwd=config_repo)
        full = f"{gitea_repo.owner}/{gitea_repo.name}"
        pr = _open_pull(gitea, full, "raibid/set-lag", "scaling: lagCount 1 -> 2")
        gitea.api("POST", f"/repos/{full}/statuses/{head}",
                  {"state": "success", "context": "raibid/verify", "description": "verify passed"})
        # Two agents: one on the live settings, one on older ones.
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        now = f"{time.time():.3f}"
        redis_client.hset("raibid:agent:a-current", mapping={"state": "idle", "settings_hash": head_hash,
                                                             "updated_at": now})
        redis_client.hset("raibid:agent:b-old", mapping={"state": "running", "job": "j7",
                                                         "settings_hash": "sha256:0000000000000000",
                                                         "updated_at": now})

        app = flux_app(api_server, namespace, redis_url=redis_server.url, repo=config_repo,
                       gitea_url=gitea.url, gitea_token=gitea.token)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            panel = app.query_one("#changes-panel")
            await until(pilot, lambda: panel.last is not None and panel.last.pulls, timeout=30, what="PRs")
            snap = panel.last
            assert not snap.errors, snap.errors
            by_where = {s.where: s.hash for s in snap.settings if s.where != "agents"}
            assert by_where == {"config repo HEAD": head_hash, "live ConfigMap": head_hash}
            assert {s.hash for s in snap.settings if s.where == "agents"} == {head_hash, "sha256:0000000000000000"}
            (row,) = snap.pulls
            assert (row.number, row.verify) == (pr["number"], "success")

            await pilot.press("4")
            agents = app.query_one("#agents-panel")
            await until(pilot, lambda: agents.last and any(a.stale for a in agents.last), what="a stale agent")
            assert [a.id for a in agents.last if a.stale] == ["b-old"]

            await pilot.press("2")
            app.query_one("#pulls-table").focus()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DiffScreen), what="the diff view")
            assert "lagCount: 2" in app.screen.diff
            await pilot.press("m")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the merge confirmation")
            await pilot.press("y")
            await until(pilot, lambda: gitea.api("GET", f"/repos/{full}/pulls/{pr['number']}")["merged"],
                        timeout=30, what="the merge")
            await until(pilot, lambda: not panel.last.pulls, timeout=30, what="the PR to leave the list")


    @run_async
    async def test_invalid_settings_refused_then_fixed(self, api_server, api_client, namespace, config_repo,
                                                       redis_server, redis_client, monkeypatch, tmp_path):
        """Issue 17, with a real agent watching the live ConfigMap: a commit that breaks a
        cross-field rule reaches the ConfigMap (as Flux applies it); the Changes tab shows HEAD
        and the live ConfigMap as "does not validate" (no "backend unreachable" banner) and the
        agent as having refused the live settings (not "= HEAD"); the Agents tab shows the
        refusal. After the fix reaches the ConfigMap, the next refresh shows every place valid
        and the agent on the fixed settings again — no restart."""
        from kubernetes import client

        from raibid_gitops.settings import load_text, text_digest

        good = _config_repo_in(config_repo, namespace)
        bad = good.replace("heartbeatSeconds: 15", "heartbeatSeconds: 200")
        assert bad != good
        core = client.CoreV1Api(api_client)
        core.create_namespaced_config_map(namespace, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="raibid-settings"), data={"settings.yaml": good}))

        def apply(text: str, message: str) -> None:
            """Commit the settings and put them in the live ConfigMap, as `sync` + Flux do."""
            (config_repo / "overlays/dgx-spark/settings.yaml").write_text(text)
            subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message],
                           cwd=config_repo, check=True)
            core.patch_namespaced_config_map("raibid-settings", namespace, {"data": {"settings.yaml": text}})

        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        agent = _agent_watching_configmap(api_server, namespace, redis_server, tmp_path / "agent.log")
        good_hash = load_text(good).hash()
        try:
            app = flux_app(api_server, namespace, redis_url=redis_server.url, repo=config_repo)
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("2")
                panel = app.query_one("#changes-panel")
                table = app.query_one("#settings-table")

                async def refresh_until(cond, what: str) -> None:
                    deadline = time.monotonic() + 30
                    while not (panel.last is not None and cond(panel.last)):
                        if agent.poll() is not None:
                            raise AssertionError(f"the agent exited: {(tmp_path / 'agent.log').read_text()[-2000:]}")
                        if time.monotonic() > deadline:
                            raise AssertionError(f"timed out waiting for {what}: {panel.last}")
                        await pilot.press("R")
                        await pilot.pause(0.3)

                def states(snap) -> dict:
                    return {(s.where, s.hash, s.refused) for s in snap.settings}

                await refresh_until(lambda snap: states(snap) == {
                    ("config repo HEAD", good_hash, ""), ("live ConfigMap", good_hash, ""),
                    ("agents", good_hash, "")}, "the agent on HEAD's settings")

                apply(bad, "raibid: set queue.heartbeatSeconds 15 → 200")
                digest = text_digest(bad)
                await refresh_until(lambda snap: any(s.refused == digest for s in snap.settings),
                                    "the agent to refuse the new settings")
                snap = panel.last
                assert snap.errors == () and not app.query_one("#changes-banner").shown
                head, live, agents = snap.settings
                assert (head.invalid != "", head.digest, live.invalid != "", live.digest) == \
                    (True, digest, True, digest)
                assert (agents.hash, agents.refused) == (good_hash, digest)
                assert [str(table.get_row_at(i)[2]) for i in range(table.row_count)] == [
                    "✘ does not validate", "✘ does not validate", "✘ refused the live settings"]
                assert "queue.claimIdleSeconds" in str(app.query_one("#settings-problems").render())
                await pilot.press("4")
                agents_panel = app.query_one("#agents-panel")
                await until(pilot, lambda: agents_panel.last and agents_panel.last[0].refused == digest,
                            what="the refusal in the Agents tab")
                refused_cell = str(app.query_one("#agents-table").get_row("agent-watching")[4])
                assert refused_cell.startswith(f"✘ {digest.split(':')[1][:12]}: ")
                assert "claimIdleSeconds" in refused_cell

                apply(good, "raibid: set queue.heartbeatSeconds 200 → 15")
                await pilot.press("2")
                await refresh_until(lambda snap: states(snap) == {
                    ("config repo HEAD", good_hash, ""), ("live ConfigMap", good_hash, ""),
                    ("agents", good_hash, "")}, "every place valid again")
                assert [str(table.get_row_at(i)[2]) for i in range(table.row_count)] == ["✔ valid", "= HEAD", "= HEAD"]
                assert not app.query_one("#settings-problems").display
                assert not app.query_one("#changes-banner").shown
        finally:
            agent.terminate()
            agent.wait(15)


@pytest.fixture
def tmux() -> str:
    """The tmux binary; missing, it is a failure (never a skip: the terminal test would prove nothing)."""
    path = shutil.which("tmux")
    if not path:
        pytest.fail("tmux is not installed (apt-get install tmux; .ci/run does it)", pytrace=False)
    return path


class TestInTmux:
    """`raibid tui` in a real terminal (tmux), its screen captured."""

    def test_screen_shows_the_kustomization_and_revision(self, tmux, api_server, objs, tmp_path):
        """The captured pane has the Kustomization row with its short revision; q quits cleanly."""
        session = f"raibid-tui-{uuid.uuid4().hex[:8]}"
        raibid = Path(sys.executable).with_name("raibid")
        cmd = (f"cd {tmp_path} && RAIBID_REDIS_URL={CLOSED_PORT_URL} {raibid} tui "
               f"--kubeconfig {api_server.kubeconfig} -n {objs.ns}; echo EXIT=$? > {tmp_path}/exit; sleep 30")
        subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "170", "-y", "40", cmd], check=True)
        try:
            screen = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                                        text=True).stdout
                if "Kustomization" in screen and "main@1111aaaa" in screen:
                    break
                time.sleep(0.5)
            line = next((ln for ln in screen.splitlines() if "Kustomization" in ln and "raibid-config" in ln), "")
            assert "main@1111aaaa" in line and "Ready" in line, screen
            assert "Traceback" not in screen
            subprocess.run([tmux, "send-keys", "-t", session, "q"], check=True)
            quit_at = time.monotonic()
            while time.monotonic() - quit_at < 15 and not (tmp_path / "exit").exists():
                time.sleep(0.1)
            assert (tmp_path / "exit").read_text().strip() == "EXIT=0"
            # The watches are unblocked on quit: no wait for a watch timeout.
            assert time.monotonic() - quit_at < 5
        finally:
            subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)


class TestWithFluxControllers:
    """The Flux tab with the real source- and kustomize-controllers and Gitea."""

    @run_async
    async def test_reconcile_applies_the_pushed_commit(self, kube, flux, gitea, gitea_repo, kube_client,
                                                       kube_namespace, tmp_path):
        """A commit pushed to Gitea; r, y: the TUI waits until Flux applied exactly that commit
        (long intervals, so only the TUI's request makes Flux look), and the object changed."""
        from kubernetes import client

        from raibid_gitops.gitops import flux as fluxlib

        ns = kube_namespace
        repo = tmp_path / "cfg"
        (repo / "app").mkdir(parents=True)
        (repo / "app" / "kustomization.yaml").write_text("resources: [cm.yaml]\n")

        def commit(value: str) -> str:
            (repo / "app" / "cm.yaml").write_text(
                f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tui-test\n  namespace: {ns}\n"
                f"data:\n  value: {value}\n")
            gitea_repo.git("add", "-A", cwd=repo)
            gitea_repo.git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"value {value}", cwd=repo)
            gitea_repo.git("push", "-q", "origin", "main", cwd=repo)
            return gitea_repo.git("rev-parse", "HEAD", cwd=repo).strip()

        gitea_repo.git("init", "-q", "-b", "main", cwd=repo)
        gitea_repo.git("remote", "add", "origin", gitea_repo.clone_url, cwd=repo)
        first = commit("one")
        core = client.CoreV1Api(kube_client)
        core.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="auth"),
            string_data={"username": gitea.admin_user, "password": gitea.token}))
        api = client.CustomObjectsApi(kube_client)
        api.create_namespaced_custom_object(*SRC[:2], ns, SRC[2], fluxlib.git_repository(
            "cfg", ns, url=gitea_repo.clone_url, interval="10m", secret="auth"))
        api.create_namespaced_custom_object(*KS[:2], ns, KS[2], fluxlib.kustomization(
            "cfg", ns, source="cfg", path="./app", interval="10m", timeout="1m"))

        app = flux_app(kube, ns)
        notes: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            original = app.notify
            app.notify = lambda message, **kw: (notes.append(str(message)), original(message, **kw))[1]
            await until(pilot, lambda: (ks_row(app) is not None and ks_row(app).status == "Ready"
                                        and first in ks_row(app).revision), timeout=120,
                        what=f"Flux to apply {first[:8]}")
            second = commit("two")
            panel = app.query_one("#flux-panel")
            panel.table.move_cursor(row=panel.table.get_row_index(ks_row(app).uid))
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("y")
            await until(pilot, lambda: any(f"applied main@{second[:8]}" in n for n in notes), timeout=120,
                        what=f"the TUI to report {second[:8]} applied ({notes})")
            await until(pilot, lambda: second in ks_row(app).revision, what="the row to show the new revision")
        assert core.read_namespaced_config_map("tui-test", ns).data == {"value": "two"}
