"""The queue library and `raibid queue` against a real redis-server."""

from __future__ import annotations

import json

import pytest

from raibid_gitops import contract as c
from raibid_gitops.cli import main as cli_main
from raibid_gitops.errors import JobNotFound, QueueError, RedisUnavailable
from raibid_gitops.queue import JobSpec, cancel, get_job, list_jobs, stats, submit
from raibid_gitops.queue.jobs import read_logs
from raibid_gitops.settings import defaults, validate_data

pytestmark = pytest.mark.redis

SMALL = validate_data({"queue": {"maxLen": 100}})


class TestSubmit:
    """submit writes the entry, the status record and the index together, and creates the group."""

    def test_entry_record_group(self, redis_client):
        done = submit(redis_client, SMALL, JobSpec("raibid/hello", "main", commit="a" * 40))
        rec = redis_client.hgetall(c.job_key(done.job_id))
        assert rec[c.REC_STATE] == c.STATE_QUEUED
        assert rec[c.REC_ENTRY_ID] == done.entry_id
        (eid, fields), = redis_client.xrange(SMALL.queue.stream)
        assert eid == done.entry_id
        assert fields[c.FIELD_JOB_ID] == done.job_id and fields[c.FIELD_COMMIT] == "a" * 40
        groups = redis_client.xinfo_groups(SMALL.queue.stream)
        assert [g["name"] for g in groups] == [SMALL.queue.consumer_group]
        assert groups[0]["lag"] == 1  # what KEDA's lagCount reads
        assert redis_client.zscore(c.JOBS_INDEX, done.job_id) is not None

    def test_entry_and_record_layout(self, redis_client):
        """The script builds the entry as JobSpec.entry_fields lays it out, and the record with it
        (the same values passed once)."""
        spec = JobSpec("raibid/hello", "refs/heads/main", commit="b" * 40, checkout=c.CHECKOUT_NONE)
        done = submit(redis_client, SMALL, spec)
        (_eid, fields), = redis_client.xrange(SMALL.queue.stream)
        assert list(fields) == list(spec.entry_fields(done.job_id, 0.0))
        assert fields == spec.entry_fields(done.job_id, float(fields[c.FIELD_SUBMITTED_AT]))
        rec = redis_client.hgetall(c.job_key(done.job_id))
        assert rec == {c.REC_ENTRY_ID: done.entry_id, c.REC_STATE: c.STATE_QUEUED, c.REC_REPO: spec.repo,
                       c.REC_REF: spec.ref, c.REC_COMMIT: spec.commit, c.REC_CHECKOUT: spec.checkout,
                       c.REC_SUBMITTED_AT: fields[c.FIELD_SUBMITTED_AT], c.REC_UPDATED_AT: fields[c.FIELD_SUBMITTED_AT],
                       c.REC_ATTEMPT: "0"}

    def test_requests_packed_as_redis_py_packs_them(self, redis_client):
        from raibid_gitops.queue.scripts import _NotPlain, _packed

        args = ("EVALSHA", "ab" * 20, 5, "raibid:jobs", "ключ", "", 0, -12, 10**17, b"\x00\xff", "a\r\nb")
        conn = redis_client.connection_pool.make_connection()
        assert _packed(*args) == b"".join(conn.pack_command(*args))
        for odd in (1.5, None, True):
            with pytest.raises(_NotPlain):
                _packed("EVALSHA", odd)

    def test_connection_lost_between_calls(self, redis_client):
        """A dropped connection is redis-py's to reconnect (the short path hands over)."""
        submit(redis_client, SMALL, JobSpec("a/b", "main"))
        redis_client.client_kill_filter(_type="normal", skipme=False)
        assert submit(redis_client, SMALL, JobSpec("a/b", "main")).entry_id

    def test_threads_share_a_client(self, redis_client):
        """The short path keeps one connection for the client's scripts; a call that finds it busy
        takes a pooled one. Threads never wait on each other nor read each other's replies."""
        import threading

        done: list = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(60):
                    done.append(submit(redis_client, SMALL, JobSpec("a/b", "main")))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len({d.job_id for d in done}) == 240
        for d in done:
            assert redis_client.hget(c.job_key(d.job_id), c.REC_ENTRY_ID) == d.entry_id
        # The kept connection plus what busy moments borrowed (at most one per other thread),
        # not one per call.
        pool = redis_client.connection_pool
        assert len(pool._in_use_connections) + len(pool._available_connections) <= 5, (
            pool._in_use_connections, pool._available_connections)

    def test_scripts_loaded_again_after_a_flush(self, redis_client):
        """Redis forgets scripts on restart (or SCRIPT FLUSH): the next call loads them again."""
        submit(redis_client, SMALL, JobSpec("a/b", "main"))
        redis_client.script_flush()
        assert submit(redis_client, SMALL, JobSpec("a/b", "main")).entry_id

    @pytest.mark.parametrize("spec,message", [
        (dict(repo="nope", ref="main"), "is not OWNER/NAME"),
        (dict(repo="a/b", ref="--upload-pack=x"), "is not a valid git ref"),
        (dict(repo="a/b", ref="main", commit="xyz"), "not a commit id"),
        (dict(repo="a/b", ref="main", checkout="svn"), "checkout must be"),
    ])
    def test_invalid_spec_refused(self, spec, message):
        with pytest.raises(QueueError, match=message):
            JobSpec(**spec)

    def test_trim_keeps_undelivered_and_pending(self, redis_client):
        """MAXLEN ~ alone would cut a backlog longer than maxLen; the cut stops at the group."""
        q = SMALL.queue
        first = [submit(redis_client, SMALL, JobSpec("a/b", "main")) for _ in range(250)]
        # Deliver 150, ack 120: 30 stay pending, 100 undelivered.
        got = redis_client.xreadgroup(q.consumer_group, "c1", {q.stream: ">"}, count=150)[0][1]
        redis_client.xack(q.stream, q.consumer_group, *[e[0] for e in got[:120]])
        for _ in range(300):
            submit(redis_client, SMALL, JobSpec("a/b", "main"))
        ids = {e[0] for e in redis_client.xrange(q.stream)}
        oldest_pending = got[120][0]
        assert oldest_pending in ids
        assert all(s.entry_id in ids for s in first[120:])
        # ... and the acknowledged ones did get trimmed (the stream is bounded).
        assert first[0].entry_id not in ids

    def test_a_backlog_past_max_len_is_kept_whole_and_trimmed_once_delivered(self, redis_client):
        """With no agent running, a backlog grows past maxLen and every entry stays (the cut
        never passes the group's last-delivered id). Once agents take and ack entries, the next
        submit trims what they acknowledged, and no more."""
        q = SMALL.queue
        jobs = [submit(redis_client, SMALL, JobSpec("a/b", "main")) for _ in range(350)]
        assert redis_client.xlen(q.stream) == 350
        got = redis_client.xreadgroup(q.consumer_group, "c1", {q.stream: ">"}, count=300)[0][1]
        redis_client.xack(q.stream, q.consumer_group, *[e[0] for e in got])
        jobs.append(submit(redis_client, SMALL, JobSpec("a/b", "main")))
        ids = [e[0] for e in redis_client.xrange(q.stream)]
        assert len(ids) < 351 and jobs[0].entry_id not in ids  # acknowledged entries went
        assert all(j.entry_id in ids for j in jobs[300:])  # nothing undelivered did

    def test_redis_down_is_a_clear_error(self):
        from raibid_gitops.clients.redis import connect

        client = connect("redis://127.0.0.1:1/0")
        with pytest.raises(RedisUnavailable, match="cannot reach Redis at 127.0.0.1:1"):
            submit(client, SMALL, JobSpec("a/b", "main"))

    def test_wrong_password_is_a_clear_error(self, redis_server):
        from raibid_gitops.clients.redis import connect

        client = connect(redis_server.url, password="wrong")
        with pytest.raises(RedisUnavailable, match="refused the password|refused a command"):
            stats(client, SMALL)


