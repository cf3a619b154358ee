"""The queue contract: every Redis key, stream field and Kubernetes name the runtime uses.

The original raibid-ci failed because each component spelled these differently. Here the
stream, group and dead-letter names come from settings (``queue.*``); the key layout and
message fields below are the rest of the contract, and the agent, the producer, the TUI
and the manifests all import them from here. ``tests/test_contract.py`` renders the overlay
and checks that the ScaledJob trigger and the ConfigMap agree with this module.
"""

from __future__ import annotations

#: The ConfigMap Flux syncs from overlays/dgx-spark/settings.yaml, and its data key.
SETTINGS_CONFIGMAP = "raibid-settings"
SETTINGS_KEY = "settings.yaml"

#: The Secret holding Redis's password (created out of band, never committed) and its key.
REDIS_SECRET = "raibid-redis"
REDIS_SECRET_KEY = "password"

#: The Secret holding the agents' Gitea token (clone access) and its key.
GITEA_SECRET = "raibid-gitea"
GITEA_SECRET_KEY = "token"

#: Labels shared by every object raibid-gitops renders.
PART_OF_LABEL = ("app.kubernetes.io/part-of", "raibid-ci")
AGENT_NAME = "raibid-agent"
REDIS_NAME = "raibid-redis"

#: Key prefix of everything raibid-ci keeps in Redis other than the streams.
KEY_PREFIX = "raibid"


def job_key(job_id: str) -> str:
    """Hash with a job's status record (state, timestamps, exit code, settings hash...)."""
    return f"{KEY_PREFIX}:job:{job_id}"


def job_logs_key(job_id: str) -> str:
    """Stream with a job's log lines (bounded by ``MAXLEN ~``)."""
    return f"{KEY_PREFIX}:job:{job_id}:logs"


def agent_key(agent_id: str) -> str:
    """Heartbeat hash of one agent, with a TTL so a dead agent disappears by itself."""
    return f"{KEY_PREFIX}:agent:{agent_id}"


#: Index of all job ids, newest last (a sorted set scored by submit time).
JOBS_INDEX = f"{KEY_PREFIX}:jobs:index"
#: Finished jobs (a sorted set scored by finish time): what retention removes, oldest first
#: (``queue.retention``). A job is only ever in it while its state is final.
FINISHED_INDEX = f"{KEY_PREFIX}:jobs:finished"
#: Pattern to find live agents with SCAN.
AGENT_PATTERN = f"{KEY_PREFIX}:agent:*"
#: queue.mode sentinel: the primary's address as last seen by a raibid client (a string), and
#: the failovers seen (a stream: from, to, at), written when a client finds another primary.
PRIMARY_KEY = f"{KEY_PREFIX}:redis:primary"
FAILOVERS_STREAM = f"{KEY_PREFIX}:redis:failovers"
#: Failovers kept (XADD MAXLEN ~): a history to read, not an audit log.
FAILOVERS_KEPT = 100

#: Fields of a job-stream entry. The entry carries the job id only as a reference; the
#: status record is the truth, so a retried entry never carries stale state.
FIELD_JOB_ID = "job_id"
FIELD_REPO = "repo"
FIELD_REF = "ref"
FIELD_COMMIT = "commit"
FIELD_SUBMITTED_AT = "submitted_at"
#: Fields a dead-letter entry adds.
FIELD_REASON = "reason"
FIELD_ORIGINAL_ID = "original_id"
FIELD_DELIVERIES = "deliveries"

#: Job states. Final ones are never left again.
STATE_QUEUED = "queued"
STATE_RUNNING = "running"
STATE_SUCCEEDED = "succeeded"
STATE_FAILED = "failed"
STATE_TIMED_OUT = "timed_out"
STATE_CANCELLED = "cancelled"
STATE_DEAD = "dead"
FINAL_STATES = frozenset({STATE_SUCCEEDED, STATE_FAILED, STATE_TIMED_OUT, STATE_CANCELLED, STATE_DEAD})

# --- added for the agent and queue runtime (issue 6) -------------------------------------

#: How a job gets its working tree. "git" clones repo at commit/ref from Gitea; "none" runs
#: the pipeline in an empty directory (smoke tests and benchmarks: `raibid queue submit
#: --no-checkout`). Explicit in the entry and the status record, never inferred.
FIELD_CHECKOUT = "checkout"
CHECKOUT_GIT = "git"
CHECKOUT_NONE = "none"

#: Fields of the job status hash (``job_key``). The stream entry only references the job;
#: these are the truth.
REC_STATE = "state"
REC_REPO = "repo"
REC_REF = "ref"
REC_COMMIT = "commit"
REC_CHECKOUT = "checkout"
REC_SUBMITTED_AT = "submitted_at"
REC_STARTED_AT = "started_at"
REC_FINISHED_AT = "finished_at"
REC_UPDATED_AT = "updated_at"
REC_EXIT_CODE = "exit_code"
REC_REASON = "reason"
REC_AGENT = "agent"
#: Incremented each time an agent starts the job; a finish from an older attempt is refused.
REC_ATTEMPT = "attempt"
REC_ENTRY_ID = "entry_id"
REC_SETTINGS_HASH = "settings_hash"
#: Set by `raibid queue cancel` on a running job; the agent polls it and kills the step.
REC_CANCEL_REQUESTED = "cancel_requested"

#: Fields of a log-stream entry.
LOG_TIME = "t"
LOG_SOURCE = "src"  # "out" (step output) or "sys" (the agent's own lines)
LOG_LINE = "line"
LOG_SOURCE_OUTPUT = "out"
LOG_SOURCE_SYSTEM = "sys"
#: Prefix of the one system log line written atomically with a job's final status.
LOG_FINISHED_PREFIX = "finished:"

#: Fields of the agent heartbeat hash (``agent_key``).
AGENT_STATE = "state"  # idle | running | draining
AGENT_JOB = "job"
AGENT_SETTINGS_HASH = "settings_hash"
AGENT_SETTINGS_GENERATION = "settings_generation"
AGENT_SETTINGS_ERROR = "settings_error"
#: ``settings.text_digest`` of the version refused in ``settings_error``: names *which* version
#: was refused, so `sync --wait-agents` never blames a new commit for an older refusal.
AGENT_SETTINGS_REFUSED = "settings_refused"
AGENT_UPDATED_AT = "updated_at"
AGENT_STARTED_AT = "started_at"
AGENT_STATE_IDLE = "idle"
AGENT_STATE_RUNNING = "running"
AGENT_STATE_DRAINING = "draining"

#: The repository file that overrides the default pipeline.
PIPELINE_FILE = ".raibid.yml"
