"""Running one job: check out the commit, run the pipeline steps, stream the output.

- Checkout: ``git fetch --depth 1`` of the commit (else the ref) from Gitea into an empty
  directory. The token (a mounted Secret file) goes to git through GIT_CONFIG_* environment
  variables as an ``http.extraHeader``: never in a URL, an argv or a log line.
- Steps come from the repository's ``.raibid.yml`` if present, else ``agents.defaultPipeline``
  of the job's settings snapshot. Each step runs in its own process group (a new session), so
  a timeout or a cancel kills the whole tree the step started, not just its shell.
- Per-step timeout (``timeoutSeconds``) and a total timeout (``agents.jobTimeoutSeconds``),
  whichever comes first; SIGTERM to the group, then SIGKILL after a grace period.
- ``checkout: none`` (``raibid queue submit --no-checkout``) skips the clone and runs the
  pipeline in an empty directory: for smoke tests and benchmarks, recorded in the job.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raibid_agent.logsink import LogSink
from raibid_gitops import contract as c
from raibid_gitops import names
from raibid_gitops.settings import Step

log = logging.getLogger("raibid.agent.runner")

#: After SIGTERM a step's group gets this long to exit before SIGKILL (build tools flush
#: caches and remove lock files on SIGTERM; a few seconds is enough for that).
KILL_GRACE_SECONDS = 5.0
#: How often a running step is checked for timeout and cancel: bounds cancel latency.
POLL_SECONDS = 0.1
#: Longest clone/fetch; a Gitea on the same node answers in seconds.
GIT_TIMEOUT_SECONDS = 600
#: Environment variables never passed to a job's steps: the job runs untrusted code.
SECRET_ENV = ("RAIBID_REDIS_PASSWORD", "RAIBID_WEBHOOK_SECRET", "RAIBID_GITEA_TOKEN")


@dataclass(frozen=True)
class JobSpec:
    """What the worker asks the runner to do (from the stream entry and the settings snapshot)."""

    job_id: str
    repo: str
    ref: str
    commit: str
    checkout: str
    default_pipeline: tuple[Step, ...]
    job_timeout_seconds: float
    gitea_url: str


@dataclass(frozen=True)
class Outcome:
    state: str  # one of contract.FINAL_STATES, or LOST
    exit_code: int
    reason: str = ""
    #: The commit the job ran on (``git rev-parse HEAD`` of the checkout); "" without one.
    commit: str = ""


#: Not a job state: the agent no longer owns the job (another agent took it over); the worker
#: records nothing and does not ack.
LOST = "lost"


class CancelSignal:
    """Why a running job must stop: a user's cancel, or the entry lost to another agent."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.why = ""

    def set(self, why: str) -> None:
        if not self._event.is_set():
            self.why = why
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class CheckoutFailed(Exception):
    pass


#: git's words when the server wants credentials or refused them (HTTP 401/403).
_AUTH_FAILED = re.compile(r"could not read Username|Authentication failed|terminal prompts disabled|"
                          r"\b40[13]\b")


