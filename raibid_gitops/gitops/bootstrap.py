"""`raibid bootstrap`: the phases of bootstrapping that talk to APIs (bootstrap.sh installs k3s,
Flux, KEDA and Gitea first, then calls this).

Phases, in order; each looks before it acts, so a second run reports nothing to do and changes no
object and no Gitea setting:

``repo``     the Gitea organisation, the config repository, and the bot user ``raibid-bot``: a
             collaborator with write access on the config repository (Flux reads it and writes
             commit statuses) and a member of team ``raibid-bots`` (read access to every repository
             of the organisation: the agents clone CI repositories with it)
``config``   an empty config repository gets `raibid gitops init` (with ``--set``) and a push; a
             filled one is cloned into ``--dir`` (or the existing clone is used)
``secrets``  the Secrets that are never committed, each created only when missing (so Redis's
             password survives re-runs): ``raibid-redis``, ``raibid-gitea`` (agents' clone token) in the
             stack's namespace; ``raibid-config-auth``, ``raibid-gitea-status``, ``raibid-webhook-token``
             in flux-system. Tokens are the bot's, issued when a Secret that holds one is missing.
``objects``  clusters/dgx-spark applied once (server-side apply); afterwards Flux manages them
             (the Kustomization ``raibid-cluster``), and this phase has nothing to do
``webhook``  Gitea's repository webhook pointed at the Receiver (see :mod:`.webhook`)
``sync``     `raibid gitops sync`: until Flux has applied the config repository's head and KEDA
             accepted the ScaledJob; nothing to do when that is already so
"""

from __future__ import annotations

import base64
import secrets as secrets_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops import contract
from raibid_gitops.errors import ConfigRepoError, KubeNotFound, RaibidError
from raibid_gitops.gitops import flux
from raibid_gitops.gitops.layout import (
    CLUSTER_DIR,
    FLUX_AUTH_SECRET,
    FLUX_CLUSTER_OBJECT,
    FLUX_NAMESPACE,
    FLUX_OBJECT_NAME,
    SETTINGS_PATH,
)

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.gitea import Gitea
    from raibid_gitops.clients.kube import Kube

PHASES = ("repo", "config", "secrets", "objects", "webhook", "sync")
BOT_USER = "raibid-bot"
BOT_TEAM = "raibid-bots"
STATUS_SECRET = "raibid-gitea-status"
#: Field manager of bootstrap's own applies (Flux's kustomize-controller takes over after).
FIELD_MANAGER = "raibid-bootstrap"
#: Random secret lengths (bytes, hex-encoded): 24 bytes = 192 bits.
SECRET_BYTES = 24


class BootstrapError(RaibidError):
    """A bootstrap phase could not complete."""

    exit_code = 1


@dataclass(frozen=True)
class BootstrapOptions:
    gitea_url: str
    #: Gitea as the cluster reaches it (settings gitea.url); default: gitea_url.
    gitea_cluster_url: str | None = None
    owner: str = "raibid"
    repo: str = "raibid-config"
    dir: Path = Path("raibid-config")
    assignments: tuple[str, ...] = ()
    receiver_url: str = "http://webhook-receiver.flux-system.svc.cluster.local"
    namespace: str = FLUX_NAMESPACE
    timeout: float = 300.0
    dry_run: bool = False
    phases: tuple[str, ...] = PHASES


@dataclass
class PhaseReport:
    name: str
    #: What changed (or, in a dry run, what would): one line each. Empty: nothing to do.
    actions: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def select_phases(from_phase: str | None = None, only: str | None = None) -> tuple[str, ...]:
    for name, value in (("--from", from_phase), ("--only", only)):
        if value is not None and value not in PHASES:
            raise ConfigRepoError(f"{name}: unknown phase {value[:40]!r}", hint=f"phases: {', '.join(PHASES)}")
    if only:
        return (only,)
    if from_phase:
        return PHASES[PHASES.index(from_phase):]
    return PHASES


def _random() -> str:
    return secrets_mod.token_hex(SECRET_BYTES)


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


