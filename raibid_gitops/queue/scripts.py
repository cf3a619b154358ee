"""The queue's state changes as Lua scripts: each runs atomically in Redis.

Why scripts and not client-side MULTI/EXEC: every change here reads before it writes (is the
job already final? does this agent still own the entry?) and must write the result and the
XACK together. A script does both atomically, and Redis 7 persists a script's effects to the
AOF as one MULTI/EXEC block, so after a crash either the result and the ack are both there or
neither is (the job is then delivered again, never lost).

Rules every script keeps (DESIGN.md): XACK only together with a stored final result; never
XDEL on the job stream; trim the job stream only below what the consumer group has delivered
and acknowledged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raibid_gitops import contract as c

if TYPE_CHECKING:  # pragma: no cover
    import redis

_FINAL = "{" + ", ".join(f"['{s}']=true" for s in sorted(c.FINAL_STATES)) + "}"

_COMMON = f"""
local FINAL = {_FINAL}
local function idlt(a, b)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
local function syslog(logs, maxlen, now, line)
  redis.call('XADD', logs, 'MAXLEN', '~', maxlen, '*',
             '{c.LOG_TIME}', now, '{c.LOG_SOURCE}', '{c.LOG_SOURCE_SYSTEM}', '{c.LOG_LINE}', line)
end
"""

# KEYS: stream, job, index, logs
# ARGV: group, maxLen, jobId, now, nEntry, entry k/v..., record k/v...
# Trimming: MAXLEN ~ alone can cut entries the group has not delivered yet (a backlog longer
# than maxLen) or that are still pending (an old long job), losing them. So the cut point is
# the id maxLen entries from the end, lowered to the group's last-delivered id and to the
# oldest pending id, and given to XADD as MINID ~.
SUBMIT = _COMMON + f"""
local stream, job, index, logs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, maxlen, jobid, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
if redis.call('EXISTS', job) == 1 then
  return redis.error_reply('JOBEXISTS job ' .. jobid .. ' already exists')
end
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local entry, record = {{}}, {{}}
for i = 6, 5 + n do entry[#entry + 1] = ARGV[i] end
for i = 6 + n, #ARGV do record[#record + 1] = ARGV[i] end
local cut = nil
local len = redis.call('XLEN', stream)
if len >= maxlen then
  local r = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen + 2)
  cut = r[#r][1]
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {{}}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == group then
      local last = info['last-delivered-id']
      if idlt(last, cut) then cut = last end
    end
  end
  local p = redis.call('XPENDING', stream, group)
  if p[2] and idlt(p[2], cut) then cut = p[2] end
end
local id
if cut then
  id = redis.call('XADD', stream, 'MINID', '~', cut, '*', unpack(entry))
else
  id = redis.call('XADD', stream, '*', unpack(entry))
end
redis.call('HSET', job, '{c.REC_ENTRY_ID}', id, unpack(record))
redis.call('ZADD', index, now, jobid)
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
local attempt = redis.call('HINCRBY', job, '{c.REC_ATTEMPT}', 1)
redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_RUNNING}', '{c.REC_AGENT}', agent,
           '{c.REC_STARTED_AT}', now, '{c.REC_UPDATED_AT}', now, '{c.REC_SETTINGS_HASH}', shash)
syslog(logs, maxlen, now, 'started by agent ' .. agent .. ' (attempt ' .. attempt .. ', settings ' .. shash .. ')')
return {{'ok', tostring(attempt)}}
"""

# KEYS: job, stream, logs   ARGV: group, entryId, attempt, state, exitCode, reason, now, logMaxLen
# The result and the XACK in one step; refused when another attempt owns the job now.
FINISH = _COMMON + f"""
local job, stream, logs = KEYS[1], KEYS[2], KEYS[3]
local group, eid, attempt, state, code, reason, now, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local rec = redis.call('HMGET', job, '{c.REC_STATE}', '{c.REC_ATTEMPT}')
local st, att = rec[1], rec[2]
if not st then
  redis.call('XACK', stream, group, eid)
  return 'missing'
end
if FINAL[st] then
  redis.call('XACK', stream, group, eid)
  return 'already'
end
if st ~= '{c.STATE_RUNNING}' or att ~= attempt then
  return 'superseded'