def _without_userinfo(url: str) -> str:
    """A URL fit for a log line: any user:password@ part removed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=(parts.hostname or "") + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def read_token(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _steps(data: Any) -> tuple[Step, ...]:
    """The steps of a parsed .raibid.yml: certified without pydantic when certainly valid (the
    agent then never imports it), else judged by the model, whose ValidationError words the
    refusal. One type, the settings' Step, for a repository's steps and the default pipeline."""
    from raibid_gitops.settings import certify

    steps = certify.pipeline(data)
    if steps is not None:
        return steps
    from raibid_gitops.settings import model

    parsed = model.Pipeline.model_validate(data, by_alias=True, by_name=False).steps
    return tuple(Step(name=s.name, run=s.run, timeout_seconds=s.timeout_seconds) for s in parsed)


class Runner:
    def __init__(self, *, token_file: str | None = None, git_base_url: str | None = None,
                 workroot: str | None = None) -> None:
        self.token_file = token_file
        self.git_base_url = git_base_url
        self.workroot = workroot

    # -- checkout --------------------------------------------------------------------------

    def _git(self, args: Sequence[str], cwd: Path, token: str | None,
             deadline: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env["GIT_TERMINAL_PROMPT"] = "0"
        if token:
            # Appended to any GIT_CONFIG_* the environment already has, not over it.
            n = int(env.get("GIT_CONFIG_COUNT") or 0)
            env.update({"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": "http.extraHeader",
                        f"GIT_CONFIG_VALUE_{n}": f"Authorization: token {token}"})
        timeout = max(1.0, min(GIT_TIMEOUT_SECONDS, deadline - time.monotonic()))
        try:
            return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CheckoutFailed(f"git {args[0]} took longer than {timeout:.0f}s") from exc

    def checkout(self, job: JobSpec, workdir: Path, sink: LogSink, deadline: float) -> str:
        """Clone the job's commit into ``workdir``; the commit checked out (the ref's head when
        the job named no commit)."""
        # The entry came from Redis, which anyone with its password can write: check the names
        # again, as the producer did, before they become a URL and git arguments. A repo of
        # "../x" would otherwise clone from outside the Git base URL.
        problem = (names.repo_problem(job.repo) or names.ref_problem(job.ref)
                   or (names.commit_problem(job.commit) if job.commit else None))
        if problem:
            raise CheckoutFailed(f"refused: {problem}")
        base = (self.git_base_url or job.gitea_url).rstrip("/")
        url = f"{base}/{job.repo}.git"
        token = read_token(self.token_file)
        sink.system(f"checking out {job.repo} {job.ref} {job.commit or ''} from {_without_userinfo(base)}".rstrip())
        steps: list[list[str]] = [["init", "-q", "."], ["remote", "add", "origin", url]]
        for args in steps:
            r = self._git(args, workdir, token, deadline)
            if r.returncode != 0:
                raise CheckoutFailed(_redact(r.stderr.strip(), token))
        # Fetch the exact commit when known (Gitea serves reachable commits by id over
        # protocol v2); fall back to the ref, then check out the commit from its history.
        wants = [job.commit, job.ref] if job.commit else [job.ref]
        err = ""
        for want in wants:
            r = self._git(["fetch", "-q", "--depth", "50" if want == job.ref and job.commit else "1", "origin", want],
                          workdir, token, deadline)
            if r.returncode == 0:
                target = job.commit or "FETCH_HEAD"
                co = self._git(["checkout", "-q", "--detach", target], workdir, token, deadline)
                if co.returncode == 0:
                    head = self._git(["rev-parse", "HEAD"], workdir, token, deadline)
                    sha = head.stdout.strip() if head.returncode == 0 else ""
                    if sha:
                        sink.system(f"checked out {sha}")
                    return sha
                err = co.stderr
            else:
                err = r.stderr
        raise CheckoutFailed(self._explain(_redact(err.strip(), token) or "git fetch failed", token))

    def _explain(self, message: str, token: str | None) -> str:
        """Say which side of authentication failed: git only says that it did."""
        if not _AUTH_FAILED.search(message):
            return message
        if token is None:
            where = self.token_file or "no --gitea-token-file given"
            return (f"{message}; no clone token was sent ({where} is missing or empty): give the agent a Gitea "
                    "token with read access, --gitea-token-file FILE (or RAIBID_GITEA_TOKEN_FILE; in the "
                    "cluster, the Secret raibid-gitea)")
        return f"{message}; the clone token in {self.token_file} was refused"

    # -- pipeline --------------------------------------------------------------------------

    def pipeline(self, job: JobSpec, workdir: Path, sink: LogSink) -> tuple[Step, ...]:
        path = workdir / c.PIPELINE_FILE
        if not path.is_file():
            return job.default_pipeline
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        from raibid_gitops import yamlio
        from raibid_gitops.errors import SettingsError

        # The repository is untrusted: the same bounds as settings.yaml (size, alias
        # expansion, depth), so a hostile .raibid.yml fails its job instead of its agent.
        try:
            if path.stat().st_size > yamlio.MAX_SETTINGS_BYTES:
                raise PipelineInvalid(f"{c.PIPELINE_FILE} is larger than {yamlio.MAX_SETTINGS_BYTES} bytes")
            data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
            yamlio.check_bounds(data, c.PIPELINE_FILE)
            steps = _steps(data)
        except SettingsError as exc:
            raise PipelineInvalid(exc.message) from exc
        except (YAMLError, UnicodeDecodeError, RecursionError, ValueError, OSError) as exc:
            # pydantic's ValidationError is a ValueError: its first line names the field.
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise PipelineInvalid(f"{c.PIPELINE_FILE} is not valid: {first[:200]}") from exc
        sink.system(f"pipeline from {c.PIPELINE_FILE}: {', '.join(s.name for s in steps)}")
        return steps

    def _step_env(self, job: JobSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env.update({"RAIBID_JOB_ID": job.job_id, "RAIBID_REPO": job.repo, "RAIBID_REF": job.ref,
                    "RAIBID_COMMIT": job.commit, "CI": "true"})
        return env

    def run_step(self, step: Step, job: JobSpec, workdir: Path, sink: LogSink, job_deadline: float,
                 cancel: CancelSignal) -> Outcome | None:
        """Run one step; None if it succeeded, else the job's outcome."""
        sink.system(f"step {step.name}: {step.run}")
        step_deadline = min(time.monotonic() + step.timeout_seconds, job_deadline)
        proc = subprocess.Popen(["/bin/sh", "-c", step.run], cwd=workdir, env=self._step_env(job),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        reader = threading.Thread(target=_pump, args=(proc, sink), daemon=True)
        reader.start()
        stopped: Outcome | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if cancel.is_set():
                stopped = Outcome(LOST if cancel.why == LOST else c.STATE_CANCELLED, -1,
                                  cancel.why if cancel.why != LOST else "taken over by another agent")
            elif now >= step_deadline:
                total = now >= job_deadline
                stopped = Outcome(c.STATE_TIMED_OUT, -1,
                                  f"job exceeded agents.jobTimeoutSeconds ({job.job_timeout_seconds:.0f}s)" if total
                                  else f"step {step.name} exceeded its timeout ({step.timeout_seconds}s)")
            if stopped:
                _kill_group(proc)
                break
            # Wake as soon as the step's output ends (it exited, as a rule), not at the next
            # step of Popen.wait's sleeping back-off (up to 50 ms late: a fifth of a short job).
            reader.join(POLL_SECONDS)
            if not reader.is_alive():
                try:
                    proc.wait(POLL_SECONDS)  # the exit follows the end of the output, as a rule
                except subprocess.TimeoutExpired:
                    pass
        reader.join(KILL_GRACE_SECONDS)
        if stopped:
            return Outcome(stopped.state, proc.returncode if proc.returncode is not None else -1, stopped.reason)
        if proc.returncode != 0:
            return Outcome(c.STATE_FAILED, proc.returncode, f"step {step.name} exited with {proc.returncode}")
        return None

    def run(self, job: JobSpec, sink: LogSink, cancel: CancelSignal,
            on_checkout: Callable[[str], None] | None = None) -> Outcome:
        """Run the job to its end. ``on_checkout`` is told the commit as soon as it is checked
        out (the worker records it, so a running job shows it); the outcome carries it too."""
        job_deadline = time.monotonic() + job.job_timeout_seconds
        workdir = Path(tempfile.mkdtemp(prefix=f"raibid-{job.job_id}-", dir=self.workroot))
        try:
            commit = ""
            if job.checkout == c.CHECKOUT_GIT:
                try:
                    commit = self.checkout(job, workdir, sink, job_deadline)
                except CheckoutFailed as exc:
                    sink.system(f"checkout failed: {exc}")
                    return Outcome(c.STATE_FAILED, -1,
                                   f"checkout failed: {str(exc).splitlines()[-1] if str(exc) else ''}")
                if commit and on_checkout is not None:
                    on_checkout(commit)
            else:
                sink.system("no checkout (checkout: none): running in an empty directory")
            return replace(self._pipeline(job, workdir, sink, job_deadline, cancel), commit=commit)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _pipeline(self, job: JobSpec, workdir: Path, sink: LogSink, job_deadline: float,
                  cancel: CancelSignal) -> Outcome:
        """The steps of a job, in its (checked-out or empty) directory."""
        try:
            steps = self.pipeline(job, workdir, sink)
        except PipelineInvalid as exc:
            sink.system(str(exc))
            return Outcome(c.STATE_FAILED, -1, str(exc))
        for step in steps:
            if cancel.is_set():
                return Outcome(LOST if cancel.why == LOST else c.STATE_CANCELLED, -1, cancel.why)
            if time.monotonic() >= job_deadline:
                return Outcome(c.STATE_TIMED_OUT, -1,
                               f"job exceeded agents.jobTimeoutSeconds ({job.job_timeout_seconds:.0f}s)")
            result = self.run_step(step, job, workdir, sink, job_deadline, cancel)
            if result is not None:
                return result
        return Outcome(c.STATE_SUCCEEDED, 0)


class PipelineInvalid(Exception):
    pass


def _pump(proc: subprocess.Popen[bytes], sink: LogSink) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        sink.output(raw.decode("utf-8", "replace").rstrip("\n"))
    proc.stdout.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    try:
        # The shell may be gone while its children linger in the group: kill the group anyway.
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