class TestCancel:
    """cancel finishes a queued job at once and flags a running one for its agent."""

    def test_queued(self, redis_client):
        done = submit(redis_client, SMALL, JobSpec("a/b", "main"))
        assert cancel(redis_client, SMALL, done.job_id).outcome == "cancelled"
        job = get_job(redis_client, done.job_id)
        assert job.state == c.STATE_CANCELLED and job.final
        assert cancel(redis_client, SMALL, done.job_id).outcome == "final"
        assert any(line.line.startswith(c.LOG_FINISHED_PREFIX) for line in read_logs(redis_client, done.job_id))

    def test_running(self, redis_client):
        done = submit(redis_client, SMALL, JobSpec("a/b", "main"))
        redis_client.hset(c.job_key(done.job_id), c.REC_STATE, c.STATE_RUNNING)
        assert cancel(redis_client, SMALL, done.job_id).outcome == "requested"
        assert get_job(redis_client, done.job_id).cancel_requested

    def test_unknown(self, redis_client):
        with pytest.raises(JobNotFound):
            cancel(redis_client, SMALL, "nope")


class TestStats:
    def test_numbers(self, redis_client):
        q = SMALL.queue
        for _ in range(5):
            submit(redis_client, SMALL, JobSpec("a/b", "main"))
        redis_client.xreadgroup(q.consumer_group, "c1", {q.stream: ">"}, count=2)
        s = stats(redis_client, SMALL)
        assert (s.length, s.lag, s.pending, s.consumers, s.dead_letters) == (5, 3, 2, 1, 0)
        assert s.oldest_pending_age_seconds is not None and s.oldest_pending_age_seconds >= 0

    def test_empty(self, redis_client):
        s = stats(redis_client, SMALL)
        assert not s.group_exists and s.length == 0 and s.lag is None


