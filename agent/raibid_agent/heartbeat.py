"""The agent's heartbeat and its running job's watch.

- ``raibid:agent:{id}``: a hash with state, current job and the settings hash in use, with a
  TTL of a few heartbeats, so a killed agent disappears by itself and `sync`/the TUI can tell
  which settings are *in effect*.
- While a job runs: every ``queue.heartbeatSeconds`` the entry's idle time is reset (only
  while this agent still owns it), so XAUTOCLAIM on other agents leaves a live job alone;
  every ``CANCEL_POLL_SECONDS`` the job's cancel flag is read.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from raibid_agent.runner import LOST, CancelSignal
from raibid_gitops import contract as c
from raibid_gitops.queue.scripts import scripts_for
from raibid_gitops.queue.stats import note_primary

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_agent.settings_source import SettingsHolder

log = logging.getLogger("raibid.agent.heartbeat")

#: The heartbeat hash outlives this many missed beats before it expires.
TTL_BEATS = 3
#: Bounds how long a cancelled job keeps running.
CANCEL_POLL_SECONDS = 1.0


class Heartbeat:
    def __init__(self, client: redis.Redis, agent_id: str, holder: SettingsHolder) -> None:
        self.client = client
        self.agent_id = agent_id
        self.holder = holder
        self.state = c.AGENT_STATE_IDLE
        self.job_id = ""
        self._entry: tuple[str, str, str, str] | None = None  # stream, group, entry id, job id
        self._cancel: CancelSignal | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._started = f"{time.time():.3f}"
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Beat now (e.g. the settings changed: report the new hash without waiting)."""
        self._kick.set()

    def set_state(self, state: str, job_id: str = "") -> None:
        self.state, self.job_id = state, job_id
        self._kick.set()

    def watch_job(self, stream: str, group: str, entry_id: str, job_id: str, cancel: CancelSignal) -> None:
        self._entry, self._cancel = (stream, group, entry_id, job_id), cancel

    def unwatch_job(self) -> None:
        self._entry, self._cancel = None, None

    def beat(self) -> None:
        snap = self.holder.peek()
        rej = self.holder.rejection
        hb = snap.settings.queue.heartbeat_seconds if snap else 15
        key = c.agent_key(self.agent_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={
            c.AGENT_STATE: self.state, c.AGENT_JOB: self.job_id,
            c.AGENT_SETTINGS_HASH: snap.hash if snap else "",
            c.AGENT_SETTINGS_GENERATION: str(snap.generation if snap else 0),
            c.AGENT_SETTINGS_ERROR: rej.message[:2000] if rej else "",
            c.AGENT_SETTINGS_REFUSED: rej.digest if rej else "",
            c.AGENT_UPDATED_AT: f"{time.time():.3f}", c.AGENT_STARTED_AT: self._started,
        })
        pipe.expire(key, TTL_BEATS * hb)
        pipe.execute()
        # Through Sentinel: the first agent to reach a promoted replica records the failover
        # (what `raibid queue stats` and the TUI show).
        note_primary(self.client)

    def touch(self) -> None:
        entry, cancel = self._entry, self._cancel
        if entry is None or cancel is None:
            return
        stream, group, eid, job_id = entry
        owned, cancel_flag = scripts_for(self.client).touch(keys=[stream, c.job_key(job_id)],
                                                             args=[group, eid, self.agent_id])
        if not int(owned):
            log.warning("job %s: entry %s is no longer ours (taken over); stopping it", job_id, eid)
            cancel.set(LOST)
        elif cancel_flag == "1":
            cancel.set("cancelled by request")

    def poll_cancel(self) -> None:
        entry, cancel = self._entry, self._cancel
        if entry is None or cancel is None:
            return
        if self.client.hget(c.job_key(entry[3]), c.REC_CANCEL_REQUESTED) == "1":
            cancel.set("cancelled by request")

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            snap = self.holder.peek()
            hb = snap.settings.queue.heartbeat_seconds if snap else 15
            now = time.monotonic()
            try:
                if now >= next_beat or self._kick.is_set():
                    self._kick.clear()
                    self.beat()
                    self.touch()
                    next_beat = now + hb
                else:
                    self.poll_cancel()
            except Exception as exc:  # noqa: BLE001 - Redis down: keep the job running, try again next tick
                log.warning("heartbeat failed: %s", exc)
            self._kick.wait(min(CANCEL_POLL_SECONDS, max(0.05, next_beat - time.monotonic())))

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(5)
        try:
            self.client.delete(c.agent_key(self.agent_id))
        except Exception:  # noqa: BLE001 - best effort: the TTL removes it anyway
            pass
