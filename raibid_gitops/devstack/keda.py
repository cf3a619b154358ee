"""The KEDA operator as a host process against the stack's API server, and the cluster DNS it
needs to reach what the rendered trigger names.

In a cluster KEDA resolves ``raibid-redis.<namespace>.svc.cluster.local`` through CoreDNS. Here
it runs on the host, where no such name exists; loosening ``queue.redisAddress`` validation so
that tests can render ``127.0.0.1:PORT`` would test something users never run. Instead the stack
gives KEDA a cluster DNS of its own: KEDA runs in a private mount namespace (``unshare``) in which
``/etc/hosts`` is a file of the stack's (:class:`ClusterHosts`). A test that backs a Service with
a real host process (Redis) maps the Service's DNS name to that process's loopback address; the
rendered manifests stay exactly what production gets.

Go's resolver re-reads /etc/hosts when its modification time changes (checked at most every
5 s), so a name added while KEDA runs is seen within seconds; add names before applying the
objects that use them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from raibid_gitops.devstack.processes import (
    DEFAULT_TIMEOUT,
    KubeStack,
    Process,
    StackError,
    StackStartFailed,
    _http_get,
    _run,
    _stop_on_failure,
    binary,
    free_port,
    wait_until,
)

#: Where KEDA keeps its cluster-wide objects and looks for its own Secrets.
KEDA_NAMESPACE = "keda"
#: The operator's name in a real install (Deployment keda-operator in namespace keda).
OPERATOR_NAME = "keda-operator"


class ClusterHosts:
    """A hosts file standing in for cluster DNS: the base entries of /etc/hosts plus names the
    stack maps. Rewritten in place (same inode), so a bind mount of it stays current."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        try:
            self._base = Path("/etc/hosts").read_text()
        except OSError:
            self._base = "127.0.0.1 localhost\n"
        self._write()

    def add(self, name: str, address: str) -> None:
        """Resolve ``name`` to ``address`` (a loopback address) for processes of the stack."""
        if not address.startswith("127."):
            raise StackError(f"the stack maps names to loopback addresses only, not {address[:40]!r}")
        with self._lock:
            self._names[name] = address
            self._write()

    def remove(self, name: str) -> None:
        with self._lock:
            if self._names.pop(name, None) is not None:
                self._write()

    def _write(self) -> None:
        lines = [self._base.rstrip("\n"), "# raibid devstack: Services backed by host processes"]
        lines += [f"{addr}\t{name}" for name, addr in sorted(self._names.items())]
        data = ("\n".join(lines) + "\n").encode()
        # In place, not write-and-rename: the bind mount holds the inode.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, data)
        finally:
            os.close(fd)


#: KEDA's /etc/resolv.conf: a name server on loopback where none listens, so a name missing
#: from the hosts file fails at once, as CoreDNS answers NXDOMAIN for an unknown Service. With
#: the host's resolv.conf each lookup would wait for servers this sandbox cannot reach, and
#: KEDA's reconciles would queue behind those timeouts.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"


def _unshare_prefix(hosts: Path, resolv: Path) -> list[str]:
    """The command prefix that runs a program with ``hosts`` as its /etc/hosts and ``resolv``
    as its /etc/resolv.conf.

    As root a mount namespace is enough; otherwise an unprivileged user namespace maps the
    user to root inside it (most Linux kernels allow that)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise StackStartFailed("`unshare` (util-linux) is not installed; the stack runs KEDA with its own hosts file",
                               hint="apt-get install util-linux")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    prefix = [unshare, *user, "--mount", "--propagation", "private", "--",
              "sh", "-c", 'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"',
              str(hosts), str(resolv)]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise StackStartFailed(
            "cannot give KEDA a hosts file of its own: `unshare --mount` failed: " + probe.stderr.strip()[-400:],
            hint="run as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)",
        )
    return prefix


def _write_certs(cert_dir: Path) -> None:
    """ca.crt, tls.crt and tls.key for the operator's gRPC metrics service (self-signed)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
          "-subj", "/CN=keda-operator.keda.svc", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
          "-keyout", cert_dir / "tls.key", "-out", cert_dir / "tls.crt"], what="openssl: KEDA's certificate")
    shutil.copy(cert_dir / "tls.crt", cert_dir / "ca.crt")


@dataclass(frozen=True)
class KedaOperator:
    """keda-operator on the host; ``hosts`` is the cluster DNS it resolves names with."""

    hosts: ClusterHosts
    metrics_url: str
    workdir: Path
    processes: tuple[Process, ...] = field(repr=False)

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop()

    def log_text(self) -> str:
        try:
            return self.processes[0].log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_keda(kube: KubeStack, workdir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> KedaOperator:
    """Start the KEDA operator against ``kube`` (whose KEDA CRDs are applied) and wait for /readyz."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    keda_bin = binary("keda-operator")
    hosts = ClusterHosts(workdir / "hosts")
    resolv = workdir / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    prefix = _unshare_prefix(hosts.path, resolv)
    _write_certs(workdir / "certs")
    kube.kubectl("create", "namespace", KEDA_NAMESPACE)
    health = f"127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    env = {
        **kube.env(),
        # Every namespace, as the release manifests install it.
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": KEDA_NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        "OPERATOR_NAME": OPERATOR_NAME,
    }
    started: list[Process] = []
    with _stop_on_failure(started):
        started.append(Process.start("keda-operator", [
            *prefix, keda_bin,
            "--leader-elect=false",
            "--metrics-bind-address", metrics,
            "--health-probe-bind-address", health,
            "--metrics-service-bind-address", f"127.0.0.1:{free_port()}",
            "--cert-dir", workdir / "certs",
            "--enable-cert-rotation=false",
            # Nothing to patch: no admission webhook and no metrics APIService here (ScaledJobs
            # need neither: the operator creates the Jobs itself).
            "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
            "--zap-encoder=console", "--zap-log-level=info",
        ], logs=logs, env=env, cwd=workdir))
        wait_until("keda-operator /readyz", lambda: _http_get(f"http://{health}/readyz")[0] == 200,
                   watch=started, timeout=timeout)
        return KedaOperator(hosts=hosts, metrics_url=f"http://{metrics}/metrics", workdir=workdir,
                            processes=tuple(started))