class TestCli:
    """`raibid queue` end to end through the CLI entry point."""

    def _run(self, capsys, redis_server, *argv):
        code = cli_main(["queue", *argv, "--redis-url", redis_server.url])
        out, err = capsys.readouterr()
        return code, out, err

    def test_submit_status_list_stats(self, capsys, monkeypatch, redis_server, redis_client, tmp_path):
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        monkeypatch.chdir(tmp_path)  # not inside a config repository: defaults apply
        code, out, _ = self._run(capsys, redis_server, "submit", "--repo", "raibid/hello", "--ref", "main")
        assert code == 0
        job_id = out.strip()
        code, out, _ = self._run(capsys, redis_server, "status", job_id, "-o", "json")
        assert code == 0 and json.loads(out)["state"] == "queued"
        code, out, _ = self._run(capsys, redis_server, "list")
        assert code == 0 and job_id in out and "STATE" in out
        code, out, _ = self._run(capsys, redis_server, "stats", "-o", "json")
        assert code == 0 and json.loads(out)["lag"] == 1
        code, _, err = self._run(capsys, redis_server, "cancel", job_id)
        assert code == 0 and "cancelled" in err
        code, _, err = self._run(capsys, redis_server, "status", "missing-job")
        assert code == 1 and "job missing-job not found" in err
        assert len(list_jobs(redis_client)) == 1

    def test_no_password_says_what_to_do(self, capsys, monkeypatch, redis_server, tmp_path):
        monkeypatch.delenv("RAIBID_REDIS_PASSWORD", raising=False)
        monkeypatch.chdir(tmp_path)
        code, _, err = self._run(capsys, redis_server, "stats")
        assert code == 2 and "RAIBID_REDIS_PASSWORD" in err


class TestHostileInput:
    """Issue 12 items 3 and 4 through `raibid queue`: refused with exit 2, nothing queued."""

    def _run(self, capsys, redis_server, *argv):
        code = cli_main(["queue", *argv, "--redis-url", redis_server.url])
        out, err = capsys.readouterr()
        return code, out, err

    @pytest.mark.parametrize("args,words", [
        (("--repo", "../remote", "--ref", "main"), "not a Gitea user or organisation name"),
        (("--repo", "raibid/..", "--ref", "main"), "not a Gitea repository name"),
        (("--repo", "raibid/x.git", "--ref", "main"), "not a Gitea repository name"),
        (("--repo", "a--b/x", "--ref", "main"), "no two of"),
        (("--repo", "raibid/hello", "--ref", "main\n"), "not a valid git ref"),
        (("--repo", "raibid/hello", "--ref", "main.lock"), "'.lock'"),
        (("--repo", "raibid/hello", "--ref", "a//b"), "double '/'"),
        (("--repo", "raibid/hello", "--ref", ".hidden"), "start with '.'"),
        (("--repo", "raibid/hello", "--ref", "main", "--commit", "abc123\n"), "not a commit id"),
        (("--repo", "raibid/hello", "--ref", "x" * 5000), "5000 characters"),
    ])
    def test_submit_refused(self, capsys, monkeypatch, redis_server, redis_client, tmp_path, args, words):
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        monkeypatch.chdir(tmp_path)
        code, _, err = self._run(capsys, redis_server, "submit", *args)
        assert code == 2 and words in err, err
        assert "x" * 100 not in err
        assert redis_client.exists(defaults().queue.stream) == 0

    def test_uppercase_commit_is_queued_lowercase(self, capsys, monkeypatch, redis_server, redis_client, tmp_path):
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        monkeypatch.chdir(tmp_path)
        code, out, err = self._run(capsys, redis_server, "submit", "--repo", "raibid/hello", "--ref", "main",
                                   "--commit", "ABCDEF1234567")
        assert code == 0, err
        assert get_job(redis_client, out.strip()).commit == "abcdef1234567"

    def test_job_ids_and_limits(self, capsys, monkeypatch, redis_server, tmp_path):
        monkeypatch.setenv("RAIBID_REDIS_PASSWORD", redis_server.password)
        monkeypatch.chdir(tmp_path)
        code, _, err = self._run(capsys, redis_server, "status", "j" * 3000)
        assert code == 2 and "is not a job id" in err and "j" * 100 not in err
        code, _, err = self._run(capsys, redis_server, "cancel", "a b\n")
        assert code == 2 and "is not a job id" in err
        with pytest.raises(SystemExit) as exc:
            cli_main(["queue", "list", "--limit", "-5"])
        assert exc.value.code == 2


