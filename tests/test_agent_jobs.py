"""One agent running jobs (in process, for speed): outcomes, timeouts, cancel, checkout, logs."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fixtures_redis import wait_until

from raibid_agent.runner import Runner
from raibid_agent.settings_source import SettingsHolder
from raibid_agent.worker import Worker
from raibid_gitops import contract as c
from raibid_gitops.queue import JobSpec, cancel, get_job, submit
from raibid_gitops.queue.jobs import read_logs

pytestmark = pytest.mark.redis


def settings_text(*steps: dict, **agents) -> str:
    data = {"queue": {"claimIdleSeconds": 5, "heartbeatSeconds": 1},
            "agents": {"idleTimeoutSeconds": 2, "defaultPipeline": list(steps) or [{"name": "noop", "run": "true"}],
                       **agents}}
    return json.dumps(data)  # JSON is YAML: load_text takes it as settings.yaml


def make_worker(client, text: str, runner: Runner | None = None, agent_id: str = "t-agent") -> Worker:
    holder = SettingsHolder()
    assert holder.offer(text, "test", "settings.yaml") is not None
    return Worker(client, holder, agent_id, runner or Runner(token_file=None), once=True)


def run_one(client, text: str, spec: JobSpec, runner: Runner | None = None):
    w = make_worker(client, text, runner)
    done = submit(client, w.holder.current().settings, spec)
    assert w.run() == 0
    return get_job(client, done.job_id), [line.format() for line in read_logs(client, done.job_id)]


NOCHECKOUT = JobSpec("raibid/hello", "main", checkout=c.CHECKOUT_NONE)


class TestOutcomes:
    """Status transitions queued -> running -> final, with exit code, timestamps and logs."""

    def test_succeeded(self, redis_client):
        job, logs = run_one(redis_client, settings_text({"name": "hi", "run": "echo hello $RAIBID_JOB_ID"}), NOCHECKOUT)
        assert job.state == c.STATE_SUCCEEDED and job.exit_code == 0 and job.attempt == 1
        assert job.submitted_at <= job.started_at <= job.finished_at
        assert f"hello {job.id}" in logs
        assert logs[-1] == "[raibid] finished: succeeded (exit 0)"
        pending = redis_client.xpending("raibid:jobs", "raibid-agents")
        assert pending["pending"] == 0  # acked

    def test_failed_step_stops_the_pipeline(self, redis_client):
        job, logs = run_one(redis_client, settings_text({"name": "a", "run": "echo one; exit 3"},
                                                        {"name": "b", "run": "echo never"}), NOCHECKOUT)
        assert (job.state, job.exit_code) == (c.STATE_FAILED, 3)
        assert "step a exited with 3" in job.reason
        assert "one" in logs and "never" not in logs

    def test_step_timeout_kills_the_group(self, redis_client, tmp_path):
        pidfile = tmp_path / "child.pid"
        job, _ = run_one(redis_client, settings_text(
            {"name": "slow", "run": f"sleep 60 & echo $! > {pidfile}; wait", "timeoutSeconds": 1}), NOCHECKOUT)
        assert job.state == c.STATE_TIMED_OUT and "exceeded its timeout (1s)" in job.reason
        child = int(pidfile.read_text())
        wait_until(lambda: not _alive(child), 10, what="the step's background child to be killed")

    def test_secrets_not_passed_to_steps(self, redis_client, monkeypatch):
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", "pw-must-not-leak")
        job, logs = run_one(redis_client, settings_text({"name": "env", "run": "env"}), NOCHECKOUT)
        assert job.state == c.STATE_SUCCEEDED
        assert not any("pw-must-not-leak" in line for line in logs)

    def test_cancelled_job_in_queue_is_not_run(self, redis_client):
        w = make_worker(redis_client, settings_text({"name": "x", "run": "echo ran"}))
        done = submit(redis_client, w.holder.current().settings, NOCHECKOUT)
        cancel(redis_client, w.holder.current().settings, done.job_id)
        w.run()
        logs = [line.line for line in read_logs(redis_client, done.job_id)]
        assert "ran" not in logs and get_job(redis_client, done.job_id).state == c.STATE_CANCELLED
        assert redis_client.xpending("raibid:jobs", "raibid-agents")["pending"] == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class TestDrain:
    def test_entry_read_as_the_drain_begins_is_given_back(self, redis_client):
        """The drain (SIGTERM) lands between reading an entry and starting it: the job is put back
        as a new entry, at once, for another agent; not left pending until claimIdleSeconds."""
        w = make_worker(redis_client, settings_text())
        q = w.holder.current().settings.queue
        done = submit(redis_client, w.holder.current().settings, NOCHECKOUT)
        read = w.next_entry

        def read_then_drain(snap):  # the SIGTERM arrives right after XREADGROUP returned
            entry = read(snap)
            if entry is not None:
                w.drain()
            return entry

        w.next_entry = read_then_drain  # type: ignore[method-assign]
        assert w.run() == 0
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.attempt) == (c.STATE_QUEUED, 0)
        assert job.entry_id != done.entry_id
        assert redis_client.xpending(q.stream, q.consumer_group)["pending"] == 0
        (group,) = redis_client.xinfo_groups(q.stream)
        assert group["lag"] == 1, "the new entry waits for the next agent"


class TestCancelRunning:
    def test_cancel_kills_the_step_group(self, redis_client, tmp_path):
        pidfile = tmp_path / "child.pid"
        w = make_worker(redis_client, settings_text({"name": "long", "run": f"sleep 120 & echo $! > {pidfile}; wait"}))
        settings = w.holder.current().settings
        done = submit(redis_client, settings, NOCHECKOUT)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="the step to start")
        started = time.monotonic()
        assert cancel(redis_client, settings, done.job_id).outcome == "requested"
        t.join(30)
        assert not t.is_alive()
        job = get_job(redis_client, done.job_id)
        assert job.state == c.STATE_CANCELLED and "cancelled by request" in job.reason
        assert time.monotonic() - started < 10
        wait_until(lambda: not _alive(int(pidfile.read_text())), 10, what="the step's child to be killed")


class TestTakenOver:
    def test_agent_that_lost_its_entry_stops_the_job_and_records_nothing(self, redis_client, tmp_path):
        """Another agent claimed the entry (as XAUTOCLAIM does when this one stalled): the
        heartbeat notices, the step's process group is killed, and no result is stored: the new
        owner runs the job and writes its one final status."""
        pidfile = tmp_path / "child.pid"
        w = make_worker(redis_client, settings_text({"name": "long", "run": f"sleep 120 & echo $! > {pidfile}; wait"}))
        q = w.holder.current().settings.queue
        done = submit(redis_client, w.holder.current().settings, NOCHECKOUT)
        t = threading.Thread(target=w.run, daemon=True)
        t.start()
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, what="the step to start")
        redis_client.xclaim(q.stream, q.consumer_group, "other-agent", 0, [done.entry_id])
        t.join(30)
        assert not t.is_alive(), "the agent kept running a job it no longer owns"
        wait_until(lambda: not _alive(int(pidfile.read_text())), 10, what="the step's child to be killed")
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.attempt) == (c.STATE_RUNNING, 1)
        assert not [x for x in read_logs(redis_client, done.job_id) if x.line.startswith(c.LOG_FINISHED_PREFIX)]
        pending = redis_client.xpending_range(q.stream, q.consumer_group, min="-", max="+", count=5)
        assert [(p["message_id"], p["consumer"]) for p in pending] == [(done.entry_id, "other-agent")]


@pytest.fixture
def git_repo(tmp_path):
    """A bare repository served over file://, with two commits; the first has its own pipeline."""
    base = tmp_path / "git"
    bare = base / "raibid" / "hello.git"
    work = tmp_path / "work"
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x")

    def git(*args, cwd=work):
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    bare.parent.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "marker.txt").write_text("first commit\n")
    (work / ".raibid.yml").write_text("steps:\n  - name: show\n    run: cat marker.txt\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    first = git("rev-parse", "HEAD")
    (work / "marker.txt").write_text("second commit\n")
    git("commit", "-q", "-am", "two")
    git("remote", "add", "origin", bare.as_uri())
    git("push", "-q", "origin", "main")
    return base, first


class TestCheckout:
    """Clone at the exact commit; .raibid.yml overrides the default pipeline; the token never shows."""

    def test_clone_at_commit(self, redis_client, git_repo, tmp_path):
        base, first = git_repo
        token = tmp_path / "token"
        token.write_text("tok-very-secret\n")
        runner = Runner(token_file=str(token), git_base_url=base.as_uri())
        job, logs = run_one(redis_client, settings_text({"name": "default", "run": "echo default"}),
                            JobSpec("raibid/hello", "main", commit=first), runner)
        assert job.state == c.STATE_SUCCEEDED, logs
        assert "first commit" in logs and "default" not in logs
        assert "[raibid] pipeline from .raibid.yml: show" in logs
        assert not any("tok-very-secret" in line for line in logs)

    def test_commit_not_served_by_id_is_checked_out_from_the_ref(self, redis_client, git_repo, monkeypatch):
        """A server that refuses to send an unadvertised commit (protocol v0 here): the ref's
        history is fetched instead, and the job still runs at its commit, not at the ref's tip."""
        base, first = git_repo
        monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
        monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
        monkeypatch.setenv("GIT_CONFIG_VALUE_0", "0")
        job, logs = run_one(redis_client, settings_text(), JobSpec("raibid/hello", "main", commit=first),
                            Runner(git_base_url=base.as_uri()))
        assert job.state == c.STATE_SUCCEEDED, logs
        assert "first commit" in logs and "second commit" not in logs

    def test_missing_repo_fails_clearly(self, redis_client, git_repo, tmp_path):
        base, _ = git_repo
        token = tmp_path / "token"
        token.write_text("tok-very-secret\n")
        runner = Runner(token_file=str(token), git_base_url=base.as_uri())
        job, logs = run_one(redis_client, settings_text(), JobSpec("raibid/nope", "main"), runner)
        assert job.state == c.STATE_FAILED and job.reason.startswith("checkout failed")
        assert not any("tok-very-secret" in line for line in logs + [job.reason])

    def test_invalid_pipeline_file(self, redis_client, git_repo):
        base, _ = git_repo
        work = base.parent / "work"
        (work / ".raibid.yml").write_text("steps: []\n")
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
                   GIT_COMMITTER_EMAIL="t@x")
        subprocess.run(["git", "commit", "-q", "-am", "bad"], cwd=work, env=env, check=True)
        subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, env=env, check=True)
        job, _ = run_one(redis_client, settings_text(), JobSpec("raibid/hello", "main"),
                         Runner(git_base_url=base.as_uri()))
        assert job.state == c.STATE_FAILED and ".raibid.yml is not valid" in job.reason


