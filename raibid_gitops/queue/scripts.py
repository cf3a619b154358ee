"""The queue's state changes as Lua scripts: each runs atomically in Redis.

Why scripts and not client-side MULTI/EXEC: every change here reads before it writes (is the
job already final? does this agent still own the entry?) and must write the result and the
XACK together. A script does both atomically, and Redis 7 persists a script's effects to the
AOF as one MULTI/EXEC block, so after a crash either the result and the ack are both there or
neither is (the job is then delivered again, never lost).

Rules every script keeps (DESIGN.md): XACK only together with a stored final result; never
XDEL on the job stream; trim the job stream only below what the consumer group has delivered
and acknowledged.

Retention (``queue.retention``): a job that becomes final is entered in ``FINISHED_INDEX``
(scored by finish time) and its record and logs get a TTL of ``finishedJobSeconds``. Every
script that adds or finishes a job then removes the oldest finished jobs past
``finishedJobSeconds`` or beyond ``finishedJobs`` (at most :data:`RETAIN_BATCH` per call, so
a script stays short; each call removes more than it adds until the backlog is gone). Only
jobs in ``FINISHED_INDEX`` whose record says final are ever removed: queued and running jobs
never are. The TTL is the backstop when no more jobs come. The dead-letter stream is capped
at ``deadLetters`` entries (MAXLEN ~). The removed jobs' keys are named in the script, not
passed as KEYS: fine on the single Redis raibid-ci runs (a Redis Cluster would need hash tags).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raibid_gitops import contract as c

if TYPE_CHECKING:  # pragma: no cover
    import redis

    from raibid_gitops.settings import Settings

_FINAL = "{" + ", ".join(f"['{s}']=true" for s in sorted(c.FINAL_STATES)) + "}"
#: Most finished jobs one script call removes (see the module doc).
RETAIN_BATCH = 100
JOB_PREFIX = c.job_key("")
LOGS_SUFFIX = c.job_logs_key("")[len(JOB_PREFIX):]
assert c.job_logs_key("x") == JOB_PREFIX + "x" + LOGS_SUFFIX

_COMMON = f"""
local FINAL = {_FINAL}
local function idlt(a, b)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
local function retain(finished, index, now, keepsec, keepcount)
  local card = redis.call('ZCARD', finished)
  if card == 0 then return 0 end
  local expired = redis.call('ZCOUNT', finished, '-inf', '(' .. (tonumber(now) - tonumber(keepsec)))
  local over = card - tonumber(keepcount)
  local n = math.min(math.max(expired, over), {RETAIN_BATCH})
  if n <= 0 then return 0 end
  local removed = 0
  for _, id in ipairs(redis.call('ZRANGE', finished, 0, n - 1)) do
    local key = '{JOB_PREFIX}' .. id
    local st = redis.call('HGET', key, '{c.REC_STATE}')
    if not st or FINAL[st] then
      redis.call('DEL', key, key .. '{LOGS_SUFFIX}')
      redis.call('ZREM', index, id)
      removed = removed + 1
    end
    -- A job no longer final (queued again) left the index when it was requeued; never delete it.
    redis.call('ZREM', finished, id)
  end
  return removed
end
local function finished(job, logs, finishedkey, jobid, now, keepsec)
  redis.call('ZADD', finishedkey, now, jobid)
  redis.call('EXPIRE', job, keepsec)
  redis.call('EXPIRE', logs, keepsec)
end
local function syslog(logs, maxlen, now, line)
  redis.call('XADD', logs, 'MAXLEN', '~', maxlen, '*',
             '{c.LOG_TIME}', now, '{c.LOG_SOURCE}', '{c.LOG_SOURCE_SYSTEM}', '{c.LOG_LINE}', line)
