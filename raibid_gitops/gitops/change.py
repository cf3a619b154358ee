"""`raibid gitops set`: a settings change as one verified commit, pushed to the branch Flux
watches or proposed as a Gitea pull request.

The flow, on a clean local clone (or a temporary clone of a Gitea URL)::

    parse KEY=VALUE (types, unknown keys)  ->  nothing touched yet on any error
    check out the base detached            ->  the user's branch does not move until success
    validate on the base (ranges, cross-field rules, capacity)
    update settings.yaml (round trip), marked fields, generated files
    verify; semantic diff of the rendered objects
    commit (structured message, Raibid-Set trailers); push

When the push is refused because the branch moved, the *settings change* is applied again on
the new head (not a text rebase: marked fields and generated files are recomputed from the
merged settings), verified again, and pushed again, a bounded number of times. A key that
somebody else changed meanwhile to another value is a conflict and is reported, never
overwritten. Any failure restores the working tree and branch to exactly what they were.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops.clients.git import (
    Auth,
    Repo,
    auth_from_env,
    fetch_branch,
    is_ancestor,
    redact,
    refuse_credentials,
    rev_parse,
)
from raibid_gitops.errors import (
    ChangeConflict,
    ConfigRepoError,
    GiteaError,
    GitError,
    KustomizeError,
    PushRejected,
    RaibidError,
    SettingsError,
    VerifyFailed,
)
from raibid_gitops.gitops import layout, objdiff

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.settings import Settings

# The settings model (pydantic) is imported where it is used, not here: `raibid gitops set`
# starts its build (see prefetch.py) while the model imports.

#: Push attempts in direct mode. Every round of concurrent writers lets at least one of them
#: land, so N writers racing for the same branch need at most N attempts; ten covers a team
#: scripting changes in parallel, and a bound keeps a broken remote from looping forever.
MAX_ATTEMPTS = 10
#: Base pause between attempts, grown per attempt and jittered, so writers that collided do
#: not collide again in lockstep.
RETRY_PAUSE = 0.1
#: A subject longer than this is summarised (git tools show ~72 characters of a subject).
SUBJECT_MAX = 72
BRANCH_PREFIX = "raibid/set-"
#: Seconds a pull request waits for Gitea to record the branch just pushed for it (Gitea does
#: that from a queue after the push returns; on a busy 2-core machine it took over a second).
PUSHED_BRANCH_WAIT = 15.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SettingChange:
    key: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass
class SetResult:
    changes: list[SettingChange]
    diff: list[objdiff.ObjectChange]
    dry_run: bool = False
    commit: str | None = None
    #: Where the commit went: the branch Flux watches, a PR branch, or the local branch only.
    pushed_to: str | None = None
    attempts: int = 1
    pr_number: int | None = None
    pr_url: str | None = None
    settings_hash: str | None = None
    message: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": [c.to_dict() for c in self.changes],
            "diff": objdiff.to_data(self.diff),
            "dryRun": self.dry_run,
            "commit": self.commit,
            "pushed": self.pushed_to is not None,
            "pushedTo": self.pushed_to,
            "attempts": self.attempts,
            "pullRequest": {"number": self.pr_number, "url": self.pr_url} if self.pr_number else None,
            "settingsHash": self.settings_hash,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------
# Formatting: commit message, PR body, branch name


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _subject_value(value: Any) -> str:
    """A value as the subject line shows it: a control character (a newline would end the
    subject) is shown escaped."""
    text = format_value(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        text = json.dumps(text)[1:-1]
    return text


def commit_subject(changes: list[SettingChange], limit: int = SUBJECT_MAX, verb: str = "set") -> str:
    """``raibid: set KEY OLD → NEW[, ...]``, shortened to ``limit`` characters without losing
    what the commit does: first the old values go (``KEY=NEW``), then whole settings from the
    end (``(+2 more)``), and a value too long for the line is cut in the middle with ``…`` —
    never dropped without a mark. The body and the trailers always carry every value whole."""
    prefix = f"raibid: {verb} "
    subject = prefix + ", ".join(f"{c.key} {_subject_value(c.old)} → {_subject_value(c.new)}" for c in changes)
    if len(subject) <= limit:
        return subject
    parts = [f"{c.key}={_subject_value(c.new)}" for c in changes]
    for shown_n in range(len(parts), 0, -1):
        rest = len(parts) - shown_n
        subject = prefix + ", ".join(parts[:shown_n]) + (f" (+{rest} more)" if rest else "")
        if len(subject) <= limit:
            return subject
    # Not even the first setting fits whole: cut the middle of its value (an image's tag and a
    # URL's path are at the end, a list's first item at the start), keep its key and the count.
    more = f" (+{len(parts) - 1} more)" if len(parts) > 1 else ""
    head = prefix + f"{changes[0].key}="
    room = max(0, limit - len(head) - len(more) - 1)  # 1 for the ellipsis
    value = _subject_value(changes[0].new)
    start = room * 2 // 5
    return head + value[:start] + "…" + (value[len(value) - (room - start):] if room > start else "") + more


def commit_message(changes: list[SettingChange], note: str | None = None, settings_hash: str | None = None,
                   revert_of: tuple[str, str] | None = None) -> str:
    """Subject :func:`commit_subject`, a body listing every change, and trailers
    ``Raibid-Set: KEY=VALUE`` that tools (sync, the TUI, `git log --grep`) can parse. A revert
    says so: subject ``raibid: revert <sha> KEY OLD → NEW``, trailer ``Raibid-Revert: <sha>``."""
    subject = commit_subject(changes, verb=f"revert {revert_of[0][:12]}" if revert_of else "set")
    body = ["Changes to " + layout.SETTINGS_PATH + ":", ""]
    body += [f"  {c.key}: {format_value(c.old)} → {format_value(c.new)}" for c in changes]
    if note:
        body = [note.strip(), ""] + body
    if revert_of:
        body = [f"Reverts {revert_of[0]} ({revert_of[1]}).", ""] + body
    trailers = [f"Raibid-Set: {c.key}={format_value(c.new)}" for c in changes]
    if revert_of:
        trailers.append(f"Raibid-Revert: {revert_of[0]}")
    if settings_hash:
        trailers.append(f"Raibid-Settings-Hash: {settings_hash}")
    return subject + "\n\n" + "\n".join(body) + "\n\n" + "\n".join(trailers) + "\n"


def parse_trailers(message: str) -> dict[str, Any]:
    """``Raibid-Set`` trailers of a commit message -> {key: value text}."""
    out: dict[str, Any] = {}
    for line in message.splitlines():
        m = re.fullmatch(r"Raibid-Set:\s*([^=\s]+)=(.*)", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def branch_name(changes: list[SettingChange], commit: str) -> str:
    """``raibid/set-agents.maxReplicas-12-<sha8>``: readable in `pr list`, unique per commit,
    and a valid ref whatever the value holds."""
    first = changes[0]
    label = f"{first.key}-{format_value(first.new)}"
    if len(changes) > 1:
        label += f"-and-{len(changes) - 1}-more"
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")[:60].rstrip("-.")
    label = label.replace("..", ".")
    return f"{BRANCH_PREFIX}{label}-{commit[:8]}"


def change_table(changes: list[SettingChange]) -> str:
    rows = ["| setting | old | new |", "|---|---|---|"]
    rows += [f"| `{c.key}` | `{format_value(c.old)}` | `{format_value(c.new)}` |" for c in changes]
    return "\n".join(rows)


def pr_body(changes: list[SettingChange], diff: list[objdiff.ObjectChange], commit: str,
            verify_summary: str, note: str | None = None) -> str:
    parts = []
    if note:
        parts += [note.strip(), ""]
    parts += [
        f"Changes `{layout.SETTINGS_PATH}` and every field derived from it (made by `raibid gitops set`).",
        "",
        change_table(changes),
        "",
        "**Rendered objects** (kustomize build of this branch against its base):",
        "",
        "```",
        objdiff.format_text(diff).rstrip("\n"),
        "```",
        "",
        (f"`raibid gitops verify` at `{commit[:12]}`: {verify_summary}. "
         "The commit status `raibid/verify` reports the same check; a later push to this branch "
         "(or an edit in the web editor) is checked again with `raibid gitops verify --commit-status`."),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# The set flow


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _assignment_text(requested: dict[str, Any]) -> str:
    from raibid_gitops.errors import shown

    # Values are shown cut: a refused value may be anything the user (or a script) passed.
    return " ".join(f"{k}={shown(format_value(v))}" for k, v in requested.items())


def _is_url(target: str | Path | None) -> bool:
    return isinstance(target, str) and re.match(r"^https?://", target) is not None


@dataclass
class _Checkout:
    """What the repository looked like before set touched it, and how to get back there."""

    repo: Repo
    branch: str  # "HEAD" when detached
    head: str
    touched: set[str] = field(default_factory=set)

    def restore(self) -> None:
        g = self.repo
        if self.branch != "HEAD":
            g.git("checkout", "--quiet", "--force", self.branch)
        else:
            g.git("checkout", "--quiet", "--force", "--detach", self.head)
        g.git("reset", "--quiet", "--hard", self.head)
        if self.touched:
            # Only files set wrote (e.g. a generated file new on this base); the tree was clean
            # before, so any untracked one among them is ours.
            g.git("clean", "--quiet", "-f", "--", *sorted(self.touched))


class _RawSettings:
    """An invalid settings file's parsed data, read like Settings (``get``) so set can apply a
    change that makes it valid."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def get(self, key: str) -> Any:
        from raibid_gitops import settings as settings_mod

        return settings_mod.get_data(self.data, key)