class TestFinishScript:
    """The FINISH script stores a result and acks only for the attempt that owns the job now.

    A stale attempt (its agent stalled, another agent took the entry over with XAUTOCLAIM and
    started attempt 2) must neither store its result nor XACK: acking would drop the entry from
    the pending list, and if the second agent then died nobody could take the job over again.
    """

    def _start(self, client, job_id: str, eid: str, agent: str) -> list[str]:
        from raibid_gitops.queue.scripts import scripts_for

        return scripts_for(client).start_attempt(SMALL, job_id, eid, agent, 1.0, "sha256:test")

    def _finish(self, client, job_id: str, eid: str, attempt: str, state: str, code: int, reason: str = "") -> str:
        from raibid_gitops.queue.scripts import scripts_for

        return scripts_for(client).finish_attempt(SMALL, job_id, eid, attempt, state, code, reason, 2.0)

    def _pending(self, client) -> list[tuple[str, str]]:
        q = SMALL.queue
        return [(p["message_id"], p["consumer"])
                for p in client.xpending_range(q.stream, q.consumer_group, min="-", max="+", count=10)]

    def _finished_lines(self, client, job_id: str) -> list[str]:
        return [x.line for x in read_logs(client, job_id) if x.line.startswith(c.LOG_FINISHED_PREFIX)]

    def test_superseded_attempt_neither_stores_nor_acks(self, redis_client):
        q = SMALL.queue
        done = submit(redis_client, SMALL, JobSpec("a/b", "main"))
        (_, [(eid, _)]), = redis_client.xreadgroup(q.consumer_group, "agent-1", {q.stream: ">"}, count=1)
        assert self._start(redis_client, done.job_id, eid, "agent-1") == ["ok", "1"]

        # agent-1 stalls; agent-2 takes the entry over and starts attempt 2.
        _, claimed, *_ = redis_client.xautoclaim(q.stream, q.consumer_group, "agent-2", min_idle_time=0,
                                                 start_id="0-0", count=1)
        assert [e[0] for e in claimed] == [eid]
        assert self._start(redis_client, done.job_id, eid, "agent-2") == ["ok", "2"]

        # agent-1 wakes up and reports its (stale) result.
        assert self._finish(redis_client, done.job_id, eid, "1", c.STATE_SUCCEEDED, 0) == "superseded"
        assert self._pending(redis_client) == [(eid, "agent-2")], "a superseded FINISH must not XACK"
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.attempt, job.agent, job.exit_code) == (c.STATE_RUNNING, 2, "agent-2", None)
        assert self._finished_lines(redis_client, done.job_id) == []

        # The owner's result is stored and acked: exactly one final status.
        assert self._finish(redis_client, done.job_id, eid, "2", c.STATE_FAILED, 1, "step x exited with 1") == "ok"
        assert self._pending(redis_client) == []
        job = get_job(redis_client, done.job_id)
        assert (job.state, job.exit_code, job.reason) == (c.STATE_FAILED, 1, "step x exited with 1")
        assert self._finished_lines(redis_client, done.job_id) == ["finished: failed (exit 1): step x exited with 1"]

        # A late FINISH of attempt 1 after the job is final changes nothing.
        assert self._finish(redis_client, done.job_id, eid, "1", c.STATE_SUCCEEDED, 0) == "already"
        assert get_job(redis_client, done.job_id).state == c.STATE_FAILED
        assert len(self._finished_lines(redis_client, done.job_id)) == 1
