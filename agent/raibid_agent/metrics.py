"""The agent's Prometheus metrics (its own registry, so tests can run several agents in one
process) and its readiness endpoint, served on the same port.

``/readyz`` answers 200 once the agent has made its first read of the job stream: from then
on, the stream's lag no longer counts the job this agent is about to take. The ScaledJob's
readinessProbe asks it, and ``scalingStrategy.pendingPodConditions: [Ready]`` makes KEDA count
an agent Job as pending until then, so a job queued while its agent is still starting does
not wake a second agent. Any other path is the metrics page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

READY_PATH = "/readyz"

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
                                         "Settings versions refused as invalid (the last good one is kept).",
                                         registry=r)
        self.dead_letters = Counter("raibid_agent_dead_letters", "Entries this agent moved to the dead-letter stream.",
                                    registry=r)
        self.claimed = Counter("raibid_agent_claimed", "Entries taken over from other agents (XAUTOCLAIM).",
                               registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0", ready: Callable[[], bool] = lambda: True) -> WSGIServer:
        """Metrics and ``/readyz`` on ``addr:port`` in a daemon thread; the server, for shutdown()."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == READY_PATH:
                ok = ready()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [b"ready\n" if ok else b"not reading the job stream yet\n"]
            return metrics_app(environ, start_response)

        server = make_server(addr, port, app, server_class=_Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _Server(ThreadingMixIn, WSGIServer):
    # One thread per request, none outliving the process: a stalled scraper cannot block the
    # kubelet's probe, and shutdown never waits on a client.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    # A probe every two seconds would otherwise fill the agent's log.
    def log_message(self, format: str, *args: Any) -> None:
        pass