@dataclass
class _Applied:
    base: str
    base_settings: Settings | _RawSettings
    new_settings: Settings
    changes: list[SettingChange]
    diff: list[objdiff.ObjectChange]
    verify_summary: str
    commit: str | None = None


def _render(root: Path) -> list[dict[str, Any]] | None:
    """The objects the working tree renders to (overlay and Flux objects), from the render
    cache when this content was built before (see :mod:`raibid_gitops.gitops.rendercache`)."""
    from raibid_gitops.gitops import rendercache

    objs: list[dict[str, Any]] = []
    for build in rendercache.build_all([root / rel for rel in (layout.OVERLAY_DIR, layout.CLUSTER_DIR)], root=root):
        try:
            objs.extend(build.objects())
        except KustomizeError:
            return None  # the base does not build; the diff then lists every object as added
    return objs


#: Called with the changes and the new settings once they are written, while kustomize
#: builds them; returns the commit it made (None: none).
CommitEarly = Callable[[list[SettingChange], "Settings"], "str | None"]


def _apply_on(co: _Checkout, base: str, requested: dict[str, Any], seen: dict[str, Any] | None,
              commit: CommitEarly | None = None) -> _Applied:
    """Check out ``base`` detached and apply the requested settings to it (working tree only).

    ``seen``: the values the user's change was made against (from the first base). On a later
    base, a key whose value moved away from ``seen`` to something other than ours is a conflict.

    ``commit``: makes the commit while kustomize builds the new tree, before verify has judged
    it. Safe because HEAD is detached here: a commit verify then rejects is dropped by the
    restore like every other change, and the user's branch never sees it.
    """
    from raibid_gitops import settings as settings_mod
    from raibid_gitops.gitops import generate, rendercache, settingsdoc
    from raibid_gitops.gitops.verify import RENDERED_DIRS, verify

    g, root = co.repo, co.repo.path
    g.git("checkout", "--quiet", "--force", "--detach", base)
    settings_file = root / layout.SETTINGS_PATH
    try:
        text = settings_file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigRepoError(f"{layout.SETTINGS_PATH} does not exist at {base[:12]}",
                              hint="is this a raibid config repository? `raibid gitops init DIR` creates one") from exc
    base_invalid: SettingsError | None = None
    base_settings: Settings | _RawSettings
    try:
        base_settings = settings_mod.load_text(text, layout.SETTINGS_PATH)
    except SettingsError as exc:
        # Invalid as it stands: the change may be the fix. Apply it to the parsed data and judge
        # the result; only a file that does not even parse is beyond set.
        base_invalid = exc
        try:
            base_settings = _RawSettings(settings_mod.load_data(text, layout.SETTINGS_PATH))
        except SettingsError as exc:
            raise ConfigRepoError(
                f"{layout.SETTINGS_PATH} at {base[:12]} does not parse, so set cannot build on it:\n{exc.message}",
                hint="fix it by hand (`raibid gitops verify` lists the problems), commit, then set again",
            ) from exc
    try:
        new_settings = settings_mod.apply_assignments(
            base_settings.data if isinstance(base_settings, _RawSettings) else base_settings, requested, "set")
    except SettingsError as exc:
        reasons = "\n".join(f"  {p.field}: {p.message}" for p in exc.problems) or f"  {exc.message}"
        if base_invalid is not None:
            raise SettingsError(
                f"refused, nothing changed: {layout.SETTINGS_PATH} at {base[:12]} is invalid, and stays invalid "
                f"with {_assignment_text(requested)}:\n{reasons}",
                problems=exc.problems,
                hint="set every setting that `raibid gitops verify` names, in one command, or fix the file by hand",
            ) from None
        if seen is None:
            raise SettingsError(
                f"refused, nothing changed: {_assignment_text(requested)} does not validate:\n{reasons}",
                problems=exc.problems, hint="`raibid gitops get` shows the current values; "
                "`raibid gitops schema` the allowed ones",
            ) from None
        raise ChangeConflict(
            f"your change no longer validates together with what was pushed meanwhile (now at {base[:12]}):\n"
            f"{exc.message}", hint="look at `git log` of the branch, then set values that fit together",
        ) from exc

    conflicts = []
    for key in requested:
        now, ours = base_settings.get(key), new_settings.get(key)
        if seen is not None and not _same(now, seen[key]) and not _same(now, ours):
            conflicts.append(f"{key} was changed meanwhile from {format_value(seen[key])} to "
                             f"{format_value(now)} (you asked for {format_value(ours)})")
    if conflicts:
        who = g.git("log", "-1", "--format=%h %an: %s", base, "--", layout.SETTINGS_PATH).strip()
        raise ChangeConflict(
            "not applied, nothing overwritten: " + "; ".join(conflicts) + (f" [latest change: {who}]" if who else ""),
            hint="pull, look at the new value, and run set again if yours should still win",
        )

    changes = [SettingChange(k, base_settings.get(k), new_settings.get(k))
               for k in requested if not _same(base_settings.get(k), new_settings.get(k))]
    if not changes:
        return _Applied(base, base_settings, new_settings, [], [], "")

    old_objects = _render(root)
    effective = {c.key: requested[c.key] for c in changes}
    co.touched.add(layout.SETTINGS_PATH)
    settings_file.write_text(settingsdoc.update_text(text, effective, layout.SETTINGS_PATH, expected=new_settings),
                             encoding="utf-8")
    co.touched.update(generate.apply_settings(root, new_settings))
    builds = rendercache.start([root / rel for rel in RENDERED_DIRS], root=root)
    made = commit(changes, new_settings) if commit is not None else None
    report = verify(root, builds=builds)
    if not report.ok:
        raise VerifyFailed(report.problems)
    diff = objdiff.diff_objects(old_objects or [], report.objects)
    summary = f"{report.checked_fields} marked fields, {len(report.objects)} objects valid"
    return _Applied(base, base_settings, new_settings, changes, diff, summary, made)


