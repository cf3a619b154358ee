"""The exception tree of raibid-gitops.

Every failure a user can see is one of these; a library's exception (requests, kubernetes,
redis, git, pydantic) is translated at the boundary where it is raised, so none reaches the
user raw. Each carries a message that says what failed, on which object, and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raibid_gitops.problems import Problem

#: Rejected input is shown only this far: a message (or a log line) must not carry a whole
#: hostile value back to the terminal, the log or an HTTP client.
SHOWN_CHARS = 40


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error message may show it: quoted (so a newline or a space is visible),
    cut to ``limit`` characters, with its full length when cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class RaibidError(Exception):
    """Base class of every error raibid-gitops reports to a user."""

    #: Process exit code used by the CLI for this family.
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


# --- settings and config repository ------------------------------------------------------


class SettingsError(RaibidError):
    """settings.yaml (or a KEY=VALUE) does not parse or does not validate."""

    def __init__(self, message: str, *, problems: list[Problem] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = problems or []


class ConfigRepoError(RaibidError):
    """The config repository is missing, malformed, or in a state the command cannot act on."""


class VerifyFailed(RaibidError):
    """``verify`` found problems; each is listed as file, line, field, expected, found."""

    exit_code = 1

    #: Problems listed in the message; a longer list ends with how many more there are.
    LISTED = 20

    def __init__(self, problems: list[Problem], *, subject: str = "verify found", hint: str | None = None):
        lines = [f"  {p.format()}" for p in problems[: self.LISTED]]
        if len(problems) > self.LISTED:
            lines.append(f"  ... and {len(problems) - self.LISTED} more (`raibid gitops verify` lists them all)")
        super().__init__(f"{subject} {len(problems)} problem(s):\n" + "\n".join(lines), hint=hint)
        self.problems = problems


class KustomizeError(RaibidError):
    """kustomize is missing or the overlay does not build."""


class KustomizeBuildFailed(KustomizeError):
    """kustomize ran and refused to build; ``detail`` is its own message, cleaned of the
    wrapper's log prefix and of absolute paths."""

    def __init__(self, message: str, *, detail: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.detail = detail


# --- clients -----------------------------------------------------------------------------


class ClientError(RaibidError):
    """A backend (git, Gitea, Kubernetes, Redis) failed or refused a request."""


class GitError(ClientError):
    """A git operation failed."""


class PushRejected(GitError):
    """The remote refused a push (moved branch, protection rule, permissions)."""

    def __init__(self, message: str, *, non_fast_forward: bool = False, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.non_fast_forward = non_fast_forward


class BranchDiverged(GitError):
    """The local branch and the remote one both have commits the other lacks; nothing was pushed."""


class GiteaError(ClientError):
    """The Gitea API answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class GiteaNotFound(GiteaError):
    """A Gitea object (repository, pull request, branch) does not exist."""


class GiteaConflict(GiteaError):
    """Gitea refused a change because of the object's state (e.g. PR not mergeable)."""


class KubeError(ClientError):
    """The Kubernetes API answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class KubeNotFound(KubeError):
    """A Kubernetes object does not exist."""


class KubeConflict(KubeError):
    """The object changed meanwhile (HTTP 409)."""


class RedisUnavailable(ClientError):
    """Redis could not be reached or refused the command."""


# --- changes and reconciling -------------------------------------------------------------


class ChangeConflict(RaibidError):
    """The same setting was changed meanwhile to another value; nothing was overwritten."""


class SyncFailed(RaibidError):
    """Flux reported a failure while applying the commit."""

    exit_code = 1


class SyncTimeout(RaibidError):
    """The commit was not applied within --timeout."""

    exit_code = 3


class Suspended(RaibidError):
    """The Flux object is suspended; sync will not wait for it."""



# --- queue and agent (issue 6) -------------------------------------------------------------


class QueueError(RaibidError):
    """A queue request cannot be carried out (unknown job, job in the wrong state)."""


class JobNotFound(QueueError):
    """No status record exists for the job id."""

    exit_code = 1


class WebhookRejected(QueueError):
    """A webhook delivery was refused (unsigned, bad signature, malformed body)."""

    def __init__(self, message: str, *, status: int = 400, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class AgentError(RaibidError):
    """The agent cannot start or run (no valid settings, unreadable secret)."""
