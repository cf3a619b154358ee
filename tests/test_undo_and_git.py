"""revert, set on an invalid file, the credential helper and init's upstream, through the real
CLI and real git (a bare repository as the remote; the Gitea versions are in
test_operator_stack.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raibid_gitops.gitops.layout import SETTINGS_PATH


def raibid(*args: str, cwd: Path, env: dict[str, str] | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, input=stdin, timeout=120)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def pushed_repo(tmp_path: Path) -> Path:
    """A config repository whose origin is a bare repository, with main pushed."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    proc = raibid("gitops", "init", str(tmp_path / "cfg"), "--remote", str(remote), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    git(tmp_path / "cfg", "push", "-q", "origin", "main")
    return tmp_path / "cfg"


class TestRevert:
    def test_revert_head_restores_the_old_value_and_pushes(self, pushed_repo: Path) -> None:
        assert raibid("gitops", "set", "agents.maxReplicas=6", cwd=pushed_repo).returncode == 0
        changed = git(pushed_repo, "rev-parse", "HEAD")
        proc = raibid("gitops", "revert", cwd=pushed_repo)
        assert proc.returncode == 0, proc.stderr
        assert "agents.maxReplicas: 6 → 8" in proc.stdout
        assert git(pushed_repo, "log", "-1", "--format=%s").startswith(f"raibid: revert {changed[:12]}")
        assert git(pushed_repo, "rev-parse", "HEAD") == git(pushed_repo, "ls-remote", "origin", "main").split()[0]
        assert raibid("gitops", "verify", cwd=pushed_repo).returncode == 0

    def test_dry_run_changes_nothing(self, pushed_repo: Path) -> None:
        raibid("gitops", "set", "agents.maxReplicas=6", cwd=pushed_repo)
        head = git(pushed_repo, "rev-parse", "HEAD")
        proc = raibid("gitops", "revert", "--dry-run", cwd=pushed_repo)
        assert proc.returncode == 0 and "agents.maxReplicas: 6 → 8" in proc.stdout
        assert git(pushed_repo, "rev-parse", "HEAD") == head and git(pushed_repo, "status", "--porcelain") == ""

    @pytest.mark.parametrize("commit, words", [
        ("--force", "is not a commit"),
        ("nope", "is not a commit of"),
        ("x" * 5000, "5000 characters"),
        ("HEAD\n", "is not a commit"),
    ])
    def test_bad_commit_arguments_are_refused(self, pushed_repo: Path, commit: str, words: str) -> None:
        head = git(pushed_repo, "rev-parse", "HEAD")
        proc = raibid("gitops", "revert", "--", commit, cwd=pushed_repo)
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr and "x" * 100 not in proc.stderr
        assert git(pushed_repo, "rev-parse", "HEAD") == head

    def test_the_first_commit_has_nothing_before_it(self, pushed_repo: Path) -> None:
        proc = raibid("gitops", "revert", "HEAD", cwd=pushed_repo)
        assert proc.returncode == 2 and "first commit" in proc.stderr


class TestSetOnAnInvalidFile:
    def test_a_fix_is_accepted_and_other_changes_are_refused(self, pushed_repo: Path) -> None:
        path = pushed_repo / SETTINGS_PATH
        path.write_text(path.read_text().replace("heartbeatSeconds: 15", "heartbeatSeconds: 200"))
        git(pushed_repo, "commit", "-qam", "hand edit")
        git(pushed_repo, "push", "-q", "origin", "main")
        head = git(pushed_repo, "rev-parse", "HEAD")
        refused = raibid("gitops", "set", "agents.maxReplicas=6", cwd=pushed_repo)
        assert refused.returncode == 2 and "stays invalid" in refused.stderr and "claimIdleSeconds" in refused.stderr
        assert git(pushed_repo, "rev-parse", "HEAD") == head
        fixed = raibid("gitops", "set", "queue.heartbeatSeconds=20", cwd=pushed_repo)
        assert fixed.returncode == 0, fixed.stderr
        assert raibid("gitops", "verify", cwd=pushed_repo).returncode == 0

    def test_a_file_that_does_not_parse_is_beyond_set(self, pushed_repo: Path) -> None:
        path = pushed_repo / SETTINGS_PATH
        path.write_text(path.read_text() + "\n  bad: [unclosed\n")
        git(pushed_repo, "commit", "-qam", "broken yaml")
        git(pushed_repo, "push", "-q", "origin", "main")
        proc = raibid("gitops", "set", "agents.maxReplicas=6", cwd=pushed_repo)
        assert proc.returncode == 2 and "does not parse" in proc.stderr


