"""The agent's authenticated clone from a *private* Gitea repository on the local stack.

The clone token (a mounted Secret file) reaches git as an ``http.extraHeader`` through the
environment. Against a private repository that header is what makes the clone work; without it
the clone fails and says why. The token must show in no log line (the agent's and the job's),
in no process's command line (/proc/*/cmdline while git runs) and not in ``.git/config``.
(Checkouts from file:// cannot test this: git ignores http.extraHeader there.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from raibid_agent.runner import Runner
from raibid_agent.settings_source import SettingsHolder
from raibid_agent.worker import Worker
from raibid_gitops import contract as c
from raibid_gitops.queue import JobSpec, get_job, submit
from raibid_gitops.queue.jobs import read_logs

pytestmark = pytest.mark.redis

#: The pipeline of the repository's first commit: prints the checkout's .git/config into the job
#: log, so the test can look for the token in it (the checkout is deleted after the job).
PIPELINE = "steps:\n  - name: show\n    run: cat marker.txt; cat .git/config\n"


@dataclass(frozen=True)
class PrivateRepo:
    full_name: str
    first: str
    token: str
    base_url: str


@pytest.fixture
def private_repo(gitea, gitea_repo, tmp_path: Path) -> PrivateRepo:
    """The fixture's repository (private, in the organisation) with two commits pushed."""
    meta = gitea.api("GET", f"/repos/{gitea_repo.owner}/{gitea_repo.name}")
    assert isinstance(meta, dict) and meta["private"], "the test needs a private repository"
    work = tmp_path / "src"
    work.mkdir()
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    gitea_repo.git("init", "-q", "-b", "main", cwd=work)
    (work / "marker.txt").write_text("first commit\n")
    (work / ".raibid.yml").write_text(PIPELINE)
    gitea_repo.git("add", ".", cwd=work)
    gitea_repo.git(*ident, "commit", "-qm", "one", cwd=work)
    first = gitea_repo.git("rev-parse", "HEAD", cwd=work).strip()
    (work / "marker.txt").write_text("second commit\n")
    gitea_repo.git(*ident, "commit", "-qam", "two", cwd=work)
    gitea_repo.git("push", "-q", gitea_repo.clone_url, "HEAD:refs/heads/main", cwd=work)
    return PrivateRepo(f"{gitea_repo.owner}/{gitea_repo.name}", first, gitea.token, gitea.url)


@pytest.fixture
def git_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`git` on PATH is a wrapper that, each time the runner starts git, records every
    process's command line (its own included: the argv git is about to run with)."""
    real = shutil.which("git")
    assert real, "git is not installed"
    bindir, record = tmp_path / "spy-bin", tmp_path / "cmdlines.txt"
    bindir.mkdir()
    spy = bindir / "git"
    spy.write_text(f"""#!/bin/sh
echo "=== git $*" >> {record}
for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null; echo; done >> {record}
exec {real} "$@"
""")
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    record.write_text("")
    return record


def run_job(client, runner: Runner, spec: JobSpec):
    holder = SettingsHolder()
    settings = json.dumps({"queue": {"claimIdleSeconds": 5, "heartbeatSeconds": 1},
                           "agents": {"idleTimeoutSeconds": 2}})
    assert holder.offer(settings, "test", "settings.yaml") is not None
    worker = Worker(client, holder, "checkout-agent", runner, once=True)
    done = submit(client, holder.current().settings, spec)
    assert worker.run() == 0
    return get_job(client, done.job_id), [line.format() for line in read_logs(client, done.job_id)]


class TestPrivateClone:
    def test_with_the_token_file_the_clone_works_and_the_token_shows_nowhere(
            self, redis_client, private_repo: PrivateRepo, git_spy: Path, tmp_path: Path,
            caplog: pytest.LogCaptureFixture):
        token_file = tmp_path / "token"
        token_file.write_text(private_repo.token + "\n")
        caplog.set_level(logging.DEBUG)
        runner = Runner(token_file=str(token_file), git_base_url=private_repo.base_url)
        job, logs = run_job(redis_client, runner, JobSpec(private_repo.full_name, "main", commit=private_repo.first))

        assert job.state == c.STATE_SUCCEEDED, logs
        assert "first commit" in logs, "checked out the exact commit"
        printed = "\n".join(logs)  # the job's log lines, .git/config among them
        cmdlines = git_spy.read_text()
        token = private_repo.token
        assert token not in printed, ".git/config or a job log line holds the token"
        assert token not in job.reason
        assert token not in caplog.text, "an agent log line holds the token"
        assert token not in cmdlines, "a process's command line holds the token"
        # ... and the places looked at are the right ones:
        assert f'url = {private_repo.base_url}/{private_repo.full_name}.git' in printed, "the .git/config was printed"
        git_runs = [line for line in cmdlines.splitlines() if line.startswith("=== git ")]
        assert len(git_runs) >= 4 and any(" fetch " in run for run in git_runs), "git ran through the spy"

    def test_without_a_token_the_clone_fails_and_says_why(self, redis_client, private_repo: PrivateRepo,
                                                           tmp_path: Path):
        missing = tmp_path / "no-such-token"
        runner = Runner(token_file=str(missing), git_base_url=private_repo.base_url)
        job, logs = run_job(redis_client, runner, JobSpec(private_repo.full_name, "main"))
        assert job.state == c.STATE_FAILED, logs
        assert job.reason.startswith("checkout failed:")
        assert f"no clone token was sent ({missing} is missing or empty)" in job.reason
        # ... and what to do about it (issue 17 item 10), in the record and the job's log.
        assert "give the agent a Gitea token with read access, --gitea-token-file FILE" in job.reason
        assert any("--gitea-token-file FILE (or RAIBID_GITEA_TOKEN_FILE" in line for line in logs)

    def test_a_wrong_token_is_refused_and_not_shown(self, redis_client, private_repo: PrivateRepo, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture):
        wrong = "0123456789abcdef0123456789abcdef01234567"
        token_file = tmp_path / "token"
        token_file.write_text(wrong)
        caplog.set_level(logging.DEBUG)
        runner = Runner(token_file=str(token_file), git_base_url=private_repo.base_url)
        job, logs = run_job(redis_client, runner, JobSpec(private_repo.full_name, "main"))
        assert job.state == c.STATE_FAILED, logs
        assert f"the clone token in {token_file} was refused" in job.reason
        assert not any(wrong in line for line in [*logs, job.reason, caplog.text])