def set_settings(
    assignments: list[str],
    *,
    repo: str | Path | None = None,
    message: str | None = None,
    pr: bool = False,
    dry_run: bool = False,
    author: tuple[str, str] | None = None,
    auth: Auth | None = None,
    remote: str = "origin",
    max_attempts: int = MAX_ATTEMPTS,
    gitea_url: str | None = None,
    progress: Progress | None = None,
) -> SetResult:
    """Change settings as one commit. ``repo``: a directory inside a config repository (default:
    the current one) or an http(s) URL to clone into a temporary directory."""
    say = progress or (lambda _msg: None)
    if not _is_url(repo):
        from raibid_gitops.gitops import prefetch

        prefetch.start(Path(repo) if repo else None, assignments)
    from raibid_gitops import settings as settings_mod

    requested = settings_mod.parse_assignments(assignments)  # types and unknown keys, before anything
    if not requested:
        raise SettingsError("nothing to set", hint="give one or more KEY=VALUE, e.g. agents.maxReplicas=12")
    auth = auth or auth_from_env()
    if _is_url(repo):
        url = str(repo)
        refuse_credentials(url, "-C")
        if auth is None:
            from raibid_gitops.clients.git import credential_token

            auth = credential_token(url)
        tmp = Path(tempfile.mkdtemp(prefix="raibid-set-"))
        try:
            say(f"cloning {redact(url)}")
            g = Repo.clone(url, tmp / "config", auth=auth)
            return _set_in(g, requested, message=message, pr=pr, dry_run=dry_run, author=author,
                           remote=remote, max_attempts=max_attempts, gitea_url=gitea_url, say=say)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root = layout.find_repo_root(Path(repo) if repo else None)
    return _set_in(Repo(root, auth), requested, message=message, pr=pr, dry_run=dry_run, author=author,
                   remote=remote, max_attempts=max_attempts, gitea_url=gitea_url, say=say)


