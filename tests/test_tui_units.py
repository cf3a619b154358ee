"""Fast tests of the TUI's pieces without a backend: rows from API objects, the in-place
table update, error handling, and the `raibid tui` command line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from raibid_gitops.errors import KubeError
from raibid_tui.app import RaibidApp
from raibid_tui.sources import Sources
from raibid_tui.sources.agents import parse_time, row_from_hash
from raibid_tui.sources.changes import ChangesSource
from raibid_tui.sources.flux import (
    FluxRow,
    FluxUpdate,
    row_from_object,
    sha_of,
    short_revision,
)
from raibid_tui.sources.kube import KubeConn

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
A = "main@sha1:" + "a" * 40
B = "main@sha1:" + "b" * 40


def ks(applied: str, attempted: str, ready: str = "True", **meta) -> dict:
    return {
        "kind": "Kustomization",
        "metadata": {"uid": "u1", "namespace": "flux-system", "name": "raibid-config", "generation": 2,
                     "creationTimestamp": "2026-11-25T12:00:00Z", "resourceVersion": "7", **meta},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "raibid-config"}, "suspend": False},
        "status": {"observedGeneration": 2, "lastAppliedRevision": applied, "lastAttemptedRevision": attempted,
                   "conditions": [{"type": "Ready", "status": ready, "reason": "BuildFailed" if ready == "False"
                                   else "ReconciliationSucceeded", "message": "m"}]},
    }


class TestRows:
    """Flux objects and heartbeats become the rows the widgets show."""

    def test_revisions(self):
        assert sha_of(A) == "a" * 40 and sha_of("sha1:" + "c" * 40) == "c" * 40 and sha_of("abc") == "abc"
        assert short_revision(A) == "main@aaaaaaaa" and short_revision("") == ""

    def test_failing_new_commit(self):
        """A Kustomization whose newer commit failed stands out; the applied commit and the
        attempted one each keep their own subject (issue 17: the detail view paired them)."""
        seen = []
        subjects = {"a" * 40: "applied subject", "b" * 40: "attempted subject"}
        row = row_from_object(ks(A, B, "False"), subject=lambda sha: seen.append(sha) or subjects[sha])
        assert row.status == "Failed" and row.failing_new_commit
        assert (row.subject, row.attempted_subject) == ("applied subject", "attempted subject")
        assert sorted(seen) == ["a" * 40, "b" * 40]
        ok = row_from_object(ks(A, A), subject=lambda sha: subjects[sha])
        assert ok.status == "Ready" and not ok.failing_new_commit and not ok.new_attempt
        assert (ok.subject, ok.attempted_subject) == ("applied subject", "applied subject")
        assert ok.source == "GitRepository/flux-system/raibid-config"

    def test_status_precedence(self):
        obj = ks(A, A)
        obj["status"]["conditions"].append({"type": "Reconciling", "status": "True", "reason": "Progressing"})
        assert row_from_object(obj).status == "Reconciling"
        obj["status"]["conditions"].append({"type": "Stalled", "status": "True", "reason": "InvalidPath",
                                            "message": "path not found"})
        row = row_from_object(obj)
        assert (row.status, row.reason, row.message) == ("Stalled", "InvalidPath", "path not found")
        del obj["status"]
        assert row_from_object(obj).status == "Unknown"

    def test_heartbeat(self):
        row = row_from_hash("a1", {"state": "running", "job": "j1", "settings_hash": "sha256:1",
                                   "updated_at": "1795867200.5"}, expected_hash="sha256:2")
        assert (row.state, row.job, row.stale) == ("running", "j1", True)
        assert row.last_heartbeat == datetime(2026, 11, 28, 12, 0, 0, 500000, tzinfo=UTC)
        assert not row_from_hash("a2", {"settings_hash": "sha256:2"}, expected_hash="sha256:2").stale
        assert parse_time("2026-11-28T12:00:00Z") == NOW and parse_time("garbage") is None


def with_conditions(*conditions: dict, applied: str = A, attempted: str = B, generation: int = 2,
                    observed: int = 2) -> dict:
    obj = ks(applied, attempted)
    obj["metadata"]["generation"] = generation
    obj["status"]["observedGeneration"] = observed
    obj["status"]["conditions"] = list(conditions)
    return obj


def cond(type_: str, status: str, reason: str, message: str = "m") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message}


class TestFluxStatus:
    """READY follows the library's Flux semantics (raibid_gitops.gitops.flux.failure and
    TRANSIENT_REASONS), the ones `raibid gitops status` and `sync` use (issue 17)."""

    def test_build_failed_while_flux_retries_is_failed(self):
        """Ready=False BuildFailed with Reconciling=True (Flux retrying) is Failed, not
        Reconciling; the reason and message are the failure's; ATTEMPTED is red ⚠."""
        from raibid_tui.widgets.flux import attempted_cell

        obj = with_conditions(cond("Reconciling", "True", "ProgressingWithRetry", "retrying"),
                              cond("Ready", "False", "BuildFailed", "kustomize build failed: x"))
        row = row_from_object(obj, subject=lambda sha: "new" if sha == "b" * 40 else "old")
        assert (row.status, row.reason, row.message) == ("Failed", "BuildFailed", "kustomize build failed: x")
        assert row.failed and row.failing_new_commit
        cell = attempted_cell(row)
        assert cell.plain == "⚠ main@bbbbbbbb new" and "red" in str(cell.style)

    def test_dependency_not_ready_is_waiting(self):
        """Ready=False DependencyNotReady is transient in the library: Waiting, not failed,
        and a newer attempt is shown as being applied (yellow …), not as failed."""
        from raibid_tui.widgets.flux import attempted_cell

        row = row_from_object(with_conditions(cond("Ready", "False", "DependencyNotReady",
                                                   "dependency 'flux-system/infra' is not ready")))
        assert (row.status, row.reason) == ("Waiting", "DependencyNotReady")
        assert not row.failed and not row.failing_new_commit and row.new_attempt
        cell = attempted_cell(row)
        assert cell.plain == "… main@bbbbbbbb" and "yellow" in str(cell.style)

    @pytest.mark.parametrize("conditions,generation,observed,status", [
        ([cond("Ready", "Unknown", "Progressing")], 2, 2, "Reconciling"),
        ([cond("Ready", "False", "Progressing")], 2, 2, "Reconciling"),
        ([cond("Ready", "True", "ReconciliationSucceeded")], 3, 2, "Reconciling"),  # new spec not seen yet
        ([cond("Ready", "True", "ReconciliationSucceeded"), cond("Reconciling", "True", "Progressing")], 2, 2,
         "Reconciling"),
        ([cond("Ready", "True", "ReconciliationSucceeded")], 2, 2, "Ready"),
        ([cond("Ready", "False", "HealthCheckFailed")], 2, 2, "Failed"),
        ([cond("Ready", "False", "ArtifactFailed")], 2, 2, "Failed"),
        ([cond("Ready", "True", "ReconciliationSucceeded"), cond("Stalled", "True", "InvalidPath")], 2, 2,
         "Stalled"),
        ([], 2, 2, "Unknown"),
    ])
    def test_statuses(self, conditions, generation, observed, status):
        assert row_from_object(with_conditions(*conditions, generation=generation, observed=observed)).status == status

    def test_suspended_keeps_its_status(self):
        """Suspending bumps the generation and Flux does not reconcile a suspended object:
        its Ready=True stays Ready, not "Reconciling" forever."""
        obj = with_conditions(cond("Ready", "True", "ReconciliationSucceeded"), generation=3, observed=2)
        obj["spec"]["suspend"] = True
        assert row_from_object(obj).status == "Ready"

    @pytest.mark.parametrize("reason", sorted(__import__("raibid_gitops.gitops.flux", fromlist=["x"]).TRANSIENT_REASONS)
                             + ["BuildFailed", "HealthCheckFailed", "ReconciliationFailed", "PruneFailed"])
    def test_failed_exactly_when_the_library_says_so(self, reason):
        """For every transient reason of the library and some failures: the row is failed
        exactly when ``flux.failure()`` finds a failure."""
        from raibid_gitops.gitops import flux

        obj = with_conditions(cond("Ready", "False", reason))
        assert row_from_object(obj).failed == (flux.failure(obj) is not None)


