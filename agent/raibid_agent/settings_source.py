"""Where the agent's settings come from, and how a change reaches it without dropping work.

Two sources of the ``raibid-settings`` ConfigMap (key ``settings.yaml``):

- the mounted volume (the whole directory, never ``subPath``): kubelet writes each version
  into a fresh timestamped directory and then atomically renames the ``..data`` symlink to
  it, so a reader either sees the old file or the new one. We poll ``..data``'s target (and
  the file's identity, for plain directories) several times a second: cheap, and a changed
  link is the exact signal kubelet gives;
- the API: list the ConfigMap, then watch from the list's resourceVersion; on 410 Gone
  (the version is too old) list again, so no update between two watches is missed.

Each version is parsed and validated into an immutable :class:`Snapshot`. An invalid version
is refused, logged, and reported (``settings_error`` in the heartbeat, a metric), and the last
good snapshot stays in force. Jobs take the snapshot current when they start and keep it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raibid_gitops import contract
from raibid_gitops.errors import AgentError, SettingsError
from raibid_gitops.settings import Settings, load_text, text_digest

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube

log = logging.getLogger("raibid.agent.settings")

#: How often the mounted directory is checked. kubelet itself syncs volumes only every
#: 60-90 s; polling 5x a second keeps our own share of the propagation time negligible.
POLL_SECONDS = 0.2
#: A server-side watch is ended after this long and resumed from the last resourceVersion:
#: a silently dead connection cannot keep us blind for longer.
WATCH_SECONDS = 60
#: Pause before relisting after an API failure (the apiserver may be restarting).
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Snapshot:
    """One validated version of the settings; never changes once made."""

    settings: Settings
    hash: str
    generation: int
    source_version: str
    loaded_at: float


@dataclass(frozen=True)
class Rejection:
    source_version: str
    message: str
    at: float
    #: ``settings.text_digest`` of the refused text ("" when there was no text).
    digest: str = ""


class SettingsHolder:
    """The current snapshot, the last refusal, and a condition to wait for changes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._rejection: Rejection | None = None
        self._listeners: list[Callable[[Snapshot | None, Rejection | None], None]] = []

    def current(self) -> Snapshot:
        with self._cond:
            if self._snapshot is None:
                raise AgentError("no valid settings loaded yet")
            return self._snapshot

    def peek(self) -> Snapshot | None:
        with self._cond:
            return self._snapshot

    def require(self, where: str, hint: str) -> Snapshot:
        """The snapshot after a source's first load; an agent never starts without one."""
        snap = self.peek()
        if snap is None:
            rej = self.rejection
            raise AgentError(f"no valid settings in {where}" + (f": {rej.message}" if rej else ""), hint=hint)
        return snap

    @property
    def rejection(self) -> Rejection | None:
        with self._cond:
            return self._rejection

    def on_change(self, fn: Callable[[Snapshot | None, Rejection | None], None]) -> None:
        self._listeners.append(fn)

    def offer(self, text: str, source_version: str, file: str) -> Snapshot | None:
        """Validate ``text``; install it if valid and different. Returns the new snapshot, if any."""
        try:
            settings = load_text(text, file)
        except SettingsError as exc:
            self.reject(source_version, str(exc), digest=text_digest(text))
            return None
        digest = settings.hash()
        with self._cond:
            self._rejection = None
            old = self._snapshot
            if old is not None and old.hash == digest:
                return None  # same values (a comment changed, or a relist): nothing to apply
            snap = Snapshot(settings, digest, (old.generation + 1) if old else 1, source_version, time.time())
            self._snapshot = snap
            self._cond.notify_all()
        log.info("settings %s applied (generation %d, version %s)", digest, snap.generation, source_version)
        for fn in self._listeners:
            fn(snap, None)
        return snap

    def reject(self, source_version: str, message: str, digest: str = "") -> None:
        rej = Rejection(source_version, message, time.time(), digest)
        with self._cond:
            self._rejection = rej
            keep = self._snapshot
            self._cond.notify_all()
        log.error("refused settings version %s (keeping %s): %s", source_version,
                  keep.hash if keep else "none", message)
        for fn in self._listeners:
            fn(None, rej)

    def wait_for(self, predicate: Callable[[Snapshot | None], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._snapshot), timeout)