end
"""

# KEYS: stream, job, index, logs, finished
# ARGV: group, maxLen, jobId, now, keepSeconds, keepCount, repo, ref, commit, checkout
# The entry and the status record are both made here from those values (JobSpec.entry_fields
# is the entry's layout): passing them once keeps a submit's request small, which is most of
# its cost next to a bare XADD.
# Trimming: MAXLEN ~ alone can cut entries the group has not delivered yet (a backlog longer
# than maxLen) or that are still pending (an old long job), losing them. So the cut point is
# the id maxLen entries from the end, lowered to the group's last-delivered id and to the
# oldest pending id, and given to XADD as MINID ~. Only entries up to that bound are read to
# find it: reading from the start of the stream instead made a submit cost O(backlog) while
# agents were away (50 ms a submit, Redis blocked meanwhile, with 20,000 queued past maxLen).
SUBMIT = _COMMON + f"""
local stream, job, index, logs, finishedkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, maxlen, jobid, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local keepsec, keepcount = ARGV[5], ARGV[6]
local repo, ref, commit, checkout = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if redis.call('EXISTS', job) == 1 then
  return redis.error_reply('JOBEXISTS job ' .. jobid .. ' already exists')
end
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local cut = nil
local len = redis.call('XLEN', stream)
if len >= maxlen then
  local bound = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {{}}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then bound = info['last-delivered-id'] end
  end
  local p = redis.call('XPENDING', stream, group)
  if bound and p[2] and idlt(p[2], bound) then bound = p[2] end
  if bound then
    local want = len - maxlen + 2
    local r = redis.call('XRANGE', stream, '-', bound, 'COUNT', want)
    if #r == want then cut = r[#r][1] else cut = bound end
  end
end
local id
if cut then
  id = redis.call('XADD', stream, 'MINID', '~', cut, '*', '{c.FIELD_JOB_ID}', jobid, '{c.FIELD_REPO}', repo,
                  '{c.FIELD_REF}', ref, '{c.FIELD_COMMIT}', commit, '{c.FIELD_CHECKOUT}', checkout,
                  '{c.FIELD_SUBMITTED_AT}', now)
else
  id = redis.call('XADD', stream, '*', '{c.FIELD_JOB_ID}', jobid, '{c.FIELD_REPO}', repo, '{c.FIELD_REF}', ref,
                  '{c.FIELD_COMMIT}', commit, '{c.FIELD_CHECKOUT}', checkout, '{c.FIELD_SUBMITTED_AT}', now)
end
redis.call('HSET', job, '{c.REC_ENTRY_ID}', id, '{c.REC_STATE}', '{c.STATE_QUEUED}', '{c.REC_REPO}', repo,
           '{c.REC_REF}', ref, '{c.REC_COMMIT}', commit, '{c.REC_CHECKOUT}', checkout, '{c.REC_SUBMITTED_AT}', now,
           '{c.REC_UPDATED_AT}', now, '{c.REC_ATTEMPT}', '0')
redis.call('ZADD', index, now, jobid)
retain(finishedkey, index, now, keepsec, keepcount)
return id
"""

# KEYS: job, stream, logs   ARGV: group, entryId, agent, now, settingsHash, logMaxLen
# Returns {status, detail}: ok/attempt, final/state, missing, stale.
START = _COMMON + f"""
local job, stream, logs = KEYS[1], KEYS[2], KEYS[3]
local group, eid, agent, now, shash, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local rec = redis.call('HMGET', job, '{c.REC_STATE}', '{c.REC_ENTRY_ID}')
local st, recid = rec[1], rec[2]
if not st then
  redis.call('XACK', stream, group, eid)
  return {{'missing', ''}}
end
if FINAL[st] then
  redis.call('XACK', stream, group, eid)
  return {{'final', st}}
end
if recid and recid ~= eid then
  -- An older entry of a job that was requeued: the newer entry is the live one.
  redis.call('XACK', stream, group, eid)
  return {{'stale', recid}}
end
-- Only the consumer the entry is pending for may start it. After a failover the promoted
-- replica may not have seen this delivery (replication is asynchronous): the entry is then
-- delivered again, to whoever reads it next, and must not also run here.
local p = redis.call('XPENDING', stream, group, eid, eid, 1)
if #p == 0 or p[1][2] ~= agent then
  return {{'notowned', ''}}
end
local attempt = redis.call('HINCRBY', job, '{c.REC_ATTEMPT}', 1)
redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_RUNNING}', '{c.REC_AGENT}', agent,
           '{c.REC_STARTED_AT}', now, '{c.REC_UPDATED_AT}', now, '{c.REC_SETTINGS_HASH}', shash)
