"""Gitea's repository webhook to Flux's Receiver: a `git push` to the config repository is
fetched at once, not at the GitRepository's next poll (``flux.interval``).

The Receiver (clusters/dgx-spark/receiver.yaml, type ``github``: Gitea signs deliveries with
``X-Hub-Signature-256`` and sends ``X-GitHub-Event``) gets its path from the
notification-controller (``status.webhookPath``, derived from the shared token); the hook posts
there, signed with the token from the Secret ``raibid-webhook-token``. Idempotent: a hook already
pointing at the Receiver's URL is left alone; one pointing at an older path of the same receiver
(the token was rotated) is updated.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import ConfigRepoError, KubeNotFound

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.gitea import Gitea, RepoRef
    from raibid_gitops.clients.kube import Kube

RECEIVER_API = "notification.toolkit.fluxcd.io/v1"
RECEIVER_NAME = "raibid-config"
TOKEN_SECRET = "raibid-webhook-token"
TOKEN_KEY = "token"
#: The notification-controller's receiver Service in a Flux install, as Gitea in the cluster
#: reaches it.
DEFAULT_RECEIVER_URL = "http://webhook-receiver.flux-system.svc.cluster.local"


@dataclass(frozen=True)
class HookResult:
    url: str
    action: str  # created | updated | unchanged | would create | would update
    hook_id: int | None = None


def receiver_path(kube: Kube, namespace: str, *, timeout: float = 60.0) -> str:
    """The Receiver's ``status.webhookPath`` once the notification-controller has set it."""
    from raibid_gitops.clients.kube import ObjectRef, wait_for

    ref = ObjectRef(RECEIVER_API, "Receiver", RECEIVER_NAME, namespace)
    try:
        obj = wait_for(kube, ref, lambda o: bool((o.get("status") or {}).get("webhookPath")), timeout=timeout)
    except TimeoutError as exc:
        raise ConfigRepoError(f"{ref} has no webhook path after {timeout:.0f}s",
                              hint="is the notification-controller running, and the Secret "
                                   f"{namespace}/{TOKEN_SECRET} in place?") from exc
    return str(obj["status"]["webhookPath"])


def receiver_token(kube: Kube, namespace: str) -> str:
    from raibid_gitops.clients.kube import ObjectRef

    try:
        secret = kube.get(ObjectRef("v1", "Secret", TOKEN_SECRET, namespace))
    except KubeNotFound as exc:
        raise ConfigRepoError(f"Secret {namespace}/{TOKEN_SECRET} not found",
                              hint="`raibid bootstrap --only secrets` creates it") from exc
    raw = (secret.get("data") or {}).get(TOKEN_KEY)
    if not raw:
        raise ConfigRepoError(f"Secret {namespace}/{TOKEN_SECRET} has no key {TOKEN_KEY!r}")
    return base64.b64decode(raw).decode()


def ensure_hook(client: Gitea, repo: RepoRef | str, *, receiver_url: str, path: str, secret: str,
                dry_run: bool = False) -> HookResult:
    """Make ``repo`` have exactly one hook for this receiver, posting to ``receiver_url + path``."""
    url = receiver_url.rstrip("/") + path
    hook_prefix = receiver_url.rstrip("/") + "/hook/"
    ours: list[dict[str, Any]] = [h for h in client.hooks(repo)
                                  if str((h.get("config") or {}).get("url", "")).startswith(hook_prefix)]
    exact = [h for h in ours if (h.get("config") or {}).get("url") == url and h.get("active")
             and "push" in (h.get("events") or [])]
    if exact:
        return HookResult(url, "unchanged", int(exact[0]["id"]))
    if ours:
        if dry_run:
            return HookResult(url, "would update", int(ours[0]["id"]))
        hook = client.edit_hook(repo, int(ours[0]["id"]), url=url, secret=secret)
        return HookResult(url, "updated", int(hook["id"]))
    if dry_run:
        return HookResult(url, "would create")
    hook = client.create_hook(repo, url=url, secret=secret)
    return HookResult(url, "created", int(hook["id"]))


def connect_webhook(kube: Kube, client: Gitea, repo: RepoRef | str, *, namespace: str, receiver_url: str,
                    dry_run: bool = False, timeout: float = 60.0) -> HookResult:
    """The whole step: the Receiver's path and token from the cluster, the hook in Gitea."""
    deadline = time.monotonic() + timeout
    token = receiver_token(kube, namespace)
    path = receiver_path(kube, namespace, timeout=max(1.0, deadline - time.monotonic()))
    return ensure_hook(client, repo, receiver_url=receiver_url, path=path, secret=token, dry_run=dry_run)
