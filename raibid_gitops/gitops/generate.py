"""`raibid gitops init`: write a config repository from the shipped templates and settings.

The repository is assembled in a temporary sibling directory, verified and committed there,
then moved into place in one rename, so a failure at any step leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raibid_gitops import settings as settings_mod
from raibid_gitops.errors import ConfigRepoError, VerifyFailed
from raibid_gitops.gitops import generated, layout, settingsdoc, setters
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
            path.write_text(content, encoding="utf-8")
            changed.append(rel)
    return changed


def init(target: Path, *, assignments: list[str] | None = None, remote: str | None = None,
         force: bool = False, author: tuple[str, str] | None = None) -> InitResult:
    from raibid_gitops.clients.git import Repo
    from raibid_gitops.gitops import verify as verify_mod

    target = target.resolve() if target.exists() else Path(os.path.abspath(target))
    if target.exists() and not target.is_dir():
        raise ConfigRepoError(f"{target} exists and is not a directory")
    if target.exists() and any(target.iterdir()) and not force:
        raise ConfigRepoError(f"{target} is not empty", hint="choose an empty or new directory, or pass --force to replace it")
    # Validate everything before touching the disk.
    changes = settings_mod.parse_assignments(assignments or [])
    settings = settings_mod.apply_assignments(settings_mod.defaults(), changes, "--set")

    parent = target.parent
    if not parent.is_dir():
        raise ConfigRepoError(f"{parent} does not exist", hint="create the parent directory first")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=parent))
    try:
        write_tree(staging, settings, changes)
        kustomize_checked = True
        report = verify_mod.verify(staging)
        missing_kustomize = [p for p in report.problems if p.field == "(kustomize build)" and "on PATH" in p.message]
        if missing_kustomize and len(missing_kustomize) == len(report.problems):
            kustomize_checked = False  # settings and markers were checked; the build needs kustomize
        elif report.problems:
            raise VerifyFailed(report.problems)
        repo = Repo.init(staging, branch=settings.gitea.branch)
        subject = "raibid: initialise config repository"
        body = "\n".join(f"Raibid-Set: {k}={v}" for k, v in changes.items())
        commit = repo.commit_all(subject + ("\n\n" + body if body else "") + "\n", author=author)
        if remote:
            repo.add_remote(remote)
        if target.exists():
            # --force: swap the old directory out only now that the new one is complete.
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            target.rename(trash / "old")
            staging.rename(target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InitResult(path=target, commit=commit, settings_hash=settings.hash(), remote=remote,
                      kustomize_checked=kustomize_checked)