syslog(logs, maxlen, now, 'started by agent ' .. agent .. ' (attempt ' .. attempt .. ', settings ' .. shash .. ')')
return {{'ok', tostring(attempt)}}
"""

# KEYS: job   ARGV: attempt, commit, now
# The commit an agent checked out, recorded while the job runs (a job submitted with a ref
# only then shows what it builds); only by the attempt that owns the job.
CHECKED_OUT = f"""
local job = KEYS[1]
local attempt, commit, now = ARGV[1], ARGV[2], ARGV[3]
local rec = redis.call('HMGET', job, '{c.REC_STATE}', '{c.REC_ATTEMPT}')
if rec[1] ~= '{c.STATE_RUNNING}' or rec[2] ~= attempt then return 0 end
redis.call('HSET', job, '{c.REC_COMMIT}', commit, '{c.REC_UPDATED_AT}', now)
return 1
"""

# KEYS: job, stream, logs, index, finished
# ARGV: group, entryId, attempt, state, exitCode, reason, now, logMaxLen, jobId, keepSeconds, keepCount
#       [, commit checked out ('' when none)]
# The result and the XACK in one step; refused when another attempt owns the job now.
FINISH = _COMMON + f"""
local job, stream, logs, index, finishedkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, eid, attempt, state, code, reason, now, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local jobid, keepsec, keepcount = ARGV[9], ARGV[10], ARGV[11]
local commit = ARGV[12] or ''
local rec = redis.call('HMGET', job, '{c.REC_STATE}', '{c.REC_ATTEMPT}')
local st, att = rec[1], rec[2]
if not st then
  redis.call('XACK', stream, group, eid)
  return 'missing'
end
if FINAL[st] then
  redis.call('XACK', stream, group, eid)
  -- This very result, stored before (a retry after a lost reply or a failover): stored.
  if att == attempt and st == state then return 'repeat' end
  return 'already'
end
if st ~= '{c.STATE_RUNNING}' or att ~= attempt then
  return 'superseded'
end
redis.call('HSET', job, '{c.REC_STATE}', state, '{c.REC_EXIT_CODE}', code, '{c.REC_REASON}', reason,
           '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
if commit ~= '' then redis.call('HSET', job, '{c.REC_COMMIT}', commit) end
local line = '{c.LOG_FINISHED_PREFIX} ' .. state .. ' (exit ' .. code .. ')'
if reason ~= '' then line = line .. ': ' .. reason end
syslog(logs, maxlen, now, line)
redis.call('XACK', stream, group, eid)
finished(job, logs, finishedkey, jobid, now, keepsec)
retain(finishedkey, index, now, keepsec, keepcount)
return 'ok'
"""

# KEYS: stream, job   ARGV: group, entryId, consumer
# The heartbeat on a running entry: XCLAIM ... JUSTID resets its idle time (so XAUTOCLAIM
# leaves it alone) without counting a delivery, but only while this agent still owns it.
# Returns {owned 0/1, cancelRequested ''/'1'}.
TOUCH = f"""
local stream, job = KEYS[1], KEYS[2]
local group, eid, consumer = ARGV[1], ARGV[2], ARGV[3]
local cancel = redis.call('HGET', job, '{c.REC_CANCEL_REQUESTED}') or ''
local p = redis.call('XPENDING', stream, group, eid, eid, 1)
if #p == 0 or p[1][2] ~= consumer then return {{0, cancel}} end
redis.call('XCLAIM', stream, group, consumer, 0, eid, 'JUSTID')
return {{1, cancel}}
"""

# KEYS: stream, dead, job, logs, index, finished
# ARGV: group, entryId, reason, deliveries, now, logMaxLen, jobId, keepSeconds, keepCount, deadLetters, entry k/v...
DEAD_LETTER = _COMMON + f"""
local stream, dead, job, logs, index, finishedkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local group, eid, reason, deliveries, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local jobid, keepsec, keepcount, deadmax = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local entry = {{}}
for i = 11, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', dead, 'MAXLEN', '~', deadmax, '*', '{c.FIELD_REASON}', reason, '{c.FIELD_ORIGINAL_ID}', eid,
           '{c.FIELD_DELIVERIES}', deliveries, unpack(entry))
