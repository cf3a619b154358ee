"""Snapshot tests of each TUI tab from fixed rows (pytest-textual-snapshot).

The app runs with ``live=False`` (no worker polls a backend) and a fixed clock; each test
hands the panels fixed frozen rows, so a snapshot changes only when the screen does.
Update after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from raibid_gitops.gitops.keda import Pool, Verdict
from raibid_gitops.queue.jobs import Job
from raibid_tui.app import RaibidApp
from raibid_tui.sources import Sources
from raibid_tui.sources.agents import AgentRow
from raibid_tui.sources.changes import ChangesSnapshot, PullRow, SettingsState
from raibid_tui.sources.flux import Condition, EventRow, FluxRow
from raibid_tui.sources.queue import QueueStats

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SIZE = (150, 34)
GOOD = "main@sha1:" + "4f2c9a1e" * 5
NEW = "main@sha1:" + "9b7d03c4" * 5
HASH_NEW = "sha256:1b2c3d4e5f607182"
HASH_OLD = "sha256:a0a1a2a3a4a5a6a7"


def _ready(message: str) -> tuple[Condition, ...]:
    return (Condition("Ready", "True", "ReconciliationSucceeded", message, "2026-11-28T11:58:00Z"),)


FLUX_ROWS = (
    FluxRow(uid="u-gr", kind="GitRepository", namespace="flux-system", name="raibid-config", status="Ready",
            reason="Succeeded", message="stored artifact for revision 'main@sha1:9b7d03c4'", revision=NEW,
            subject="agents: maxReplicas 8 -> 12", source="http://gitea/raibid/raibid-config.git",
            created=NOW - timedelta(days=3), generation=1, observed_generation=1,
            conditions=_ready("stored artifact")),
    FluxRow(uid="u-ks", kind="Kustomization", namespace="flux-system", name="raibid-config", status="Failed",
            reason="BuildFailed", message="kustomize build failed: accumulating resources", revision=GOOD,
            attempted=NEW, subject="redis: appendonly yes", attempted_subject="agents: maxReplicas 8 -> 12",
            created=NOW - timedelta(days=3), source="GitRepository/flux-system/raibid-config", generation=2,
            observed_generation=2,
            conditions=(Condition("Reconciling", "True", "ProgressingWithRetry", "retrying in 1m",
                                  "2026-11-28T11:59:10Z"),
                        Condition("Ready", "False", "BuildFailed", "kustomize build failed: accumulating resources",
                                  "2026-11-28T11:59:10Z"))),
    FluxRow(uid="u-ks2", kind="Kustomization", namespace="flux-system", name="raibid-infra", status="Ready",
            reason="ReconciliationSucceeded", message=f"Applied revision: {GOOD}", revision=GOOD,
            attempted=GOOD, subject="redis: appendonly yes", attempted_subject="redis: appendonly yes",
            suspended=True, created=NOW - timedelta(hours=5), generation=1, observed_generation=1,
            conditions=_ready("Applied revision")),
    FluxRow(uid="u-ks3", kind="Kustomization", namespace="flux-system", name="raibid-monitoring",
            status="Reconciling", reason="Progressing", message="Running health checks with a timeout of 5m",
            revision=GOOD, attempted=NEW, subject="redis: appendonly yes",
            attempted_subject="agents: maxReplicas 8 -> 12", created=NOW - timedelta(minutes=7), generation=3,
            observed_generation=3),
    FluxRow(uid="u-ks4", kind="Kustomization", namespace="flux-system", name="raibid-pool", status="Waiting",
            reason="DependencyNotReady", message="dependency 'flux-system/raibid-config' is not ready",
            revision=GOOD, attempted=NEW, subject="redis: appendonly yes",
            attempted_subject="agents: maxReplicas 8 -> 12", created=NOW - timedelta(minutes=7), generation=1,
            observed_generation=1,
            conditions=(Condition("Ready", "False", "DependencyNotReady",
                                  "dependency 'flux-system/raibid-config' is not ready", "2026-11-28T11:59:30Z"),)),
)

EVENTS = (
    EventRow("2026-11-28 11:59:09", "Normal", "Progressing", "Reconciliation in progress", "kustomize-controller"),
    EventRow("2026-11-28 11:59:10", "Warning", "BuildFailed", "kustomize build failed: accumulating resources",
             "kustomize-controller"),
)

CHANGES = ChangesSnapshot(
    settings=(
        SettingsState("config repo HEAD", HASH_NEW, "9b7d03c4 agents: maxReplicas 8 -> 12"),
        SettingsState("live ConfigMap", HASH_NEW, "raibid-ci/raibid-settings resourceVersion 4711"),
        SettingsState("agents", HASH_NEW, "2 of 3 agent(s)"),
        SettingsState("agents", HASH_OLD, "1 of 3 agent(s)"),
    ),
    pulls=(
        PullRow(7, "scaling: lagCount 1 -> 2", "raibid/set-scaling-lagcount-1a2b", "alice", "aa" * 20,
                "success", "verify passed",
                body="Changes `overlays/dgx-spark/settings.yaml` and every field derived from it.\n\n"
                     "| setting | old | new |\n|---|---|---|\n| `scaling.lagCount` | `1` | `2` |\n\n"
                     "**Rendered objects**: 1 changed."),
        PullRow(8, "agents: memory 4Gi -> 64Gi", "raibid/set-agents-memory-3c4d", "bob", "bb" * 20,
                "failure", "agents.maxReplicas x agents.memory exceeds capacity", mergeable=True),
        PullRow(9, "queue: maxDeliveries 3 -> 5", "raibid/set-queue-maxdeliveries", "carol", "cc" * 20, "pending"),
    ),
)

#: A hand edit that breaks a cross-field rule, pushed and applied (issue 17): HEAD and the live
#: ConfigMap hold it, two agents refused it and keep their last good settings, one has not
#: looked yet; Gitea is not configured (a note, not an outage).
BAD_DIGEST = "sha256:9f8e7d6c5b4a3921"
RULE = ("queue.claimIdleSeconds: queue.claimIdleSeconds (300) must be at least 3 x queue.heartbeatSeconds (200) "
        "= 600, or live agents' jobs get taken over")
INVALID_CHANGES = ChangesSnapshot(
    settings=(
        SettingsState("config repo HEAD", "", "4d5e6f70 raibid: set queue.heartbeatSeconds 15 → 200",
                      invalid=f"overlays/dgx-spark/settings.yaml is not valid:\n  overlays/dgx-spark/settings.yaml:25: "
                              f"{RULE}", digest=BAD_DIGEST),
        SettingsState("live ConfigMap", "", "raibid-ci/raibid-settings resourceVersion 4720",
                      invalid=f"ConfigMap raibid-settings is not valid:\n  ConfigMap raibid-settings:25: {RULE}",
                      digest=BAD_DIGEST),
        SettingsState("agents", HASH_NEW, "2 of 3 agent(s)", refused=BAD_DIGEST,
                      refusal=f"/etc/raibid/settings/settings.yaml is not valid:\n  settings.yaml:25: {RULE}"),
        SettingsState("agents", HASH_NEW, "1 of 3 agent(s)"),
    ),
    notes=("Gitea not configured (set RAIBID_GITEA_URL and RAIBID_GITEA_TOKEN)",),
)

UNREACHABLE_CHANGES = ChangesSnapshot(
    settings=(
        SettingsState("config repo HEAD", HASH_NEW, "9b7d03c4 agents: maxReplicas 8 -> 12", digest=BAD_DIGEST),
        SettingsState("live ConfigMap", error="cannot reach the Kubernetes API (server https://127.0.0.1:6443)"),
        SettingsState("agents", HASH_NEW, "3 of 3 agent(s)"),
    ),
    errors=("Kubernetes: cannot reach the Kubernetes API (server https://127.0.0.1:6443)",),
)

DIFF = """\
diff --git a/overlays/dgx-spark/settings.yaml b/overlays/dgx-spark/settings.yaml
--- a/overlays/dgx-spark/settings.yaml
+++ b/overlays/dgx-spark/settings.yaml
@@ -30,7 +30,7 @@ scaling:
   pollingInterval: 10
