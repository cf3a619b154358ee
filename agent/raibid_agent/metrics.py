"""The agent's Prometheus metrics (its own registry, so tests can run several agents in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Buckets for pickup latency: from a warm agent (ms) to a cold ScaledJob start (KEDA poll +
#: pod start, tens of seconds).
PICKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: CI jobs run from seconds to the job timeout (an hour by default).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.jobs = Counter("raibid_agent_jobs", "Jobs finished by this agent, by outcome.", ["outcome"], registry=r)
        self.pickup = Histogram("raibid_agent_pickup_latency_seconds", "Submit to start of a job.",
                                buckets=PICKUP_BUCKETS, registry=r)
        self.duration = Histogram("raibid_agent_job_duration_seconds", "Start to finish of a job.",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.settings_generation = Gauge("raibid_agent_settings_generation",
                                         "Generation of the settings snapshot in use (1 = first loaded).", registry=r)
        self.settings_rejected = Counter("raibid_agent_settings_rejected",
                                         "Settings versions refused as invalid (the last good one is kept).", registry=r)
        self.dead_letters = Counter("raibid_agent_dead_letters", "Entries this agent moved to the dead-letter stream.",
                                    registry=r)
        self.claimed = Counter("raibid_agent_claimed", "Entries taken over from other agents (XAUTOCLAIM).",
                               registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