def run(coro):
    return asyncio.run(coro)


def flux_row(uid: str, name: str, message: str = "ok") -> FluxRow:
    return FluxRow(uid=uid, kind="Kustomization", namespace="ns", name=name, status="Ready",
                   reason="Succeeded", message=message, revision=A, attempted=A, created=NOW)


class TestInPlaceRows:
    """A watch event touches one row: same key, same position, only that row repainted."""

    def test_update_repaints_one_row(self):
        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                panel = app.query_one("#flux-panel")
                panel.set_rows([flux_row(f"u{i}", f"app-{i:02d}") for i in range(20)])
                await pilot.pause()
                table = panel.table
                before = table.row_repaints
                panel.apply(FluxUpdate("Kustomization", rows=(flux_row("u5", "app-05", "ko"),)))
                await pilot.pause()
                assert table.row_repaints == before + 1
                assert table.get_row_index("u5") == 5 and "ko" in str(table.get_row("u5")[9])
                # The same row again: nothing changes, nothing repaints.
                panel.apply(FluxUpdate("Kustomization", rows=(flux_row("u5", "app-05", "ko"),)))
                assert table.row_repaints == before + 1
                panel.apply(FluxUpdate("Kustomization", deleted=("u5",)))
                assert table.row_count == 19 and "u5" not in panel.rows
                # A relist drops rows that are gone and keeps the rest.
                panel.apply(FluxUpdate("Kustomization", rows=(flux_row("u1", "app-01"),), reset=True))
                assert table.keys() == ["u1"]

        run(body())

    def test_cursor_stays_on_its_row_when_rows_move(self):
        """DataTable keeps the cursor's line, not its row: a GitRepository arriving (sorted
        first), a row removed above, or a re-sort would put the cursor, and Enter, on another
        row. CI caught it: the detail view opened the GitRepository the user had not picked."""
        from raibid_tui.screens.flux_detail import FluxDetailScreen

        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                panel = app.query_one("#flux-panel")
                panel.apply(FluxUpdate("Kustomization", rows=tuple(
                    flux_row(f"u{i}", f"app-{i}") for i in range(5)), reset=True))
                await pilot.pause()
                table = panel.table
                table.move_cursor(row=table.get_row_index("u3"))
                repo = FluxRow(uid="g", kind="GitRepository", namespace="ns", name="config",
                               status="Ready", reason="Succeeded", message="ok", revision=A,
                               attempted=A, created=NOW)
                panel.apply(FluxUpdate("GitRepository", rows=(repo,), reset=True))
                assert table.get_row_index("g") == 0 and table.selected_key() == "u3"
                panel.apply(FluxUpdate("Kustomization", deleted=("u0", "u1")))
                assert table.selected_key() == "u3"
                table.sort_by_key(lambda key: key, reverse=True)
                assert table.get_row_index("u3") == 1 and table.selected_key() == "u3"
                # The row under the cursor itself removed: the cursor stays on its line.
                panel.apply(FluxUpdate("Kustomization", deleted=("u3",)))
                assert table.selected_key() == "u2"
                await pilot.pause()
                await pilot.press("enter")
                await pilot.pause()
                assert isinstance(app.screen, FluxDetailScreen) and app.screen.row.uid == "u2"

        run(body())

    def test_jobs_list_keeps_its_line_as_jobs_arrive(self):
        """The jobs list only shows, newest on top: its cursor keeps its line (the top) as jobs
        arrive, so the view does not drift down with an old job."""
        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                table = app.query_one("#jobs-table")
                for n in range(3):
                    table.upsert(f"j{n}", (f"j{n}", "queued", "-", "-", "-", "-", "-"))
                    table.sort_by_key(lambda key: key, reverse=True)
                await pilot.pause()
                assert table.cursor_row == 0 and table.selected_key() == "j2"

        run(body())

    def test_colour_only_change_repaints(self):
        """A cell whose text stays but whose colour changes is updated (rich's Text equality
        ignores the style, so comparing with == would keep the old colour on screen)."""
        from rich.text import Text

        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                table = app.query_one("#agents-table")
                table.upsert("a", ("a", Text("x", style="green"), "-", "-", "-"))
                assert not table.upsert("a", ("a", Text("x", style="green"), "-", "-", "-"))
                assert table.upsert("a", ("a", Text("x", style="bold red"), "-", "-", "-"))
                await pilot.pause()
                assert str(table.get_row("a")[1].style) == "bold red"

        run(body())


