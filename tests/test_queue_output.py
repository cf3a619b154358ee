"""Issue 17 items 8 and 10 for `raibid queue`, through the real command and a real redis-server:
every command takes the common ``-o`` values, data output carries ISO 8601 times, and a job
queued with a ref only shows the commit its agent checked out (COMMIT in `queue list`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_redis import AgentPool, wait_until
from ruamel.yaml import YAML

from raibid_agent.runner import Runner
from raibid_agent.settings_source import SettingsHolder
from raibid_agent.worker import Entry, Worker
from raibid_gitops import contract as c
from raibid_gitops.cli.output import FORMATS
from raibid_gitops.queue import JobSpec, get_job, submit

pytestmark = pytest.mark.redis

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def queue_cli(redis_server, tmp_path: Path):
    """`raibid queue ...` as a user runs it: a subprocess, outside any config repository."""

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "RAIBID_REDIS_PASSWORD": redis_server.password}
        env.pop("RAIBID_REDIS_URL", None)
        return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "queue", *args,
                               "--redis-url", redis_server.url], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    return run


def _yaml(text: str):
    return YAML(typ="safe").load(text)


class TestTimesAreISO:
    def test_status_list_logs_in_json_and_yaml(self, queue_cli, redis_client):
        job = queue_cli("submit", "--repo", "raibid/hello", "--ref", "main").stdout.strip()
        assert queue_cli("cancel", job).returncode == 0  # a final state: a finish time and a log line
        for fmt, load in (("json", json.loads), ("yaml", _yaml)):
            status = load(queue_cli("status", job, "-o", fmt).stdout)
            assert ISO.fullmatch(status["submitted_at"]) and ISO.fullmatch(status["finished_at"]), status
            assert status["started_at"] is None
            (listed,) = [j for j in load(queue_cli("list", "-o", fmt).stdout) if j["id"] == job]
            assert listed["submitted_at"] == status["submitted_at"]
            logs = load(queue_cli("logs", job, "-o", fmt).stdout)
            assert logs and all(ISO.fullmatch(line["time"]) for line in logs)
            assert logs[-1]["line"].startswith("finished: cancelled")
        # the same instant as stored, to the microsecond
        stored = float(redis_client.hget(c.job_key(job), c.REC_SUBMITTED_AT))
        from datetime import datetime

        shown = json.loads(queue_cli("status", job, "-o", "json").stdout)["submitted_at"]
        assert abs(datetime.fromisoformat(shown.replace("Z", "+00:00")).timestamp() - stored) < 1e-5

    def test_following_logs_as_data(self, queue_cli):
        job = queue_cli("submit", "--repo", "raibid/hello", "--ref", "main").stdout.strip()
        queue_cli("cancel", job)
        lines = queue_cli("logs", job, "-f", "-o", "json").stdout.splitlines()
        assert lines and all(ISO.fullmatch(json.loads(line)["time"]) for line in lines)  # JSON Lines
        items = _yaml(queue_cli("logs", job, "-f", "-o", "yaml").stdout)
        assert [i["line"] for i in items] == [json.loads(line)["line"] for line in lines]  # one YAML list

    def test_dead_letters(self, queue_cli, redis_client):
        holder = SettingsHolder()
        holder.offer(json.dumps({"queue": {"claimIdleSeconds": 5, "heartbeatSeconds": 1}}), "t", "settings.yaml")
        snap = holder.current()
        done = submit(redis_client, snap.settings, JobSpec("raibid/hello", "main"))
        q = snap.settings.queue
        (_, [(eid, fields)]), = redis_client.xreadgroup(q.consumer_group, "a", {q.stream: ">"}, count=1)
        Worker(redis_client, holder, "a", Runner())._dead_letter(snap, Entry(eid, fields, 9, False), "poison")
        (dead,) = _yaml(queue_cli("dead", "list", "-o", "yaml").stdout)
        assert dead["job_id"] == done.job_id and ISO.fullmatch(dead["fields"]["submitted_at"])


class TestEveryQueueCommandTakesO:
    @pytest.mark.parametrize("fmt", [*FORMATS, "table"])
    def test_values(self, queue_cli, fmt: str):
        r = queue_cli("submit", "--repo", "raibid/hello", "--ref", "main", "-o", fmt)
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)["job"] if fmt == "json" else (_yaml(r.stdout)["job"] if fmt == "yaml"
                                                                  else r.stdout.strip())
        for args in (["list"], ["status", job], ["logs", job], ["stats"], ["dead", "list"], ["cancel", job]):
            r = queue_cli(*args, "-o", fmt)
            assert r.returncode == 0, (args, r.stderr)
            if fmt == "json":
                json.loads(r.stdout)

    @pytest.mark.parametrize("bad", ["xml", "", "TABLE", "y" * 3000])
    @pytest.mark.parametrize("command", [["list"], ["stats"], ["status", "x"], ["logs", "x"], ["dead", "list"],
                                         ["submit", "--repo", "raibid/hello", "--ref", "main"]])
    def test_bad_value(self, queue_cli, redis_client, bad: str, command: list[str]):
        r = queue_cli(*command, "-o", bad)
        assert r.returncode == 2 and "is not an output format" in r.stderr and "y" * 100 not in r.stderr
        assert redis_client.exists(c.JOBS_INDEX) == 0, "nothing was submitted"


@pytest.fixture
def hello_repo(tmp_path: Path) -> tuple[Path, str, Path]:
    """A bare repository served over file://; its pipeline waits for a file (so a test can look
    at the running job) and prints the commit. Returns (base dir, head commit, the go file)."""
    base = tmp_path / "git"
    bare = base / "raibid" / "hello.git"
    work = tmp_path / "work"
    go = tmp_path / "go"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / ".raibid.yml").write_text(
        f"steps:\n  - name: wait\n    run: while [ ! -e {go} ]; do sleep 0.05; done; git rev-parse HEAD\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    git("remote", "add", "origin", bare.as_uri())
    git("push", "-q", "origin", "main")
    return base, git("rev-parse", "HEAD"), go


class TestCommitAfterBuild:
    def test_ref_only_job_shows_the_commit_checked_out(self, queue_cli, redis_client, agents: AgentPool,
                                                       hello_repo: tuple[Path, str, Path]):
        base, head, go = hello_repo
        job = queue_cli("submit", "--repo", "raibid/hello", "--ref", "main").stdout.strip()
        assert get_job(redis_client, job).commit == ""
        agent = agents.spawn("--git-base-url", base.as_uri(), once=True)
        # While it runs: the commit is recorded as soon as it is checked out.
        wait_until(lambda: get_job(redis_client, job).state == c.STATE_RUNNING and get_job(redis_client, job).commit,
                   60, what="the running job to show its commit")
        assert get_job(redis_client, job).commit == head
        go.write_text("")
        assert agent.wait(120) == 0, agents.log_text(agent.agent_id)  # type: ignore[attr-defined]
        final = get_job(redis_client, job)
        assert final.state == c.STATE_SUCCEEDED and final.commit == head, agents.log_text(agent.agent_id)  # type: ignore[attr-defined]

        table = queue_cli("list").stdout.splitlines()
        header, row = table[0].split(), next(line for line in table if line.startswith(job)).split()
        assert row[header.index("COMMIT")] == head[:12]
        assert queue_cli("list", "-o", "wide").stdout.count(head) == 1
        assert json.loads(queue_cli("status", job, "-o", "json").stdout)["commit"] == head
        logs = queue_cli("logs", job).stdout
        assert f"[raibid] checked out {head}" in logs and f"\n{head}\n" in logs

    def test_a_stale_attempt_does_not_record_its_commit(self, redis_client):
        """CHECKED_OUT writes only for the attempt that owns the job (a taken-over agent's
        late checkout must not overwrite the commit of the attempt that runs now)."""
        from raibid_gitops.queue.scripts import scripts_for

        holder = SettingsHolder()
        holder.offer(json.dumps({"queue": {"claimIdleSeconds": 5, "heartbeatSeconds": 1}}), "t", "settings.yaml")
        snap = holder.current()
        q = snap.settings.queue
        done = submit(redis_client, snap.settings, JobSpec("raibid/hello", "main"))
        (_, [(eid, _)]), = redis_client.xreadgroup(q.consumer_group, "a", {q.stream: ">"}, count=1)
        s = scripts_for(redis_client)
        assert s.start(keys=[c.job_key(done.job_id), q.stream, c.job_logs_key(done.job_id)],
                       args=[q.consumer_group, eid, "a", f"{time.time():.6f}", snap.hash, 100]) == ["ok", "1"]
        assert s.checked_out(keys=[c.job_key(done.job_id)], args=["2", "b" * 40, "1.0"]) == 0
        assert get_job(redis_client, done.job_id).commit == ""
        assert s.checked_out(keys=[c.job_key(done.job_id)], args=["1", "a" * 40, "1.0"]) == 1
        assert get_job(redis_client, done.job_id).commit == "a" * 40