local st = redis.call('HGET', job, '{c.REC_STATE}')
if st and not FINAL[st] then
  redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_DEAD}', '{c.REC_REASON}', reason,
             '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
  syslog(logs, maxlen, now, '{c.LOG_FINISHED_PREFIX} {c.STATE_DEAD}: ' .. reason)
  if jobid ~= '' then finished(job, logs, finishedkey, jobid, now, keepsec) end
end
redis.call('XACK', stream, group, eid)
retain(finishedkey, index, now, keepsec, keepcount)
return 'ok'
"""

# KEYS: stream, job, dead, logs, finished, index
# ARGV: group, oldEntryId or '', deadEntryId or '', now, jobId, entry k/v...
# Puts a job back in the queue as a new entry: a drained agent's just-delivered entry, or a
# dead letter being retried. The dead-letter stream is a human work list, so its entry is
# removed here; the job stream itself is never XDEL'ed. A job queued again is unfinished:
# it leaves the finished index and its keys lose their retention TTL. If retention already
# removed its record, the record is made again from the entry's fields.
REQUEUE = f"""
local stream, job, dead, logs, finishedkey, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local group, old, deadid, now, jobid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local entry = {{}}
for i = 6, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if redis.call('EXISTS', job) == 0 then
  local rec = {{}}
  for i = 1, #entry, 2 do
    local k = entry[i]
    if k == '{c.FIELD_REPO}' or k == '{c.FIELD_REF}' or k == '{c.FIELD_COMMIT}' or k == '{c.FIELD_CHECKOUT}'
       or k == '{c.FIELD_SUBMITTED_AT}' then
      rec[#rec + 1] = k
      rec[#rec + 1] = entry[i + 1]
    end
  end
  redis.call('HSET', job, '{c.REC_ATTEMPT}', '0', unpack(rec))
end
redis.call('ZREM', finishedkey, jobid)
redis.call('ZADD', index, 'NX', now, jobid)
redis.call('PERSIST', job)
redis.call('PERSIST', logs)
local id = redis.call('XADD', stream, '*', unpack(entry))
redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_QUEUED}', '{c.REC_ENTRY_ID}', id, '{c.REC_UPDATED_AT}', now)
redis.call('HDEL', job, '{c.REC_REASON}', '{c.REC_EXIT_CODE}', '{c.REC_FINISHED_AT}', '{c.REC_STARTED_AT}',
           '{c.REC_AGENT}', '{c.REC_CANCEL_REQUESTED}')
if old ~= '' then redis.call('XACK', stream, group, old) end
if deadid ~= '' then redis.call('XDEL', dead, deadid) end
return id
"""

# KEYS: job, logs, index, finished   ARGV: now, logMaxLen, jobId, keepSeconds, keepCount
CANCEL = _COMMON + f"""
local job, logs, index, finishedkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, maxlen, jobid, keepsec, keepcount = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local st = redis.call('HGET', job, '{c.REC_STATE}')
if not st then return {{'missing', ''}} end
if FINAL[st] then return {{'final', st}} end
if st == '{c.STATE_QUEUED}' then
  -- Its entry stays in the stream; the agent that reads it sees the final state and acks it.
  redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_CANCELLED}', '{c.REC_REASON}', 'cancelled before it started',
             '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
  syslog(logs, maxlen, now, '{c.LOG_FINISHED_PREFIX} {c.STATE_CANCELLED}: cancelled before it started')
  finished(job, logs, finishedkey, jobid, now, keepsec)
  retain(finishedkey, index, now, keepsec, keepcount)
  return {{'cancelled', ''}}
end
redis.call('HSET', job, '{c.REC_CANCEL_REQUESTED}', '1', '{c.REC_UPDATED_AT}', now)
return {{'requested', st}}
"""

# KEYS: stream   ARGV: group, consumer
# An agent leaving removes its consumer from the group, but only with nothing pending under
# its name (DELCONSUMER would silently drop those entries' pending state).
RETIRE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class _NotPlain(Exception):
    """An argument the short path does not encode; redis-py's own path takes the call."""