def _set_in(g: Repo, requested: dict[str, Any], *, message: str | None, pr: bool, dry_run: bool,
            author: tuple[str, str] | None, remote: str, max_attempts: int, gitea_url: str | None,
            say: Progress, seen: dict[str, Any] | None = None, revert_of: tuple[str, str] | None = None
            ) -> SetResult:
    """The set flow in clone ``g``. ``seen``: the values the change was made against, when known
    up front (a revert undoes the values its commit set: a key changed again since is a
    conflict). ``revert_of``: (commit, subject) when the change reverts that commit."""
    state = g.state()
    if state.changed:
        dirty = [json.dumps(path)[1:-1] for path in state.changed[:6]]  # a newline in a name stays escaped
        listed = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        raise ConfigRepoError(
            f"{g.path} has uncommitted changes ({listed}); set commits only its own change",
            hint="commit, stash (`git stash -u`) or discard them, then run set again",
        )
    # No commit yet: g.head() raises git's own words for it.
    co = _Checkout(repo=g, branch=state.branch, head=state.head or g.head())
    has_remote = g.remote_url(remote) is not None
    target_branch = _target_branch(g)

    client = ref = None
    if pr and not dry_run:
        if not has_remote:
            raise ConfigRepoError(f"--pr needs the Gitea remote {remote!r}; {g.path} has none",
                                  hint=f"`git remote add {remote} http://HOST/OWNER/REPO.git`")
        from raibid_gitops.gitops.status_report import client_for, resolve_target

        ref = resolve_target(g.path, url=gitea_url, remote=remote)
        client = client_for(ref)
        client.get_repo(ref)  # unreachable or no access: fail now, before anything is pushed
    elif has_remote and not dry_run and co.branch != target_branch:
        raise ConfigRepoError(
            f"{g.path} is on {'a detached HEAD' if co.branch == 'HEAD' else 'branch ' + co.branch}; "
            f"set pushes to {target_branch}",
            hint=f"`git checkout {target_branch}`, or use --pr to propose the change from here",
        )

    if has_remote and not pr and not dry_run:
        _refuse_unpushed(g, co.head, remote, target_branch)

    base = co.head
    if pr and not dry_run:
        # A PR is proposed against the remote branch as it is now, not a stale local copy.
        base = fetch_branch(g, remote, target_branch)

    def commit_early(changes: list[SettingChange], new_settings: Settings) -> str | None:
        if dry_run:
            return None
        return g.commit_all(commit_message(changes, message, new_settings.hash(), revert_of=revert_of), author=author)

    attempt = 0
    try:
        while True:
            attempt += 1
            applied = _apply_on(co, base, requested, seen, commit_early)
            if seen is None:
                seen = {k: applied.base_settings.get(k) for k in requested}
            result = SetResult(changes=applied.changes, diff=applied.diff, dry_run=dry_run, attempts=attempt,
                               settings_hash=applied.new_settings.hash())
            if not applied.changes:
                result.notes.append("every setting already has the requested value; nothing to commit")
                co.restore()
                return result
            if dry_run:
                co.restore()
                return result
            result.message = commit_message(applied.changes, message, applied.new_settings.hash(),
                                            revert_of=revert_of)
            assert applied.commit is not None
            commit = applied.commit
            result.commit = commit
            if pr:
                assert client is not None and ref is not None
                _propose(g, co, client, ref, remote, target_branch, applied, result, message, say)
                co.restore()  # the proposal lives on Gitea; the local checkout is as it was
                return result
            if not has_remote:
                _advance(co, commit)
                result.pushed_to = None
                result.notes.append(f"no remote {remote!r}: committed on the local branch only")
                return result
            try:
                g.push(remote, f"HEAD:refs/heads/{target_branch}")
            except PushRejected as exc:
                if not exc.non_fast_forward:
                    raise  # its hint says why (protection, permissions), when git told us
                if attempt >= max_attempts:
                    raise PushRejected(
                        f"{target_branch} kept moving: gave up after {attempt} attempts; nothing was pushed",
                        non_fast_forward=True, hint="run set again",
                    ) from None
                say(f"{target_branch} moved meanwhile; applying the change again on the new head "
                    f"(attempt {attempt + 1}/{max_attempts})")
                time.sleep(random.uniform(0.5, 1.5) * RETRY_PAUSE * attempt)
                new_base = fetch_branch(g, remote, target_branch)
                if not is_ancestor(g, co.head, new_base):
                    raise ConfigRepoError(
                        f"your local {target_branch} has commits that {remote}/{target_branch} does not; "
                        "set will not push them under a settings change",
                        hint=f"`git pull --rebase {remote} {target_branch}` (or push them), then set again",
                    ) from None
                base = new_base
                continue
            _advance(co, commit)
            result.pushed_to = target_branch
            return result
    except BaseException:
        try:
            co.restore()
        except RaibidError as exc:  # pragma: no cover - report the first failure, mention this one
            say(f"warning: could not restore {g.path}: {exc}")
        raise
    finally:
        if client is not None:
            client.close()