class MountedDirSource:
    """The ConfigMap as a mounted directory (``--settings-dir``)."""

    def __init__(self, directory: Path, holder: SettingsHolder, key: str = contract.SETTINGS_KEY) -> None:
        self.directory = Path(directory)
        self.file = self.directory / key
        self.holder = holder
        self._seen: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _signature(self) -> tuple[object, ...]:
        # ..data's target changes on every kubelet update; (inode, mtime, size) covers a
        # directory written by hand or by a test.
        try:
            target: str | None = os.readlink(self.directory / "..data")
        except OSError:
            target = None
        try:
            st = self.file.stat()
            ident: tuple[object, ...] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            ident = ()
        return (target, ident)

    def check(self) -> Snapshot | None:
        """Load the file if it changed since the last check."""
        sig = self._signature()
        if sig == self._seen:
            return None
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._seen = sig
            log.error("%s is missing (keeping the last good settings)", self.file)
            return None
        except OSError as exc:
            # Mid-swap reads can fail on some filesystems; look again on the next poll.
            log.warning("cannot read %s: %s", self.file, exc)
            return None
        # Re-check after reading: if kubelet swapped meanwhile, read again next poll.
        if self._signature() != sig:
            return None
        self._seen = sig
        return self.holder.offer(text, str(sig[0] or sig[1]), str(self.file))

    def load_initial(self) -> Snapshot:
        self.check()
        return self.holder.require(str(self.file),
                                   hint="mount the raibid-settings ConfigMap as a directory (not subPath)")

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.check()
            except Exception:  # a watcher must never die: log and keep the last good settings
                log.exception("checking %s failed", self.file)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="settings-dir", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


class ConfigMapSource:
    """The ConfigMap through the Kubernetes API (``--settings-configmap``), read with the one
    list-and-watch loop of :meth:`raibid_gitops.clients.kube.Kube.watch` (a 410 Gone relists at
    once there; any other failure is paused on here and then relisted)."""

    def __init__(self, holder: SettingsHolder, *, namespace: str, name: str = contract.SETTINGS_CONFIGMAP,
                 key: str = contract.SETTINGS_KEY, kubeconfig: str | None = None, context: str | None = None) -> None:
        from raibid_gitops.clients.kube import Cancel

        self.holder = holder
        self.namespace, self.name, self.key = namespace, name, key
        self.kubeconfig, self.context = kubeconfig, context
        #: Pauses between failed watches wait on this; stop() sets it.
        self._stop = threading.Event()
        #: Ends the running watch request at once on stop().
        self._cancel = Cancel()
        self._thread: threading.Thread | None = None
        self._rv: str | None = None
        #: Lists after the first (each 410 Gone, or a failure, costs one), and failures that
        #: paused RETRY_SECONDS: a 410 must relist at once, never wait out a retry.
        self.relists = 0
        self.retries = 0

    @property
    def what(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def _kube(self) -> Kube:
        from raibid_gitops.clients.kube import connect

        # The CLI's rules, from the one place that has them: --kubeconfig, else $KUBECONFIG,
        # else ~/.kube/config, else the in-cluster service account.
        return connect(self.kubeconfig, self.context)

    def _offer(self, obj: dict) -> None:
        data = obj.get("data") or {}
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if self.key not in data:
            self.holder.reject(rv, f"{self.what} has no key {self.key}")
            return
        self.holder.offer(data[self.key], rv, f"{self.what}[{self.key}]")

    def list_once(self) -> str:
        """Read the ConfigMap; returns the list's resourceVersion to watch from."""
        lst = self._kube().list("v1", "ConfigMap", self.namespace, field_selector=f"metadata.name={self.name}")
        items = lst.get("items") or []
        for item in items:
            self._offer(item)
        if not items:
            log.error("%s does not exist (keeping the last good settings)", self.what)
        return str(lst["metadata"]["resourceVersion"])

    def load_initial(self) -> Snapshot:
        self._rv = self.list_once()
        return self.holder.require(self.what, hint="check that Flux applied the overlay (raibid gitops sync)")

    def _follow(self, since: str | None) -> None:
        """Watch (from ``since``, else list first) until stopped; every version is offered."""
        for ev in self._kube().watch("v1", "ConfigMap", self.namespace, field_selector=f"metadata.name={self.name}",
                                     chunk=WATCH_SECONDS, cancel=self._cancel, what=self.what, since=since):
            if ev.type == "SYNC":
                self.relists += 1
                for item in (ev.items or {}).values():
                    self._offer(item)
                if not ev.items:
                    log.error("%s does not exist (keeping the last good settings)", self.what)
            elif ev.type in ("ADDED", "MODIFIED") and ev.obj is not None:
                self._offer(ev.obj)
            elif ev.type == "DELETED":
                log.error("%s was deleted (keeping the last good settings)", self.what)

    def _run(self) -> None:
        since = self._rv
        while not self._stop.is_set():
            try:
                self._follow(since)
            except Exception as exc:  # noqa: BLE001 - a watcher must never die: keep the last good settings
                if self._stop.is_set():
                    break
                log.warning("watch of %s failed: %s; listing again in %gs", self.what, exc, RETRY_SECONDS)
                self.retries += 1
                self._stop.wait(RETRY_SECONDS)
            since = None  # after a failure, list again: deletions may have been missed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="settings-configmap", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._cancel.set()
