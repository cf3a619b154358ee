"""A job's log lines to ``raibid:job:{id}:logs``, batched and bounded.

Lines are buffered and written by a background thread in one pipeline per batch (a chatty
build would otherwise cost a round trip per line). The stream is capped with MAXLEN ~
``agents.logMaxLen``. Logs are best effort: a Redis hiccup drops lines and says so, but never
fails the job (its result is what must not be lost).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from raibid_gitops import contract as c

if TYPE_CHECKING:  # pragma: no cover
    import redis

log = logging.getLogger("raibid.agent.logs")

#: Longest line kept; a minified bundle printed to stdout should not fill Redis.
MAX_LINE = 4096
#: Flush at least this often so `raibid queue logs -f` feels live.
FLUSH_SECONDS = 0.25
BATCH = 200


class LogSink:
    def __init__(self, client: redis.Redis, job_id: str, max_len: int) -> None:
        self.client = client
        self.key = c.job_logs_key(job_id)
        self.max_len = max_len
        self._buf: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"logs-{job_id}", daemon=True)
        self._thread.start()

    def _add(self, source: str, line: str) -> None:
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + " [truncated]"
        with self._lock:
            self._buf.append((f"{time.time():.6f}", source, line))
            if len(self._buf) >= BATCH:
                self._wake.set()

    def output(self, line: str) -> None:
        self._add(c.LOG_SOURCE_OUTPUT, line)

    def system(self, line: str) -> None:
        self._add(c.LOG_SOURCE_SYSTEM, line)

    def flush(self) -> None:
        with self._lock:
            batch, self._buf = self._buf, []
        if not batch:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for t, src, line in batch:
                pipe.xadd(self.key, {c.LOG_TIME: t, c.LOG_SOURCE: src, c.LOG_LINE: line},
                          maxlen=self.max_len, approximate=True)
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - redis errors: logs are best effort, see module doc
            self.dropped += len(batch)
            log.warning("dropped %d log lines of %s: %s", len(batch), self.key, type(exc).__name__)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(10)
        self.flush()