class TestNoTraceback:
    """Odd backend data becomes a notification and the app goes on; a bug in a handler ends the
    app without a traceback (the CLI prints one line)."""

    def test_bad_update_is_notified(self):
        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            notes = []
            async with app.run_test() as pilot:
                original = app.notify
                app.notify = lambda m, **kw: (notes.append((m, kw.get("severity"))), original(m, **kw))[1]
                panel = app.query_one("#flux-panel")
                app.guarded(panel.apply, FluxUpdate("Kustomization", rows=(None,)))  # type: ignore[arg-type]
                await pilot.pause()
                assert app.is_running
                assert notes and "AttributeError" in notes[0][0] and notes[0][1] == "error"
                panel.set_rows([flux_row("u1", "a")])
                assert panel.table.row_count == 1

        run(body())

    def test_handler_bug_ends_without_traceback(self, capsys):
        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            with pytest.raises(ZeroDivisionError):  # run_test re-raises it for the test
                async with app.run_test() as pilot:
                    app.query_one("#flux-panel").action_details = lambda: 1 / 0
                    await pilot.press("i")
                    await pilot.pause()
            assert isinstance(app.unexpected, ZeroDivisionError)

        run(body())
        assert "Traceback" not in capsys.readouterr().err

    def test_backend_text_is_never_markup(self):
        """Messages, PR titles and commit subjects come from backends: a "[/]" in them shows as
        written instead of ending the app with a MarkupError."""
        from raibid_tui.screens.confirm import ConfirmScreen
        from raibid_tui.screens.flux_detail import FluxDetailScreen

        hostile = "fix [/] and [b]bold"

        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test() as pilot:
                banner = app.query_one("#changes-banner")
                banner.show("Changes", hostile)
                app.query_one("#flux-panel").show_progress(hostile)
                await pilot.pause()
                assert hostile in str(banner.render())
                app.push_screen(ConfirmScreen(f"Merge #1 “{hostile}”?", hostile))
                await pilot.pause()
                assert hostile in str(app.screen.query_one("#confirm-question").render())
                app.pop_screen()
                row = FluxRow(uid="u", kind="Kustomization", namespace="ns", name="n", status="Failed",
                              message=hostile, revision=A, attempted=B, subject=hostile, attempted_subject=hostile)
                app.push_screen(FluxDetailScreen(row))
                await pilot.pause()
                assert str(app.screen.query_one("#detail-fields").render()).count(hostile) == 3
                assert app.is_running

        run(body())

    def test_unconfigured_backends_show_banners(self):
        async def body():
            app = RaibidApp(Sources(), live=True, clock=lambda: NOW)
            async with app.run_test() as pilot:
                await pilot.pause()
                for banner in ("#flux-banner", "#changes-banner", "#queue-banner", "#agents-banner"):
                    assert app.query_one(banner).shown

        run(body())


