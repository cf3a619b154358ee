"""The job queue on Redis Streams: producer, inspection, dead letters, webhooks.

Names come from settings (``queue.*``) and ``raibid_gitops.contract``; state changes are the
atomic scripts in :mod:`raibid_gitops.queue.scripts`, shared with the agent.
"""

from __future__ import annotations

from raibid_gitops.queue.jobs import Job, JobSpec, Submitted, cancel, ensure_group, get_job, list_jobs, submit
from raibid_gitops.queue.stats import QueueStats, stats

__all__ = ["Job", "JobSpec", "QueueStats", "Submitted", "cancel", "ensure_group", "get_job", "list_jobs",
           "stats", "submit"]