class TestPlainGitSetup:
    def test_init_sets_the_upstream_and_the_helper_for_that_host_only(self, tmp_path: Path) -> None:
        proc = raibid("gitops", "init", str(tmp_path / "cfg"), "--remote", "http://gitea.example:3000/raibid/cfg.git",
                      cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        cfg = tmp_path / "cfg"
        assert git(cfg, "config", "branch.main.remote") == "origin"
        assert git(cfg, "config", "branch.main.merge") == "refs/heads/main"
        assert git(cfg, "config", "credential.http://gitea.example:3000/.helper") == "!raibid gitops credential"
        assert "token" not in (cfg / ".git" / "config").read_text().lower()


class TestCredentialHelper:
    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAIBID_GITEA")}
        return {**base, **extra}

    def test_get_answers_with_the_token(self, tmp_path: Path) -> None:
        proc = raibid("gitops", "credential", "get", cwd=tmp_path,
                      env=self.env(RAIBID_GITEA_TOKEN="s3cret", RAIBID_GITEA_USER="ops"),
                      stdin="protocol=http\nhost=gitea.example:3000\n\n")
        assert proc.returncode == 0 and proc.stdout == "username=ops\npassword=s3cret\n"

    @pytest.mark.parametrize("op, request_text", [
        ("store", "protocol=http\nhost=h\nusername=u\npassword=p\n\n"),
        ("erase", "protocol=http\nhost=h\n\n"),
        ("get", "protocol=ssh\nhost=h\n\n"),
        ("get", "garbage without equals\n" * 3 + "\n"),
        ("get", "protocol=" + "h" * 100_000 + "\n\n"),
        ("get", ""),
    ])
    def test_nothing_else_gets_an_answer(self, tmp_path: Path, op: str, request_text: str) -> None:
        proc = raibid("gitops", "credential", op, cwd=tmp_path, env=self.env(RAIBID_GITEA_TOKEN="s3cret"),
                      stdin=request_text)
        assert proc.returncode == 0 and "s3cret" not in proc.stdout + proc.stderr

    def test_no_token_no_answer(self, tmp_path: Path) -> None:
        proc = raibid("gitops", "credential", "get", cwd=tmp_path, env=self.env(),
                      stdin="protocol=https\nhost=h\n\n")
        assert proc.returncode == 0 and proc.stdout == ""

    def test_an_unknown_operation_is_refused(self, tmp_path: Path) -> None:
        proc = raibid("gitops", "credential", "steal", cwd=tmp_path, env=self.env(RAIBID_GITEA_TOKEN="s3cret"))
        assert proc.returncode == 2 and "s3cret" not in proc.stdout + proc.stderr


class TestWorkingState:
    """Repo.state(): one `git status --porcelain=v2` read as rev-parse and status --porcelain
    would read the same tree, on every kind of change git reports."""

    def test_every_kind_of_change(self, tmp_path: Path) -> None:
        from raibid_gitops.clients.git import Repo

        g = Repo.init(tmp_path / "r")
        r = g.path
        state = g.state()
        assert state == type(state)("main", None, ())  # before the first commit
        for name in ("a.txt", "b.txt", "c.txt", "d e.txt"):
            (r / name).write_text(name + "\n")
        g.git("add", "-A")
        g.git("-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "one")
        assert g.state() == type(state)("main", g.head(), ())

        (r / "a.txt").write_text("changed\n")  # modified, unstaged
        g.git("mv", "b.txt", "b2.txt")  # renamed, staged
        (r / "c.txt").unlink()  # deleted
        (r / "new\nline.txt").write_text("x\n")  # untracked, a newline in its name
        (r / "sub").mkdir()
        (r / "sub" / "x").write_text("x\n")  # an untracked directory: shown as one entry
        state = g.state()
        assert state.branch == "main" and state.head == g.head()
        assert sorted(state.changed) == sorted(["a.txt", "b2.txt", "c.txt", "new\nline.txt", "sub/"])

        g.git("checkout", "-q", "--detach")
        assert g.state().branch == "HEAD" == g.git("rev-parse", "--abbrev-ref", "HEAD").strip()

    def test_head_as_git_reads_it(self, tmp_path: Path) -> None:
        """Repo.head() reads a detached HEAD from .git/HEAD and asks git otherwise: the same
        answer as rev-parse on a branch, detached, and in a linked worktree (.git is a file)."""
        from raibid_gitops.clients.git import Repo

        g = Repo.init(tmp_path / "r")
        (g.path / "a").write_text("a\n")
        g.git("add", "-A")
        g.git("-c", "user.name=t", "-c", "user.email=t@x.invalid", "commit", "-qm", "one")

        def rev_parse(repo: Repo) -> str:
            return repo.git("rev-parse", "HEAD").strip()

        assert g.head() == rev_parse(g)
        g.git("checkout", "-q", "--detach")
        assert (g.path / ".git" / "HEAD").read_text().strip() == g.head() == rev_parse(g)
        g.git("worktree", "add", "-q", "--detach", str(tmp_path / "wt"))
        wt = Repo(tmp_path / "wt")
        assert (wt.path / ".git").is_file() and wt.head() == rev_parse(wt) == g.head()

    def test_set_names_the_changes_it_refuses_to_commit(self, pushed_repo: Path) -> None:
        from raibid_gitops.errors import ConfigRepoError
        from raibid_gitops.gitops.change import set_settings

        (pushed_repo / "evil\nname").write_text("x\n")
        with pytest.raises(ConfigRepoError, match=r"uncommitted changes \(evil\\nname\)"):
            set_settings(["agents.maxReplicas=6"], repo=pushed_repo)