class TestBackendErrors:
    """Backend failures arrive as raibid errors that say what failed."""

    def test_missing_kubeconfig(self, tmp_path):
        # The CLI's own message: the TUI connects through the same layer.
        with pytest.raises(KubeError, match=r"kubeconfig .*/nope does not exist"):
            KubeConn(str(tmp_path / "nope"), None).kube()

    def test_changes_without_repo_or_gitea(self):
        """No repo is a read failure (the banner names it); Gitea not configured is a note
        beside the pull requests, not an outage."""
        snap = ChangesSource(None, None, None, None).snapshot()
        assert snap.settings[0].error == "no config repository given"
        assert snap.errors == ("config repo: no config repository given",)
        assert any(n.startswith("Gitea not configured") for n in snap.notes)

    def test_changes_reads_head(self, config_repo):
        from raibid_gitops.settings import load_path

        source = ChangesSource(config_repo, None, None, None)
        snap = source.snapshot()
        head = snap.settings[0]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config_repo, capture_output=True, text=True).stdout
        assert source.commit_subject(sha.strip()) and source.commit_subject("f" * 40) == ""
        assert head.where == "config repo HEAD" and head.hash == load_path(
            config_repo / "overlays/dgx-spark/settings.yaml").hash()


    def test_changes_with_hostile_settings_at_head(self, config_repo):
        """Nested aliases at HEAD (issue 12): the tab shows the refusal; the queue and agents
        tabs fall back to the defaults' names instead of hanging on the expansion."""
        settings = config_repo / "overlays/dgx-spark/settings.yaml"
        lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a]"]
        lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9) + "]" for i in range(1, 8)]
        settings.write_text(settings.read_text() + "\n".join(lines) + "\n")
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", "bomb"],
                       cwd=config_repo, check=True)
        source = ChangesSource(config_repo, None, None, None)
        snap = source.snapshot()
        head = snap.settings[0]
        assert "aliases expanded" in head.invalid and not head.error and not snap.errors
        assert source.settings().queue.stream == "raibid:jobs"


