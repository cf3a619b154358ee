"""`raibid gitops init`: write a config repository from the shipped templates and settings.

The repository is assembled in a temporary sibling directory, verified and committed there,
then moved into place in one rename, so a failure at any step leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raibid_gitops import settings as settings_mod
from raibid_gitops.errors import ConfigRepoError, VerifyFailed
from raibid_gitops.gitops import generated, layout, setters, settingsdoc
from raibid_gitops.settings import Settings

CONFIG_README = """# raibid-ci config repository

Flux applies `overlays/dgx-spark` from this repository to the DGX Spark (see
`clusters/dgx-spark`). Edit **one** file: `overlays/dgx-spark/settings.yaml`.

- `raibid gitops set agents.maxReplicas=6 [--pr]` changes a setting and every manifest field
  derived from it, verifies, and commits (to `main`, or as a pull request).
- A hand edit is fine too: edit `settings.yaml`, run `raibid gitops verify`, commit, push.
  Fields marked `# {{"$raibid": "<setting>"}}` must equal their setting; verify says which differ.
- `raibid gitops sync` waits until Flux has applied your commit.

Secrets are never committed: `raibid-redis` (Redis password), `raibid-gitea` (agents' clone
token) in namespace `{namespace}`, and `raibid-config-auth` (Flux's read access) in `flux-system`.
"""

GITIGNORE = "# Never commit credentials or rendered output.\n*.secret.yaml\n.env\n/rendered/\n"


@dataclass(frozen=True)
class InitResult:
    path: Path
    commit: str
    settings_hash: str
    remote: str | None
    kustomize_checked: bool


def write_tree(dst: Path, settings: Settings, changes: dict[str, Any]) -> None:
    """Copy the templates into ``dst`` and bring every derived value in line with ``settings``."""
    src = layout.templates_dir()
    for name in layout.TEMPLATE_DIRS:
        shutil.copytree(src / name, dst / name, symlinks=False)
    settings_path = dst / layout.SETTINGS_PATH
    settings_path.write_text(
        settingsdoc.update_text(settings_path.read_text(encoding="utf-8"), changes, layout.SETTINGS_PATH,
                                expected=settings),
        encoding="utf-8",
    )
    apply_settings(dst, settings)
    (dst / "README.md").write_text(CONFIG_README.format(namespace=settings.cluster.namespace), encoding="utf-8")
    (dst / ".gitignore").write_text(GITIGNORE, encoding="utf-8")


def apply_settings(root: Path, settings: Settings) -> list[str]:
    """Set every marked field and regenerate generated files; return the files changed."""
    changed = []
    for path in setters.marked_files(root):
        old = path.read_text(encoding="utf-8")
        new = setters.apply_text(old, settings)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(path.relative_to(root).as_posix())
    for rel, content in generated.generated_files(settings).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            changed.append(rel)
    return changed


def init(target: Path, *, assignments: list[str] | None = None, remote: str | None = None,
         force: bool = False, author: tuple[str, str] | None = None, nodes: int | None = None) -> InitResult:
    from raibid_gitops.clients.git import Repo, refuse_credentials
    from raibid_gitops.gitops import verify as verify_mod

    # Validate everything before touching the disk.
    if remote:
        refuse_credentials(remote, "--remote")
    changes = settings_mod.parse_assignments(assignments or [])
    if nodes is not None:
        changes = settings_mod.with_nodes(changes, nodes)
    settings = settings_mod.apply_assignments(settings_mod.defaults(), changes, "--set")

    target = Path(os.path.abspath(target))
    if target.is_symlink():
        # rename() would replace the link itself (or fail on a dangling one); either way not
        # what was asked. Resolving it silently would write somewhere the user did not name.
        pointee = os.readlink(target)
        raise ConfigRepoError(f"{target} is a symbolic link (to {pointee})"
                              + ("" if target.exists() else ", which is dangling"),
                              hint="give the directory it should point at, or remove the link")
    if target.exists() and not target.is_dir():
        raise ConfigRepoError(f"{target} exists and is not a directory")
    try:
        non_empty = target.exists() and any(target.iterdir())
    except OSError as exc:
        raise ConfigRepoError(f"cannot read {target}: {exc.strerror or exc}") from exc
    if non_empty and not force:
        raise ConfigRepoError(f"{target} is not empty",
                              hint="choose an empty or new directory, or pass --force to replace it")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigRepoError(f"{parent} does not exist", hint="create the parent directory first")
    # An existing directory keeps its mode; a new one gets what mkdir would give it (mkdtemp
    # makes the staging directory 0700).
    if target.exists():
        mode = stat.S_IMODE(target.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o777 & ~umask
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=parent))
    except OSError as exc:
        raise ConfigRepoError(f"cannot create {target}: {exc.strerror or exc} (in {parent})",
                              hint="choose a directory you can write to") from exc
    try:
        try:
            write_tree(staging, settings, changes)
        except OSError as exc:
            raise ConfigRepoError(f"cannot write the config repository in {parent}: {exc.strerror or exc}") from exc
        # git first: verify's builds are then kept in the new repository's render cache, so
        # the first `set` diffs against them instead of building the tree again.
        repo = Repo.init(staging, branch=settings.gitea.branch)
        kustomize_checked = True
        report = verify_mod.verify(staging)
        missing_kustomize = [p for p in report.problems if p.field == "(kustomize build)" and "on PATH" in p.message]
        if missing_kustomize and len(missing_kustomize) == len(report.problems):
            kustomize_checked = False  # settings and markers were checked; the build needs kustomize
        elif report.problems:
            raise VerifyFailed(report.problems)
        subject = "raibid: initialise config repository"
        body = "\n".join(f"Raibid-Set: {k}={v}" for k, v in changes.items())
        commit = repo.commit_all(subject + ("\n\n" + body if body else "") + "\n", author=author)
        if remote:
            repo.add_remote(remote)
            # Plain git is first-class: `git pull`/`git push` know where to go, and authenticate
            # with RAIBID_GITEA_TOKEN through the credential helper (no token on disk).
            repo.set_upstream(settings.gitea.branch)
            repo.use_credential_helper(remote)
        try:
            os.chmod(staging, mode)
            if target.exists():
                # --force (or an empty directory): swap the old directory out only now that the
                # new one is complete.
                trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
                target.rename(trash / "old")
                staging.rename(target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                staging.rename(target)
        except OSError as exc:
            raise ConfigRepoError(f"cannot move the new config repository into {target}: {exc.strerror or exc}",
                                  hint="is it a mount point, or on another file system? create it in a new "
                                       "directory instead") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InitResult(path=target, commit=commit, settings_hash=settings.hash(), remote=remote,
                      kustomize_checked=kustomize_checked)
