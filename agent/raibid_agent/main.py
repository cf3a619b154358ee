"""`raibid-agent`: the CI agent.

In the ScaledJob (``--once``): take one job, run it, exit 0 (also when no job comes within
``agents.idleTimeoutSeconds``). Long-lived (default): work until SIGTERM, then drain: finish
the running job within its timeout, take no new one, exit 0.

Exit codes: 0 done; 2 cannot start (no valid settings, bad options); 3 Redis unreachable
for longer than the idle timeout (``--once``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

from raibid_gitops import contract

log = logging.getLogger("raibid.agent")

DEFAULT_SETTINGS_DIR_ENV = "RAIBID_SETTINGS_DIR"
#: Where the pod template mounts the Secrets (see base/ agent ScaledJob).
DEFAULT_REDIS_PASSWORD_FILE = "/var/run/secrets/raibid/redis/password"
DEFAULT_GITEA_TOKEN_FILE = "/var/run/secrets/raibid/gitea/token"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raibid-agent",
                                description="raibid-ci agent: runs CI jobs from the Redis job stream.")
    p.add_argument("--once", action="store_true", help="take one job, run it and exit (the ScaledJob mode)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--settings-dir", default=os.environ.get(DEFAULT_SETTINGS_DIR_ENV),
                     help=f"the mounted {contract.SETTINGS_CONFIGMAP} ConfigMap directory "
                          f"(env {DEFAULT_SETTINGS_DIR_ENV})")
    src.add_argument("--settings-configmap", metavar="NAME", nargs="?", const=contract.SETTINGS_CONFIGMAP,
                     help=f"watch the ConfigMap through the API (default name {contract.SETTINGS_CONFIGMAP})")
    p.add_argument("-n", "--namespace", default=os.environ.get("POD_NAMESPACE", "raibid-ci"),
                   help="namespace of the ConfigMap (env POD_NAMESPACE)")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig for --settings-configmap (default: $KUBECONFIG, then ~/.kube/config, "
                        "then the in-cluster service account: as the raibid CLI)")
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    p.add_argument("--redis-url", default=os.environ.get("RAIBID_REDIS_URL"),
                   help="override queue.redisAddress, e.g. redis://127.0.0.1:6379/0 (no password in it)")
    p.add_argument("--redis-password-file", default=None,
                   help=f"file with Redis's password (default {DEFAULT_REDIS_PASSWORD_FILE} if present, "
                        "else env RAIBID_REDIS_PASSWORD)")
    p.add_argument("--gitea-token-file", default=os.environ.get("RAIBID_GITEA_TOKEN_FILE", DEFAULT_GITEA_TOKEN_FILE),
                   help="file with the Gitea clone token (env RAIBID_GITEA_TOKEN_FILE)")
    p.add_argument("--git-base-url", default=None,
                   help="clone from here instead of gitea.url (e.g. file:///srv/git for local runs)")
    p.add_argument("--agent-id", default=os.environ.get("RAIBID_AGENT_ID"),
                   help="consumer name and heartbeat id (default: hostname-pid)")
    p.add_argument("--workdir", default=os.environ.get("RAIBID_WORKDIR"),
                   help="where job checkouts go (env RAIBID_WORKDIR; default: the temp dir)")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("RAIBID_METRICS_PORT", "0")),
                   help="serve Prometheus metrics and the readiness check /readyz on this port (0: off; "
                        "env RAIBID_METRICS_PORT)")
    p.add_argument("--metrics-addr", default=os.environ.get("RAIBID_METRICS_ADDR", "0.0.0.0"),
                   help="address for --metrics-port (env RAIBID_METRICS_ADDR; default all interfaces, as the "
                        "kubelet's probe and Prometheus reach the Pod's IP)")
    p.add_argument("--log-level", default=os.environ.get("RAIBID_LOG_LEVEL", "INFO"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raibid_gitops.errors import RaibidError

    try:
        return run(args)
    except RaibidError as exc:
        log.error("%s", exc)
        return exc.exit_code


def run(args: argparse.Namespace) -> int:
    from raibid_agent.metrics import Metrics
    from raibid_agent.runner import Runner
    from raibid_agent.settings_source import ConfigMapSource, MountedDirSource, Rejection, SettingsHolder, Snapshot
    from raibid_agent.worker import Worker
    from raibid_gitops.clients.redis import connect, read_password
    from raibid_gitops.errors import AgentError

    # Checked before anything else: an agent that cannot make a checkout would take a job
    # only to fail it (and the next, and the next); refusing to start keeps the jobs queued.
    workroot = check_workdir(args.workdir)
    holder = SettingsHolder()
    metrics = Metrics()

    def on_settings(snap: Snapshot | None, rej: Rejection | None) -> None:
        if snap is not None:
            metrics.settings_generation.set(snap.generation)
        if rej is not None:
            metrics.settings_rejected.inc()

    holder.on_change(on_settings)
    source: MountedDirSource | ConfigMapSource
    if args.settings_configmap:
        source = ConfigMapSource(holder, namespace=args.namespace, name=args.settings_configmap,
                                 kubeconfig=args.kubeconfig, context=args.context)
    elif args.settings_dir:
        from pathlib import Path

        source = MountedDirSource(Path(args.settings_dir), holder)
    else:
        raise AgentError("no settings source", hint="give --settings-dir DIR or --settings-configmap [NAME]")
    snap = source.load_initial()
    source.start()

    pw_file = args.redis_password_file
    if pw_file is None and os.path.exists(DEFAULT_REDIS_PASSWORD_FILE):
        pw_file = DEFAULT_REDIS_PASSWORD_FILE
    password = read_password(pw_file)
    # The Redis address is read once: moving Redis is a restart of the pool, not a hot reload.
    client = connect(args.redis_url, settings=snap.settings, password=password)
    agent_id = args.agent_id or f"{socket.gethostname()}-{os.getpid()}"
    runner = Runner(token_file=args.gitea_token_file, git_base_url=args.git_base_url, workroot=workroot)
    worker = Worker(client, holder, agent_id, runner, metrics, once=args.once)
    if args.metrics_port:
        metrics.serve(args.metrics_port, addr=args.metrics_addr, ready=worker.reading.is_set)

    def on_term(signum: int, _frame: object) -> None:
        worker.drain()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info("agent %s up (settings %s, %s)", agent_id, snap.hash, "once" if args.once else "long-lived")
    try:
        return worker.run()
    finally:
        source.stop()


def check_workdir(workdir: str | None) -> str | None:
    """``--workdir`` must be an existing directory the agent can create checkouts in."""
    import tempfile

    from raibid_gitops.errors import AgentError

    if workdir is None:
        return None
    if not os.path.isdir(workdir):
        raise AgentError(f"--workdir {workdir} is not a directory" if os.path.exists(workdir)
                         else f"--workdir {workdir} does not exist",
                         hint="create it (or mount an emptyDir there), or leave --workdir out to use the temp dir")
    try:
        probe = tempfile.mkdtemp(prefix=".raibid-probe-", dir=workdir)
        os.rmdir(probe)
    except OSError as exc:
        raise AgentError(f"cannot create checkouts in --workdir {workdir}: {exc.strerror or exc}",
                         hint="give the agent a writable directory") from exc
    return workdir


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