def commit_settings(repo, text: str, message: str) -> None:
    (repo / "overlays/dgx-spark/settings.yaml").write_text(text)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qam", message], cwd=repo,
                   check=True)


class TestSettingsStates:
    """The Changes tab shows each settings state as it is and recovers on the next refresh
    (issue 17): not valid is not "unreachable", refused is not "= HEAD"."""

    def test_judge(self):
        from raibid_tui.sources.changes import AGENTS, HEAD, LIVE, SettingsState, judge

        good, bad = SettingsState(HEAD, "sha256:1", digest="d1"), SettingsState(HEAD, invalid="x", digest="d2")
        live_bad = SettingsState(LIVE, invalid="x", digest="d2")
        assert judge(good, good, None) == ("✔ valid", "ok")
        assert judge(bad, bad, None) == ("✘ does not validate", "bad")
        assert judge(SettingsState(LIVE, error="cannot reach"), good, None) == ("✘ cannot read", "bad")
        assert judge(SettingsState(LIVE, "sha256:1"), good, None) == ("= HEAD", "ok")
        assert judge(SettingsState(LIVE, "sha256:2"), good, None) == ("⚠ differs from HEAD", "warn")
        # Agents that refused a version keep their old hash; before issue 17 they showed "= HEAD".
        refusing = SettingsState(AGENTS, "sha256:1", refused="d2", refusal="r")
        assert judge(refusing, bad, live_bad) == ("✘ refused the live settings", "bad")
        assert judge(refusing, bad, None) == ("✘ refused HEAD's settings", "bad")
        assert judge(SettingsState(AGENTS, "sha256:1", refused="d9"), good, None) == ("✘ refused settings", "bad")
        # HEAD does not validate: an agent on older settings differs from it (never "= HEAD").
        assert judge(SettingsState(AGENTS, "sha256:1"), bad, live_bad) == ("⚠ differs from HEAD", "warn")
        assert judge(SettingsState(AGENTS, "sha256:1"), SettingsState(HEAD, error="e"), None)[1] == "none"
        assert judge(SettingsState(AGENTS, "", "no live agent"), good, None) == ("-", "none")

    def test_agents_grouped_by_hash_and_refusal(self):
        from raibid_tui.sources.agents import AgentRow
        from raibid_tui.sources.changes import agent_states, problems

        rows = (AgentRow("a", settings_hash="sha256:1", refused="d2", settings_error="f is not valid:\n  f:3: bad"),
                AgentRow("b", settings_hash="sha256:1", refused="d2", settings_error="f is not valid:\n  f:3: bad"),
                AgentRow("c", settings_hash="sha256:1"))
        states = agent_states(rows)
        assert [(s.hash, s.refused, s.detail) for s in states] == [
            ("sha256:1", "d2", "2 of 3 agent(s)"), ("sha256:1", "", "1 of 3 agent(s)")]
        assert problems(tuple(states)) == (
            ("2 of 3 agent(s) refused the settings d2 and keep sha256:1:", "f:3: bad"),)
        assert [s.detail for s in agent_states(())] == ["no live agent"]

    def test_heartbeat_refusal(self):
        """The heartbeat's refusal fields (contract.AGENT_SETTINGS_ERROR/REFUSED) reach the row,
        bounded: a heartbeat is input like any other."""
        from raibid_gitops import contract

        row = row_from_hash("a1", {contract.AGENT_SETTINGS_HASH: "sha256:1", contract.AGENT_SETTINGS_REFUSED: "d2",
                                   contract.AGENT_SETTINGS_ERROR: "x" * 5000})
        assert (row.refused, len(row.settings_error)) == ("d2", 600)
        assert not row_from_hash("a2", {contract.AGENT_SETTINGS_HASH: "sha256:1",
                                        contract.AGENT_SETTINGS_REFUSED: "", contract.AGENT_SETTINGS_ERROR: ""}).refused

    def test_invalid_head_then_fixed(self, config_repo):
        """A commit that breaks a cross-field rule: HEAD "does not validate" with the reason
        and the text's digest, no backend error; the fix commit: valid again on the next
        snapshot of the same source (no restart)."""
        from raibid_gitops.settings import load_text, text_digest

        settings = config_repo / "overlays/dgx-spark/settings.yaml"
        good = settings.read_text()
        bad = good.replace("heartbeatSeconds: 15", "heartbeatSeconds: 200")
        assert bad != good
        source = ChangesSource(config_repo, None, None, None)
        commit_settings(config_repo, bad, "raibid: set queue.heartbeatSeconds 15 → 200")
        snap = source.snapshot()
        head = snap.settings[0]
        assert not head.error and not head.hash and "queue.claimIdleSeconds" in head.invalid
        assert head.digest == text_digest(bad) and "queue.heartbeatSeconds 15 → 200" in head.detail
        assert snap.errors == ()
        commit_settings(config_repo, good, "fix")
        head = source.snapshot().settings[0]
        assert (head.hash, head.invalid, head.error) == (load_text(good).hash(), "", "")

    def test_panel_recovers_on_refresh(self, config_repo):
        """In the app: after the fix is committed, R shows HEAD valid again, the problems under
        the table go and the STATE cell is "✔ valid" (it stayed "✘ error" until a restart)."""
        settings = config_repo / "overlays/dgx-spark/settings.yaml"
        good = settings.read_text()
        commit_settings(config_repo, good.replace("heartbeatSeconds: 15", "heartbeatSeconds: 200"), "break")

        async def body():
            app = RaibidApp(Sources(changes=ChangesSource(config_repo, None, None, None)), clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                await pilot.press("2")
                panel = app.query_one("#changes-panel")
                table = app.query_one("#settings-table")
                problems = app.query_one("#settings-problems")
                await until(pilot, lambda: panel.last is not None)
                assert str(table.get_row("config repo HEAD/0")[2]) == "✘ does not validate"
                assert problems.display and "queue.claimIdleSeconds" in str(problems.render())
                assert not app.query_one("#changes-banner").shown
                commit_settings(config_repo, good, "fix")
                await pilot.press("R")
                await until(pilot, lambda: str(table.get_row("config repo HEAD/0")[2]) == "✔ valid")
                assert not problems.display

        run(body())


async def until(pilot, cond, timeout: float = 20.0) -> None:
    """Wait for ``cond`` (a worker's result reaching the screen); fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await pilot.pause(0.05)


class TestQueueJobs:
    """The Queue tab's jobs: keyed by id and updated in place; record text is bounded."""

    def test_state_change_updates_the_row_in_place(self):
        from raibid_gitops.queue.jobs import Job
        from raibid_tui.sources.queue import QueueStats

        def stats(*jobs: Job) -> QueueStats:
            return QueueStats("raibid:jobs", "raibid-agents", "raibid:jobs:dead", jobs=jobs)

        t0 = NOW.timestamp()
        older = Job("j1", "queued", "raibid/app", "main", submitted_at=t0 - 60)
        newer = Job("j2", "queued", "raibid/app", "main", submitted_at=t0 - 5)

        async def body():
            app = RaibidApp(Sources(), live=False, clock=lambda: NOW)
            async with app.run_test(size=(160, 40)) as pilot:
                panel = app.query_one("#queue-panel")
                table = app.query_one("#jobs-table")
                panel.show(stats(older, newer))  # out of order: shown newest first
                await pilot.pause()
                assert [str(table.get_row_at(i)[0]) for i in range(2)] == ["j2", "j1"]
                panel.show(stats(newer, Job("j1", "running", "raibid/app", "main", agent="a-1", submitted_at=t0 - 60)))
                await pilot.pause()
                assert table.get_row_index("j1") == 1 and table.keys() == ["j1", "j2"]  # kept, not re-added
                assert [str(c) for c in table.get_row("j1")][1:6] == ["running", "raibid/app", "main", "-", "a-1"]
                panel.show(stats(newer))
                assert table.keys() == ["j2"]

        run(body())

    def test_record_text_is_bounded(self):
        from raibid_gitops.queue.jobs import Job
        from raibid_tui.widgets.queue import REPO_WIDTH, job_cells

        cells = job_cells(Job("x" * 128, "y" * 500, "r" * 5000, "f" * 5000, commit="c" * 64, agent="a" * 500), NOW)
        assert max(len(str(c)) for c in cells) <= REPO_WIDTH


class TestCommandLine:
    """`raibid tui` parses the flux-style options and starts without importing textual early."""

    def test_options(self):
        from raibid_gitops.cli import build_parser

        args = build_parser().parse_args(["tui", "--kubeconfig", "k", "--context", "c", "-A", "--redis-url",
                                          "redis://h:1/0", "--repo", "."])
        assert (args.kubeconfig, args.context, args.all_namespaces, args.redis_url) == ("k", "c", True,
                                                                                       "redis://h:1/0")
        with pytest.raises(SystemExit):
            build_parser().parse_args(["tui", "-n", "x", "-A"])

    def test_help_does_not_import_textual(self):
        code = ("import sys; from raibid_gitops.cli import build_parser; build_parser(); "
                "print(any(m.startswith(('textual', 'kubernetes', 'redis')) for m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False"

    @pytest.mark.parametrize("error,printed", [
        (KubeError("watch of Kustomization flux-system/raibid-config failed (500): etcd is down"),
         "error: watch of Kustomization flux-system/raibid-config failed (500): etcd is down"),
        (ZeroDivisionError("division by zero"),
         "error: the TUI stopped on an unexpected error: ZeroDivisionError: division by zero"),
    ])
    def test_error_that_ends_the_running_app_is_one_line(self, monkeypatch, capsys, tmp_path, error, printed):
        """`raibid tui` starts the app (headless here); an error raised while it runs ends it, and
        the CLI prints that error as one line (our own error as is, anything else named), exit 2."""
        from raibid_gitops import cli

        running: list[bool] = []

        def on_mount(app: RaibidApp) -> None:
            running.append(app.is_running)
            raise error

        original_run = RaibidApp.run
        monkeypatch.setattr("raibid_tui.sources.build", lambda **kwargs: Sources())
        monkeypatch.setattr(RaibidApp, "on_mount", on_mount)
        monkeypatch.setattr(RaibidApp, "run",
                            lambda self, **kw: original_run(self, headless=True, size=(120, 30), **kw))
        monkeypatch.chdir(tmp_path)
        assert cli.main(["tui"]) == 2
        assert running == [True], "the error must come from the running app, not before it starts"
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [printed]


class TestTextualInternals:
    """The TUI reaches a few private DataTable attributes (raibid_tui/widgets/table.py,
    class _Internals) for in-place row repaints and ordering by key. An upgrade of Textual that
    renames one must fail here, naming it, not in front of a user."""

    def test_the_private_attributes_exist(self):
        from textual.widgets import DataTable

        from raibid_tui.widgets.table import PRIVATE_ATTRIBUTES

        table = DataTable()
        missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(table, name)]
        assert not missing, (f"Textual no longer has DataTable.{', '.join(missing)}: adapt "
                             "raibid_tui/widgets/table.py _Internals (and the version bound in pyproject.toml)")
        import textual._two_way_dict as two_way

        assert hasattr(two_way, "TwoWayDict"), "textual._two_way_dict.TwoWayDict is gone: adapt _Internals.order_rows"