def _packed(*parts: Any) -> bytes:
    """The RESP request for ``parts`` (str, int, bytes), encoded as redis-py encodes them."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            data = part.encode("utf-8")
        elif isinstance(part, bytes):
            data = part
        elif isinstance(part, int) and not isinstance(part, bool):
            data = b"%d" % part
        else:
            raise _NotPlain
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Line:
    """The short path's connection: one of the client's pooled connections, kept by the client's
    scripts instead of taken from the pool and given back on every call.

    redis-py's pool hand-out and return (a readiness poll, locks, metrics and events) cost about
    as much as the whole server side of a bare XADD. A call that finds the line busy (another
    thread's call in flight) takes a pooled connection as before, so threads never queue behind
    each other. Only for a client of one server: a Sentinel client's pool resolves the primary
    per connection, and a kept connection would outlive a failover.
    """

    def __init__(self, client: redis.Redis) -> None:
        import threading

        from redis import ConnectionPool

        self.pool = client.connection_pool
        self.keep = type(self.pool) is ConnectionPool
        self.lock = threading.Lock()
        self.conn: Any = None
        self.pid = 0

    def call(self, request: bytes) -> Any:
        import os

        if not self.keep or not self.lock.acquire(blocking=False):
            return self._pooled(request)
        try:
            if self.conn is None or self.pid != os.getpid():
                # After a fork the parent's connection is not ours to use or give back.
                self.conn, self.pid = self.pool.get_connection(), os.getpid()
            return self._exchange(self.conn, request, drop=self._drop)
        finally:
            self.lock.release()

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        self.pool.release(conn)

    def _pooled(self, request: bytes) -> Any:
        conn = self.pool.get_connection()
        try:
            return self._exchange(conn, request)
        finally:
            self.pool.release(conn)

    @staticmethod
    def _exchange(conn: Any, request: bytes, drop: Any = None) -> Any:
        try:
            conn.send_packed_command([request])  # health-checks a connection idle too long, as redis-py does
            return conn.read_response()  # raises an error reply; drops the connection on a socket error
        except BaseException as exc:
            from redis.exceptions import ResponseError

            if not isinstance(exc, ResponseError):
                conn.disconnect()  # a reply may still be on its way: never read it as another's
                if drop is not None:
                    drop()
            raise


class _Script:
    """One script, called as ``EVALSHA`` and loaded again when Redis does not know it (after a
    restart), as redis-py's Script does.

    The call takes a short path: the request is packed here and sent on a pooled connection,
    its reply read back. redis-py's general path (retry wrapper, command parsing, metrics) costs
    about as much per call as the whole server side of a bare XADD, which is what a submit is
    measured against (issue 14). Anything unusual goes through redis-py's path instead, which
    then applies its own reconnection and retries: a lost connection, an argument that is not
    a string or an integer, a client bound to one connection, a pipeline.
    """

    def __init__(self, client: redis.Redis, text: str, line: _Line | None = None) -> None:
        import hashlib

        from redis.client import Pipeline

        self.client = client
        self.line = line or _Line(client)
        self.script = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()
        self._pipeline_script = client.register_script(text) if isinstance(client, Pipeline) else None

    def __call__(self, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        """Run the script; ``client``: a pipeline to queue it on instead (redis-py's Script, which
        loads it when the pipeline runs), as Scripts.durable does to follow it with WAIT."""
        if client is not None:
            if self._pipeline_script is None:
                self._pipeline_script = self.client.register_script(self.script)
            return self._pipeline_script(keys=keys, args=args, client=client)
        if self._pipeline_script is not None:
            return self._pipeline_script(keys=keys, args=args)
        from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

        try:
            return self._short(keys, args)
        except NoScriptError:
            self.sha = self.client.script_load(self.script)
        except (_NotPlain, ConnectionError, TimeoutError):
            pass
        return self.client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def _short(self, keys: list[Any], args: list[Any]) -> Any:
        if getattr(self.client, "connection", None) is not None:
            raise _NotPlain  # a single-connection client: its lock is redis-py's business
        return self.line.call(_packed("EVALSHA", self.sha, len(keys), *keys, *args))


class Scripts:
    """The scripts, on one client (EVALSHA, loaded again after a restart of Redis)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        line = _Line(client)
        self.submit = _Script(client, SUBMIT, line)
        self.start = _Script(client, START, line)
        self.finish = _Script(client, FINISH, line)
        self.checked_out = _Script(client, CHECKED_OUT, line)
        self.touch = _Script(client, TOUCH, line)
        self.dead_letter = _Script(client, DEAD_LETTER, line)
        self.requeue = _Script(client, REQUEUE, line)
        self.cancel = _Script(client, CANCEL, line)
        self.retire = _Script(client, RETIRE, line)

    # One place for the KEYS/ARGV layout of the scripts two processes call (the agent, and tests
    # that play a stale agent): a change of layout cannot leave a caller behind.

    def start_attempt(self, settings: Settings, job_id: str, entry_id: str, agent: str, now: float,
                      settings_hash: str) -> list[Any]:
        """START: the job runs as ``agent``'s next attempt; returns [status, detail]."""
        return self.start_durable(settings, job_id, entry_id, agent, now, settings_hash)[0]

    def start_durable(self, settings: Settings, job_id: str, entry_id: str, agent: str, now: float,
                      settings_hash: str) -> tuple[list[Any], int | None]:
        """START, then (queue.mode sentinel) WAIT for queue.sentinel.ackReplicas replicas:
        ([status, detail], replicas that acknowledged, or None when none are asked for)."""
        q = settings.queue
        return self.durable(settings, self.start, [c.job_key(job_id), q.stream, c.job_logs_key(job_id)],
                            [q.consumer_group, entry_id, agent, f"{now:.6f}", settings_hash,
                             settings.agents.log_max_len])

    def finish_attempt(self, settings: Settings, job_id: str, entry_id: str, attempt: str, state: str,
                       exit_code: int, reason: str, now: float, *, commit: str = "") -> str:
        """FINISH: store the result (and the commit checked out, if known) and XACK, unless
        another attempt owns the job now."""
        return self.finish_durable(settings, job_id, entry_id, attempt, state, exit_code, reason, now,
                                   commit=commit)[0]

    def finish_durable(self, settings: Settings, job_id: str, entry_id: str, attempt: str, state: str,
                       exit_code: int, reason: str, now: float, *, commit: str = "") -> tuple[str, int | None]:
        """FINISH, then WAIT as :meth:`start_durable`. ``repeat`` means this very result was
        stored before (a retry): it counts as stored."""
        q = settings.queue
        return self.durable(
            settings, self.finish,
            [c.job_key(job_id), q.stream, c.job_logs_key(job_id), c.JOBS_INDEX, c.FINISHED_INDEX],
            [q.consumer_group, entry_id, attempt, state, exit_code, reason, f"{now:.6f}",
             settings.agents.log_max_len, job_id, q.retention.finished_job_seconds, q.retention.finished_jobs,
             commit],
        )

    def durable(self, settings: Settings, script: Any, keys: list[Any], args: list[Any]) -> tuple[Any, int | None]:
        """Run ``script``; in queue.mode sentinel follow it with WAIT on the same connection (a
        pipeline), so the count is of replicas that have *this* write. Returns (result, replicas
        that acknowledged it, or None when the settings ask for none).

        redis-py retries a pipeline whose connection broke, on a new connection (after a
        failover: to the new primary), so every script run here must be safe to repeat."""
        from raibid_gitops.clients.redis import acks

        replicas, timeout_ms = acks(settings)
        if not replicas:
            return script(keys=keys, args=args), None
        pipe = self.client.pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        pipe.wait(replicas, timeout_ms)
        result, acked = pipe.execute()
        return result, int(acked)


def scripts_for(client: redis.Redis) -> Scripts:
    """One :class:`Scripts` per client, cached on it."""
    cached = getattr(client, "_raibid_scripts", None)
    if cached is None:
        cached = Scripts(client)
        client._raibid_scripts = cached  # type: ignore[attr-defined]  # noqa: SLF001 - our own attribute on the client
    return cached