def _refuse_unpushed(g: Repo, head: str, remote: str, branch: str) -> None:
    """Refuse when the local branch has commits the remote branch (as last fetched) lacks:
    set pushes one settings change, not whatever else was committed locally."""
    tracking = rev_parse(g, f"refs/remotes/{remote}/{branch}")
    if tracking is None or tracking == head or is_ancestor(g, head, tracking):
        return  # never pushed yet, in step, or only behind (the retry loop builds on the new head)
    ahead = g.git("rev-list", "--count", f"{tracking}..{head}").strip()
    raise ConfigRepoError(
        f"your local {branch} has {ahead} commit(s) that {remote}/{branch} does not; "
        "set pushes only its own change",
        hint=f"push them first (`git push {remote} {branch}`), or drop them (`git reset --hard {remote}/{branch}`)",
    )


def _target_branch(g: Repo) -> str:
    """The branch Flux watches (settings gitea.branch at HEAD); main if that cannot be read (the
    settings problem itself is then reported by the apply step). Read from the working tree: set
    has just found it clean, so it is HEAD's file, and the apply step reads the same text."""
    from raibid_gitops import settings as settings_mod

    try:
        return settings_mod.load_path(g.path / layout.SETTINGS_PATH, layout.SETTINGS_PATH).gitea.branch
    except SettingsError:
        return "main"