def _bomb(levels: int = 7, width: int = 9) -> str:
    """Nested aliases: ~3 KB of YAML that expands to width**levels values (4.8 million)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


class TestUntrustedInput:
    """What reaches the agent through Redis or a repository is checked again before use."""

    def test_entry_escaping_the_git_base_url_is_refused(self, redis_client, git_repo, tmp_path):
        base, _ = git_repo
        # A repository next to the base directory: what "../remote" would reach.
        outside = base.parent / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(base / "raibid" / "hello.git"), str(outside)], check=True)
        w = make_worker(redis_client, settings_text({"name": "default", "run": "echo ran"}))
        w.runner = Runner(git_base_url=base.as_uri())
        q = w.holder.current().settings.queue
        # Written straight into Redis, past the producer's checks (anyone with the password can).
        job_id = "evil-1"
        from raibid_gitops.queue.jobs import ensure_group

        ensure_group(redis_client, w.holder.current().settings)
        eid = redis_client.xadd(q.stream, {c.FIELD_JOB_ID: job_id, c.FIELD_REPO: "../remote", c.FIELD_REF: "main",
                                           c.FIELD_COMMIT: "", c.FIELD_CHECKOUT: c.CHECKOUT_GIT})
        redis_client.hset(c.job_key(job_id), mapping={c.REC_STATE: c.STATE_QUEUED, c.REC_ENTRY_ID: eid,
                                                      c.REC_ATTEMPT: "0", c.REC_REPO: "../remote"})
        assert w.run() == 0
        job = get_job(redis_client, job_id)
        logs = [line.format() for line in read_logs(redis_client, job_id)]
        assert job.state == c.STATE_FAILED and "refused" in job.reason and "not a Gitea" in job.reason
        assert not any("checking out" in line or line == "ran" for line in logs), logs

    def test_alias_bomb_pipeline_fails_the_job_not_the_agent(self, redis_client, git_repo):
        base, _ = git_repo
        work = base.parent / "work"
        (work / ".raibid.yml").write_text(_bomb() + "steps:\n  - name: x\n    run: *a7\n")
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
                   GIT_COMMITTER_EMAIL="t@x")
        subprocess.run(["git", "commit", "-q", "-am", "bomb"], cwd=work, env=env, check=True)
        subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, env=env, check=True)
        job, _ = run_one(redis_client, settings_text(), JobSpec("raibid/hello", "main"),
                         Runner(git_base_url=base.as_uri()))
        assert job.state == c.STATE_FAILED and "aliases expanded" in job.reason


class TestMetricsAndTidiness:
    def test_metrics_endpoint(self, redis_client):
        import socket
        import urllib.request

        w = make_worker(redis_client, settings_text())
        submit(redis_client, w.holder.current().settings, NOCHECKOUT)
        w.metrics.settings_generation.set(w.holder.current().generation)
        w.run()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        w.metrics.serve(port, addr="127.0.0.1")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'raibid_agent_jobs_total{outcome="succeeded"} 1.0' in text
        assert "raibid_agent_pickup_latency_seconds_count 1.0" in text
        assert "raibid_agent_job_duration_seconds_count 1.0" in text
        assert "raibid_agent_settings_generation 1.0" in text

    def test_ready_once_the_stream_was_read(self, redis_client):
        """/readyz (the ScaledJob's readinessProbe): 503 until the first read of the stream
        returned, 200 after; anything else on the port is still the metrics page."""
        import http.client
        import threading

        from raibid_gitops.devstack.processes import free_port

        w = make_worker(redis_client, settings_text())
        w.once = True
        port = free_port()
        server = w.metrics.serve(port, addr="127.0.0.1", ready=w.reading.is_set)
        try:
            def get(path: str, method: str = "GET") -> tuple[int, bytes]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request(method, path)
                    resp = conn.getresponse()
                    return resp.status, resp.read()
                finally:
                    conn.close()

            assert get("/readyz") == (503, b"not reading the job stream yet\n")
            submit(redis_client, w.holder.current().settings, NOCHECKOUT)
            done = threading.Thread(target=w.run)
            done.start()
            done.join(60)
            assert not done.is_alive()
            assert get("/readyz") == (200, b"ready\n")
            # Whole-path match: neither a prefix nor a query string nor another method changes it.
            status, body = get("/readyz/x")
            assert status == 200 and b"raibid_agent_jobs_total" in body
            assert get("/readyz?x=1")[0] == 200
            assert get("/readyz", "HEAD")[0] == 200
            # A client that connects and says nothing does not hold up the probe.
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
                stalled.sendall(b"GET /metr")
                assert get("/readyz")[0] == 200
            # An oversized request line is refused, not read into memory.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as big:
                big.sendall(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
                assert big.recv(100).startswith(b"HTTP/1.0 414")
        finally:
            server.shutdown()
            server.server_close()

    def test_agent_leaves_the_group_tidy(self, redis_client):
        w = make_worker(redis_client, settings_text(), agent_id="tidy")
        submit(redis_client, w.holder.current().settings, NOCHECKOUT)
        w.run()
        consumers = redis_client.xinfo_consumers("raibid:jobs", "raibid-agents")
        assert "tidy" not in [x["name"] for x in consumers]
        assert not redis_client.exists(c.agent_key("tidy"))

    def test_follow_logs_stops_when_final(self, redis_client):
        from raibid_gitops.queue.jobs import follow_logs

        job, logs = run_one(redis_client, settings_text({"name": "x", "run": "echo line"}), NOCHECKOUT)
        followed = [line.format() for line in follow_logs(redis_client, job.id, poll_ms=100)]
        assert followed == logs


class TestClaimCursor:
    def test_orphan_behind_many_live_entries_is_found(self, redis_client):
        """XAUTOCLAIM scans at most 10 x COUNT pending entries per call: the agent keeps the cursor."""
        w = make_worker(redis_client, settings_text(), agent_id="rescuer")
        settings = w.holder.current().settings
        q = settings.queue
        for _ in range(40):
            submit(redis_client, settings, NOCHECKOUT)
        entries = redis_client.xreadgroup(q.consumer_group, "busy", {q.stream: ">"}, count=40)[0][1]
        # 39 entries stay fresh (their agent heartbeats); the last one is an orphan idle for long.
        redis_client.xclaim(q.stream, q.consumer_group, "dead", 0, [entries[-1][0]], idle=3_600_000)
        found = None
        for _ in range(10):
            found = w._claim(w.holder.current())
            if found:
                break
        assert found is not None and found.id == entries[-1][0] and found.claimed