-  lagCount: 1
+  lagCount: 2
"""

def _job(jid: str, state: str, age: float, *, repo: str = "raibid/app", ref: str = "main", commit: str = "",
         agent: str = "") -> Job:
    return Job(id=jid, state=state, repo=repo, ref=ref, commit=commit, agent=agent,
               submitted_at=NOW.timestamp() - age)


JOBS = (
    _job("19ac2f3b1e0-5d1e9a20", "queued", 8),
    _job("19ac2f3a9c4-0b7f3c11", "running", 42, ref="feature/scaling", commit="9b7d03c4e1f2a3b4c5d6",
         agent="raibid-agent-7k2p9"),
    _job("19ac2f1d702-a4e01f55", "running", 754, repo="raibid/raibid-config", commit="4f2c9a1e0d9c8b7a6f5e",
         agent="raibid-agent-zz31m"),
    _job("19ac2e9b0f1-77c2d0aa", "succeeded", 3600, commit="1a2b3c4d5e6f7a8b9c0d", agent="raibid-agent-b8xq1"),
    _job("19ac2e4410e-3e9d4b02", "failed", 7300, ref="refs/tags/v1.2.0", commit="0f1e2d3c4b5a69788796",
         agent="raibid-agent-7k2p9"),
    _job("19ac2d01aa0-c0ffee00", "dead", 90000, repo="raibid/flaky", agent="raibid-agent-old42"),
)

QUEUE = QueueStats(stream="raibid:jobs", group="raibid-agents", dead_letter_stream="raibid:jobs:dead", length=42,
                   lag=17, pending=3, oldest_pending_age=754.0, dead_letters=2, consumers=3,
                   throughput=(0, 1, 3, 2, 5, 8, 6, 4, 7, 9, 3, 2, 1, 0, 4, 6), interval=2.0, jobs=JOBS)

AGENTS = (
    AgentRow("raibid-agent-7k2p9", "running", "job-20261128-0042", HASH_NEW, NOW - timedelta(seconds=4)),
    AgentRow("raibid-agent-b8xq1", "idle", "", HASH_NEW, NOW - timedelta(seconds=11)),
    AgentRow("raibid-agent-zz31m", "running", "job-20261128-0043", HASH_OLD, NOW - timedelta(seconds=2),
             stale=True),
)


AGENTS_REFUSING = (
    AgentRow("raibid-agent-7k2p9", "running", "job-20261128-0042", HASH_NEW, NOW - timedelta(seconds=4),
             refused=BAD_DIGEST, settings_error=f"settings.yaml is not valid:\n  settings.yaml:25: {RULE}"),
    AgentRow("raibid-agent-b8xq1", "idle", "", HASH_NEW, NOW - timedelta(seconds=11), refused=BAD_DIGEST,
             settings_error=f"settings.yaml is not valid:\n  settings.yaml:25: {RULE}"),
    AgentRow("raibid-agent-zz31m", "running", "job-20261128-0043", HASH_NEW, NOW - timedelta(seconds=2)),
)


POOL = (
    Pool(namespace="raibid-ci", name="raibid-agent", max_replicas=5, min_replicas=0,
         verdict=Verdict("accepted", "ScaledJobReady", "ScaledJob is defined correctly and is ready for scaling"),
         active=3, succeeded=12, failed=1),
)


class FixedFlux:
    """Answers the detail view's event query with fixed events."""

    def events(self, row: FluxRow) -> tuple[EventRow, ...]:
        return EVENTS

    def stop(self) -> None:
        pass