class Bootstrap:
    """One run. ``gitea`` is a client authenticated with ``admin_token``, a Gitea admin's token
    (RAIBID_GITEA_TOKEN), which is also used to push the first commit."""

    def __init__(self, opts: BootstrapOptions, kube: Kube, gitea: Gitea, admin_token: str,
                 report: Callable[[PhaseReport], None] | None = None) -> None:
        self.opts, self.kube, self.gitea = opts, kube, gitea
        self.admin_token = admin_token
        self.report = report or (lambda _r: None)
        self.full_name = f"{opts.owner}/{opts.repo}"
        self._bot_tokens: dict[str, str] | None = None

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> list[PhaseReport]:
        out = []
        for name in self.opts.phases:
            rep = PhaseReport(name)
            try:
                getattr(self, f"phase_{name}")(rep)
            except RaibidError as exc:
                raise BootstrapError(f"phase {name} failed: {exc.message}", hint=exc.hint) from exc
            self.report(rep)
            out.append(rep)
        return out

    def _do(self, rep: PhaseReport, what: str, act: Callable[[], Any]) -> Any:
        """Record ``what``; do it unless this is a dry run."""
        rep.actions.append(("would " if self.opts.dry_run else "") + what)
        return None if self.opts.dry_run else act()

    # -- repo ------------------------------------------------------------------------------------

    def phase_repo(self, rep: PhaseReport) -> None:
        g, o = self.gitea, self.opts
        if g.get_or_none(f"/orgs/{o.owner}") is None:
            self._do(rep, f"create organisation {o.owner}", lambda: g.create_org(o.owner))
        if g.get_or_none(f"/repos/{self.full_name}") is None:
            self._do(rep, f"create repository {self.full_name}", lambda: g.create_org_repo(o.owner, o.repo))
        if g.get_or_none(f"/users/{BOT_USER}") is None:
            # Its password is never kept: tokens are issued with a fresh one when needed.
            self._do(rep, f"create user {BOT_USER}", lambda: g.create_user(BOT_USER, _random()))
        teams = [] if self._absent_org(rep) else g.org_teams(o.owner)
        team = next((t for t in teams if t.get("name") == BOT_TEAM), None)
        if team is None:
            team = self._do(rep, f"create team {o.owner}/{BOT_TEAM} (read access to every repository)",
                            lambda: g.create_team(o.owner, BOT_TEAM, permission="read",
                                                  description="raibid-ci agents clone with this access"))
        if team is None:  # a dry run: the team does not exist yet
            rep.actions.append(f"would add {BOT_USER} to team {BOT_TEAM}")
        elif not any(m.get("login") == BOT_USER for m in g.team_members(int(team["id"]))):
            self._do(rep, f"add {BOT_USER} to team {BOT_TEAM}", lambda: g.add_team_member(int(team["id"]), BOT_USER))
        perm = None if self._absent_repo(rep) else g.collaborator_permission(self.full_name, BOT_USER)
        if perm not in ("write", "admin", "owner"):
            self._do(rep, f"give {BOT_USER} write access to {self.full_name} (commit statuses)",
                     lambda: g.add_collaborator(self.full_name, BOT_USER, "write"))

    def _absent_org(self, rep: PhaseReport) -> bool:
        return self.opts.dry_run and any(a.startswith("would create organisation") for a in rep.actions)

    def _absent_repo(self, rep: PhaseReport) -> bool:
        return self.opts.dry_run and any(a.startswith("would create repository") for a in rep.actions)

    # -- config ----------------------------------------------------------------------------------

    def clone_url(self) -> str:
        return f"{self.opts.gitea_url.rstrip('/')}/{self.full_name}.git"

    def phase_config(self, rep: PhaseReport) -> None:
        from raibid_gitops.clients.git import Auth, Repo
        from raibid_gitops.gitops.generate import init

        o = self.opts
        info = self.gitea.get_or_none(f"/repos/{self.full_name}")
        empty = info is None or bool(info.get("empty"))
        auth = Auth(token=self.admin_token, username=self._admin_user())
        target = o.dir.resolve() if o.dir.exists() else o.dir.absolute()
        if empty:
            cluster_url = (o.gitea_cluster_url or o.gitea_url).rstrip("/")
            sets = [*o.assignments, f"gitea.url={cluster_url}", f"gitea.owner={o.owner}", f"gitea.repo={o.repo}"]

            def make() -> None:
                init(target, assignments=sets, remote=self.clone_url())
                repo = Repo(target, auth)
                repo.push("origin", "HEAD:refs/heads/" + repo.branch())

            self._do(rep, f"write the config repository in {target} (raibid gitops init) and push it", make)
            return
        if (target / ".git").is_dir():
            url = Repo(target).remote_url("origin") or ""
            if url.rstrip("/").removesuffix(".git") != self.clone_url().removesuffix(".git"):
                raise ConfigRepoError(f"{target} is a clone of {url or 'nothing'}, not of {self.clone_url()}",
                                      hint="pass --dir for a clone of the config repository, or a new directory")
            return
        if target.exists() and any(target.iterdir()):
            raise ConfigRepoError(f"{target} exists and is not a clone of {self.clone_url()}",
                                  hint="pass --dir for a new directory")
        self._do(rep, f"clone {self.clone_url()} into {target}",
                 lambda: Repo.clone(self.clone_url(), target, auth=auth))

    def _admin_user(self) -> str:
        return str(self.gitea.current_user().get("login") or "raibid")

    # -- secrets ---------------------------------------------------------------------------------

    def settings(self) -> Any:
        from raibid_gitops.settings import defaults, load_path

        path = self.opts.dir / SETTINGS_PATH
        if not path.exists() and self.opts.dry_run:
            return defaults()
        return load_path(path)

    def phase_secrets(self, rep: PhaseReport) -> None:
        from raibid_gitops.clients.kube import ObjectRef
        from raibid_gitops.gitops.webhook import TOKEN_KEY, TOKEN_SECRET

        ns = self.settings().cluster.namespace
        fx = self.opts.namespace
        if self.kube.get_or_none(ObjectRef("v1", "Namespace", ns)) is None:
            self._do(rep, f"create namespace {ns}", lambda: self.kube.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))

        def ensure(name: str, namespace: str, data: Callable[[], dict[str, str]]) -> None:
            if self.kube.get_or_none(ObjectRef("v1", "Secret", name, namespace)) is None:
                self._do(rep, f"create Secret {namespace}/{name}",
                         lambda: self.kube.create(_secret(name, namespace, data())))

        ensure(contract.REDIS_SECRET, ns, lambda: {contract.REDIS_SECRET_KEY: _random()})
        ensure(contract.GITEA_SECRET, ns, lambda: {contract.GITEA_SECRET_KEY: self.bot_token("agents")})
        ensure(FLUX_AUTH_SECRET, fx, lambda: {"username": BOT_USER, "password": self.bot_token("flux")})
        ensure(STATUS_SECRET, fx, lambda: {"token": self.bot_token("flux")})
        ensure(TOKEN_SECRET, fx, lambda: {TOKEN_KEY: _random()})

    def bot_token(self, purpose: str) -> str:
        """A token of the bot: ``flux`` (write:repository — read the config repository, write
        its commit statuses) or ``agents`` (read:repository). Issued once per run, with a new
        password for the bot (Gitea issues tokens only under the user's own basic auth)."""
        from raibid_gitops.clients.gitea import Gitea

        if self._bot_tokens is None:
            password = _random()
            self.gitea.set_password(BOT_USER, password)
            suffix = secrets_mod.token_hex(4)
            with Gitea(self.opts.gitea_url, basic_auth=(BOT_USER, password)) as bot:
                self._bot_tokens = {
                    "flux": bot.create_token(BOT_USER, f"raibid-flux-{suffix}", scopes=("write:repository",)),
                    "agents": bot.create_token(BOT_USER, f"raibid-agents-{suffix}", scopes=("read:repository",)),
                }
        return self._bot_tokens[purpose]

    # -- objects ---------------------------------------------------------------------------------

    def phase_objects(self, rep: PhaseReport) -> None:
        from raibid_gitops.clients.kube import ObjectRef
        from raibid_gitops.gitops.kustomize import build_objects

        managed = ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, FLUX_CLUSTER_OBJECT, self.opts.namespace)
        if self.kube.get_or_none(managed) is not None:
            return  # Flux manages clusters/dgx-spark itself now; applying over it would fight it
        path = self.opts.dir / CLUSTER_DIR
        if not path.is_dir():
            if self.opts.dry_run:
                rep.actions.append(f"would apply {CLUSTER_DIR} (once the config repository is in place)")
                return
            raise ConfigRepoError(f"{path} not found", hint="run the config phase first")
        for obj in build_objects(path):
            ref = ObjectRef.of(obj)
            self._do(rep, f"apply {ref}", partial(self.kube.apply, obj, field_manager=FIELD_MANAGER))

    # -- webhook ---------------------------------------------------------------------------------

    def phase_webhook(self, rep: PhaseReport) -> None:
        from raibid_gitops.clients.kube import ObjectRef
        from raibid_gitops.gitops.webhook import RECEIVER_API, RECEIVER_NAME, connect_webhook

        receiver = ObjectRef(RECEIVER_API, "Receiver", RECEIVER_NAME, self.opts.namespace)
        if self.opts.dry_run and self.kube.get_or_none(receiver) is None:
            rep.actions.append(f"would point a Gitea webhook of {self.full_name} at "
                               f"{self.opts.receiver_url}/hook/... (the Receiver's path, once it exists)")
            return
        result = connect_webhook(self.kube, self.gitea, self.full_name, namespace=self.opts.namespace,
                                 receiver_url=self.opts.receiver_url, dry_run=self.opts.dry_run,
                                 timeout=min(self.opts.timeout, 120.0))
        if result.action != "unchanged":
            rep.actions.append(f"{result.action} the webhook of {self.full_name} -> {self.opts.receiver_url}/hook/...")

    # -- sync ------------------------------------------------------------------------------------

    def phase_sync(self, rep: PhaseReport) -> None:
        from raibid_gitops.clients.git import Repo
        from raibid_gitops.gitops.reporting import Silent
        from raibid_gitops.gitops.sync import SyncOptions, sync

        if self.opts.dry_run:
            rep.actions.append(f"would wait until Flux has applied the head of {self.full_name} and KEDA accepted "
                               "the ScaledJob (raibid gitops sync)")
            return
        if self.in_effect(Repo(self.opts.dir).head()):
            return
        sync(self.opts.dir, self.kube, SyncOptions(namespace=self.opts.namespace, timeout=self.opts.timeout),
             Silent())
        rep.actions.append(f"Flux applied {Repo(self.opts.dir).head()[:12]} and KEDA accepted the ScaledJob")

    def in_effect(self, head: str) -> bool:
        """Flux's Kustomizations have applied ``head`` and are Ready, and KEDA accepts every
        ScaledJob they hold: a second run has nothing to wait for (and annotates nothing)."""
        from raibid_gitops.clients.kube import ObjectRef
        from raibid_gitops.gitops import keda

        for name in (FLUX_CLUSTER_OBJECT, FLUX_OBJECT_NAME):
            try:
                ks = self.kube.get(ObjectRef(flux.KUSTOMIZE_API, flux.KUSTOMIZATION, name, self.opts.namespace))
            except KubeNotFound:
                return False
            rev = flux.parse_revision(flux.applied_revision(ks))
            if rev is None or rev.digest != head or not flux.is_ready(ks):
                return False
            for ns, sj in keda.scaled_jobs_in(ks):
                obj = self.kube.get_or_none(keda.ref(ns, sj))
                if obj is None or not keda.verdict(obj).accepted:
                    return False
        return True