end
redis.call('HSET', job, '{c.REC_STATE}', state, '{c.REC_EXIT_CODE}', code, '{c.REC_REASON}', reason,
           '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
local line = '{c.LOG_FINISHED_PREFIX} ' .. state .. ' (exit ' .. code .. ')'
if reason ~= '' then line = line .. ': ' .. reason end
syslog(logs, maxlen, now, line)
redis.call('XACK', stream, group, eid)
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

# KEYS: stream, dead, job, logs   ARGV: group, entryId, reason, deliveries, now, logMaxLen, entry k/v...
DEAD_LETTER = _COMMON + f"""
local stream, dead, job, logs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, eid, reason, deliveries, now, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local entry = {{}}
for i = 7, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', dead, '*', '{c.FIELD_REASON}', reason, '{c.FIELD_ORIGINAL_ID}', eid,
           '{c.FIELD_DELIVERIES}', deliveries, unpack(entry))
local st = redis.call('HGET', job, '{c.REC_STATE}')
if st and not FINAL[st] then
  redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_DEAD}', '{c.REC_REASON}', reason,
             '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
  syslog(logs, maxlen, now, '{c.LOG_FINISHED_PREFIX} {c.STATE_DEAD}: ' .. reason)
end
redis.call('XACK', stream, group, eid)
return 'ok'
"""

# KEYS: stream, job, dead   ARGV: group, oldEntryId or '', deadEntryId or '', now, entry k/v...
# Puts a job back in the queue as a new entry: a drained agent's just-delivered entry, or a
# dead letter being retried. The dead-letter stream is a human work list, so its entry is
# removed here; the job stream itself is never XDEL'ed.
REQUEUE = f"""
local stream, job, dead = KEYS[1], KEYS[2], KEYS[3]
local group, old, deadid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local entry = {{}}
for i = 5, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
local id = redis.call('XADD', stream, '*', unpack(entry))
redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_QUEUED}', '{c.REC_ENTRY_ID}', id, '{c.REC_UPDATED_AT}', now)
redis.call('HDEL', job, '{c.REC_REASON}', '{c.REC_EXIT_CODE}', '{c.REC_FINISHED_AT}', '{c.REC_STARTED_AT}',
           '{c.REC_AGENT}', '{c.REC_CANCEL_REQUESTED}')
if old ~= '' then redis.call('XACK', stream, group, old) end
if deadid ~= '' then redis.call('XDEL', dead, deadid) end
return id
"""

# KEYS: job, logs   ARGV: now, logMaxLen
CANCEL = _COMMON + f"""
local job, logs = KEYS[1], KEYS[2]
local now, maxlen = ARGV[1], ARGV[2]
local st = redis.call('HGET', job, '{c.REC_STATE}')
if not st then return {{'missing', ''}} end
if FINAL[st] then return {{'final', st}} end
if st == '{c.STATE_QUEUED}' then
  -- Its entry stays in the stream; the agent that reads it sees the final state and acks it.
  redis.call('HSET', job, '{c.REC_STATE}', '{c.STATE_CANCELLED}', '{c.REC_REASON}', 'cancelled before it started',
             '{c.REC_FINISHED_AT}', now, '{c.REC_UPDATED_AT}', now)
  syslog(logs, maxlen, now, '{c.LOG_FINISHED_PREFIX} {c.STATE_CANCELLED}: cancelled before it started')
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


class Scripts:
    """The scripts registered on one client (EVALSHA, reloaded by redis-py after a restart)."""

    def __init__(self, client: redis.Redis) -> None:
        self.submit: Any = client.register_script(SUBMIT)
        self.start: Any = client.register_script(START)
        self.finish: Any = client.register_script(FINISH)
        self.touch: Any = client.register_script(TOUCH)
        self.dead_letter: Any = client.register_script(DEAD_LETTER)
        self.requeue: Any = client.register_script(REQUEUE)
        self.cancel: Any = client.register_script(CANCEL)
        self.retire: Any = client.register_script(RETIRE)


def scripts_for(client: redis.Redis) -> Scripts:
    """One :class:`Scripts` per client, cached on it."""
    cached = getattr(client, "_raibid_scripts", None)
    if cached is None:
        cached = Scripts(client)
        client._raibid_scripts = cached  # type: ignore[attr-defined]
    return cached