class FixedChanges:
    def diff(self, pr: PullRow) -> str:
        return DIFF


def make_app() -> RaibidApp:
    sources = Sources(flux=FixedFlux(), changes=FixedChanges(), where="raibid-devstack · namespace flux-system")
    return RaibidApp(sources, live=False, clock=lambda: NOW)


async def fill(pilot, *, changes: ChangesSnapshot = CHANGES, agents: tuple[AgentRow, ...] = AGENTS,
               expected_hash: str | None = HASH_NEW) -> None:
    app = pilot.app
    app.expected_hash = expected_hash
    app.query_one("#flux-panel").set_rows(FLUX_ROWS)
    app.query_one("#changes-panel").show(changes)
    app.query_one("#queue-panel").show(QUEUE)
    app.query_one("#agents-panel").show(agents)
    app.query_one("#pool-panel").show(POOL)
    await pilot.pause()


class TestFluxTab:
    """The Flux tab: GitRepositories and Kustomizations, status colours, applied and attempted
    commits apart, suspended objects; the detail modal; confirmations; the banner."""

    def test_rows(self, snap_compare):
        """Both kinds, GitRepositories first. REVISION and COMMIT are the applied commit; the
        Kustomization whose newer commit failed (BuildFailed while Flux retries) is Failed with
        ⚠ and the attempted commit's revision and subject in ATTEMPTED; one running health checks
        on a newer commit is Reconciling with … in yellow; one whose dependency is not ready is
        Waiting; SUSPENDED 'yes' for the suspended one."""
        assert snap_compare(make_app(), terminal_size=SIZE, run_before=fill)

    def test_detail_view(self, snap_compare):
        """enter on the failing Kustomization: the applied revision with its own commit subject,
        the attempted one (⚠ failed: not applied) with its subject, conditions, recent events."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("down", "enter")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_detail_view_waiting(self, snap_compare):
        """enter on the Kustomization waiting for a dependency: Waiting, the attempted commit
        "not applied yet", and its Ready=False condition in yellow (transient), not red."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("down", "down", "down", "down", "enter")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_confirm_reconcile(self, snap_compare):
        """r asks before reconciling; the question names the object."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("down", "r")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_confirm_resume(self, snap_compare):
        """s on a suspended object offers to resume it."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("down", "down", "s")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_banner_when_unreachable(self, snap_compare):
        """A watch error shows a red banner above the (kept) rows."""
        from raibid_gitops.errors import KubeError

        async def run_before(pilot):
            await fill(pilot)
            pilot.app.query_one("#flux-panel").set_error(
                "Kustomization", KubeError("watch kustomizations: cannot reach the Kubernetes API at "
                                           "https://127.0.0.1:6443 (MaxRetryError)",
                                           hint="check --kubeconfig/--context and that the cluster is up"))
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestChangesTab:
    """The Changes tab: settings by hash at HEAD / live / agents, open PRs with verify status."""

    def test_settings_and_pulls(self, snap_compare):
        """HEAD's settings are "✔ valid"; hashes that differ from HEAD are marked; verify
        passed / failed / running."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("2")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_diff_view(self, snap_compare):
        """enter on a PR shows its description rendered as Markdown (the change table as a
        table, bold as bold, no raw ``**`` or ``|``), then its diff, with m to merge."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("2", "enter")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_confirm_merge(self, snap_compare):
        """m on a PR whose verify failed asks, and the question says verify failed."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("2", "down", "m")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestChangesSettingsStates:
    """The Changes tab shows each settings state as it is (issue 17): settings that do not
    validate are "✘ does not validate" with the reason under the table — not a backend
    outage; agents that refused them are "✘ refused the live settings", not "= HEAD"; only a
    place that cannot be read raises the banner, and it names that place."""

    def test_invalid_settings_and_refusing_agents(self, snap_compare):
        """HEAD and the live ConfigMap do not validate (same text), two agents refused it and
        keep their settings, one runs them without having looked yet; no banner; Gitea's note
        beside the pull requests' title."""

        async def run_before(pilot):
            await fill(pilot, changes=INVALID_CHANGES)
            await pilot.press("2")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)

    def test_unreachable_backend(self, snap_compare):
        """The live ConfigMap cannot be read: "✘ cannot read" and a banner naming Kubernetes."""

        async def run_before(pilot):
            await fill(pilot, changes=UNREACHABLE_CHANGES)
            await pilot.press("2")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestQueueTab:
    """The Queue tab: length, lag, pending, oldest pending age, dead letters, sparkline, and
    the newest jobs (issue 17: it showed only the numbers)."""

    def test_numbers_and_sparkline(self, snap_compare):
        """Dead letters stand out in red; the sparkline shows the throughput samples; the jobs
        are listed newest first with state (coloured), repo, ref, commit, agent and age."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("3")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestAgentsTab:
    """The Agents tab: id, state, current job, settings hash, refused settings, last heartbeat."""

    def test_stale_agent_stands_out(self, snap_compare):
        """The pool KEDA runs (3 agent Jobs of max 5, KEDA accepted) heads the tab; the agent on
        other settings than the live ConfigMap is marked ⚠ stale; the summary counts it."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("4")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestAgentsRefusedSettings:
    """The Agents tab shows refused settings (issue 17): an agent whose heartbeat reports a
    refused version shows it and why in REFUSED SETTINGS, and the summary counts them."""

    def test_refused_settings(self, snap_compare):
        """Two agents refused the live settings and keep their last good ones; one did not."""

        async def run_before(pilot):
            # The live ConfigMap does not validate: there is no live hash to be stale against.
            await fill(pilot, changes=INVALID_CHANGES, agents=AGENTS_REFUSING, expected_hash=None)
            await pilot.press("4")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


class TestHelp:
    """? shows every binding by tab."""

    def test_help(self, snap_compare):
        """The help modal over the Flux tab."""

        async def run_before(pilot):
            await fill(pilot)
            await pilot.press("question_mark")
            await pilot.pause()

        assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)