def _advance(co: _Checkout, commit: str) -> None:
    """Move the user's branch to the new commit (a descendant of where it was) and check it out."""
    g = co.repo
    if co.branch == "HEAD":
        g.git("checkout", "--quiet", "--detach", commit)
    else:
        g.git("checkout", "--quiet", "-B", co.branch, commit)


def _propose(g: Repo, co: _Checkout, client: Any, ref: Any, remote: str, target_branch: str, applied: _Applied,
             result: SetResult, note: str | None, say: Progress) -> None:
    from raibid_gitops.gitops.status_report import CONTEXT

    commit = result.commit
    assert commit is not None
    branch = branch_name(applied.changes, commit)
    g.push(remote, f"HEAD:refs/heads/{branch}")
    say(f"pushed {commit[:12]} to {branch}")
    title = result.message.splitlines()[0]
    try:
        pull = client.create_pull(ref, head=branch, base=target_branch, title=title,
                                  body=pr_body(applied.changes, applied.diff, commit, applied.verify_summary, note),
                                  head_pushed_within=PUSHED_BRANCH_WAIT)
    except GiteaError:
        # No PR, no stray branch: the remote stays as it was.
        try:
            g.push(remote, f":refs/heads/{branch}")
        except GitError:
            pass
        raise
    result.pr_number = int(pull["number"])
    result.pr_url = str(pull.get("html_url") or f"{ref.web_url}/pulls/{pull['number']}")
    result.pushed_to = branch
    try:
        client.create_status(ref, commit, state="success", context=CONTEXT,
                             description=f"ok: {applied.verify_summary}")
    except GiteaError as exc:
        result.notes.append(f"the PR is open but its commit status could not be set: {exc.message}")
