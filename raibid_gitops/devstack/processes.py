"""Start and stop the real local stack on loopback: etcd + kube-apiserver (with, in
``cluster.py``, the controller-manager, scheduler and KWOK nodes), the Flux notification-,
source- and kustomize-controllers, and Gitea; the KEDA operator is in ``keda.py``.

Each starter runs its programs as child processes on free 127.0.0.1 ports, writes their
output to ``<workdir>/logs/<name>.log``, waits until they answer, and returns a frozen
dataclass describing the endpoints. A starter that fails stops what it started and raises
:class:`StackStartFailed` with the tail of every log. ``stop()`` stops only what was started.

Used by the pytest fixtures (``tests/fixtures_stack.py``) and by ``raibid-devstack up``.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from raibid_gitops.devstack import versions
from raibid_gitops.errors import RaibidError

#: Readiness timeout. Generous on purpose: on a 2-core machine shared with Go builds,
#: kube-apiserver alone takes 20-40 s to report /readyz.
DEFAULT_TIMEOUT = float(os.environ.get("RAIBID_STACK_TIMEOUT", "180"))

#: Lines of a process log shown in an error.
LOG_TAIL_LINES = 40


class StackError(RaibidError):
    """The local development stack could not be started or used."""


class StackNotBuilt(StackError):
    """A binary of the stack is missing from the build cache."""


class StackStartFailed(StackError):
    """A stack process exited early or did not become ready in time."""


# --- ports and processes ------------------------------------------------------------------

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by this process.

    The kernel picks it (port 0), so defaults such as :8080 or :9440 are never used. Another
    program could take it before our child binds it; remembering what we handed out at least
    keeps two of our own children from getting the same one.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux prctl), so a
    killed pytest or ``raibid-devstack up`` does not leave servers running."""
    try:
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def binary(name: str) -> Path:
    """Path of a built stack binary; raises StackNotBuilt when it is missing."""
    path = versions.bin_dir() / name
    if not path.exists():
        raise StackNotBuilt(
            f"stack not built: {name} is missing from {versions.bin_dir()}",
            hint="run `raibid-devstack build` (about 15 min cold on 2 cores)",
        )
    return path


@dataclass(frozen=True)
class Process:
    """One running child process with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str | os.PathLike[str]], *, logs: Path,
        env: dict[str, str] | None = None, cwd: Path | None = None,
    ) -> Process:
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with open(log_path, "ab") as out:
            out.write(f"$ {' '.join(map(str, argv))}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                # Own session: Ctrl-C in `raibid-devstack up` reaches only the Python
                # parent, which then stops the children in order.
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.popen.poll()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Safe to call twice."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def describe_logs(processes: Iterable[Process]) -> str:
    """The tail of each process's log, for an error message."""
    parts = []
    for p in processes:
        code = p.exited()
        state = "running" if code is None else f"exited with {code}"
        parts.append(f"--- {p.name} ({state}), log {p.log_path} ---\n{p.log_tail()}")
    return "\n".join(parts)


def stop_all(processes: Iterable[Process]) -> None:
    """Stop in reverse start order: clients before the servers they talk to."""
    for p in reversed(list(processes)):
        p.stop()


@contextmanager
def _stop_on_failure(started: list[Process]) -> Iterator[None]:
    """Around a starter: on any failure stop what was started; a stack error gets every
    started process's log tail appended, because the cause is usually only in a log."""
    try:
        yield
    except StackError as exc:
        logs = describe_logs(started)
        stop_all(started)
        raise StackStartFailed(f"{exc.message}\n{logs}" if logs else exc.message,
                               hint=exc.hint) from exc
    except BaseException:
        stop_all(started)
        raise


def wait_until(
    what: str, check: Callable[[], bool], *, watch: Sequence[Process],
    timeout: float = DEFAULT_TIMEOUT, interval: float = 0.5,
) -> None:
    """Poll ``check`` until it returns True. Fails early when a watched process exits, and
    on timeout, saying which check and the last error it saw."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - any failure just means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"
        dead = [p for p in watch if p.exited() is not None]
        if dead:
            raise StackStartFailed(f"{dead[0].name} exited with {dead[0].exited()} while waiting for {what}")
        if time.monotonic() > deadline:
            raise StackStartFailed(f"{what} not ready after {timeout:.0f}s (last check: {last or 'not ready'})")
        time.sleep(interval)


def _http_get(url: str, *, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
              timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_ok(url: str, *, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` answers 200: a readiness check for :func:`wait_until`."""
    return _http_get(url, context=context)[0] == 200


def _run(argv: Sequence[str | os.PathLike[str]], *, what: str, env: dict[str, str] | None = None,
         input: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run a one-shot command; a failure raises StackStartFailed with its output."""
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                              input=input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise StackStartFailed(f"{what}: timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise StackStartFailed(
            f"{what}: `{' '.join(map(str, argv[:4]))} ...` failed with {proc.returncode}\n"
            + (proc.stdout + proc.stderr).strip()[-3000:]
        )
    return proc.stdout


# --- kube-apiserver + etcd ------------------------------------------------------------------


@dataclass(frozen=True)
class KubeStack:
    """etcd + kube-apiserver as envtest runs them and, unless started with ``nodes=0``,
    kube-controller-manager, kube-scheduler and KWOK nodes (no kubelet: nothing runs in a Pod)."""

    server: str
    token: str
    kubeconfig: Path
    ca_file: Path
    etcd_url: str
    workdir: Path
    processes: tuple[Process, ...] = field(repr=False)

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG for this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        return _run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                    what="kubectl " + " ".join(args[:2]), input=input, timeout=timeout)

    def readyz(self) -> int:
        """HTTP status of /readyz (200 when ready)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        status, _ = _http_get(self.server + "/readyz", context=ctx,
                              headers={"Authorization": f"Bearer {self.token}"})
        return status

    def stop(self) -> None:
        stop_all(self.processes)


def _write_service_account_key(path: Path) -> None:
    """An RSA key that signs and verifies service-account tokens. kube-apiserver refuses to
    start without one, even though nothing here uses service-account tokens."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        _run(["openssl", "genrsa", "-out", str(path), "2048"], what="generate service-account key")
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))


def _kubeconfig(server: str, ca_file: Path, token: str) -> str:
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    # JSON is valid YAML; avoids depending on a YAML writer here.
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "raibid-devstack",
        "clusters": [{"name": "raibid-devstack",
                      "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "raibid-devstack",
                      "context": {"cluster": "raibid-devstack", "user": "admin"}}],
    }, indent=2) + "\n"


def start_kube(workdir: Path, *, timeout: float = DEFAULT_TIMEOUT, nodes: int = 1) -> KubeStack:
    """Start etcd and kube-apiserver, apply the Flux, KEDA and KWOK CRDs, create flux-system;
    then, unless ``nodes`` is 0, kube-controller-manager, kube-scheduler, KWOK and that many
    DGX Spark nodes (``dgx-spark-1`` ...) and a default StorageClass.

    ``nodes=0`` is a bare API server, for tests that write controller-owned status themselves.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    etcd_bin, apiserver_bin = binary("etcd"), binary("kube-apiserver")
    crds = versions.crd_dir()
    if not (crds / ".complete").exists():
        raise StackNotBuilt(f"stack not built: CRDs missing from {crds}",
                            hint="run `raibid-devstack build`")
    started: list[Process] = []
    with _stop_on_failure(started):
        client_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        started.append(Process.start("etcd", [
            etcd_bin, "--name", "devstack", "--data-dir", workdir / "etcd",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"devstack=http://127.0.0.1:{peer_port}",
            # Test data is thrown away: skipping fsync makes every write much faster.
            "--unsafe-no-fsync", "--log-level", "warn",
        ], logs=logs))
        wait_until("etcd /health", lambda: _http_get(etcd_url + "/health")[0] == 200,
                   watch=started, timeout=timeout)

        token = secrets.token_urlsafe(24)
        auth = workdir / "kube"
        auth.mkdir(exist_ok=True)
        (auth / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        sa_key = auth / "sa.key"
        _write_service_account_key(sa_key)
        port = free_port()
        server = f"https://127.0.0.1:{port}"
        cert_dir = auth / "certs"
        started.append(Process.start("kube-apiserver", [
            apiserver_bin,
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(port),
            # The apiserver writes a self-signed serving cert (for 127.0.0.1) and its CA here.
            "--cert-dir", cert_dir,
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--authorization-mode", "RBAC",
            "--token-auth-file", auth / "tokens.csv",
            "--service-account-issuer", server,
            "--service-account-key-file", sa_key,
            "--service-account-signing-key-file", sa_key,
            "--allow-privileged=true",
            # Pods are admitted without a token mount: nothing in them runs (KWOK), and a bare
            # API server (nodes=0) has no controller-manager to create service accounts.
            "--disable-admission-plugins", "ServiceAccount",
            # Nothing here reads the `kubernetes` Service endpoints; the reconciler would only
            # write a loopback address into them.
            "--endpoint-reconciler-type", "none",
            "--profiling=false",
        ], logs=logs))
        ca_file = cert_dir / "apiserver.crt"
        kubeconfig = workdir / "kubeconfig"

        def ready() -> bool:
            if not ca_file.exists():
                return False
            ctx = ssl.create_default_context(cafile=str(ca_file))
            return _http_get(server + "/readyz", context=ctx,
                             headers={"Authorization": f"Bearer {token}"})[0] == 200

        wait_until("kube-apiserver /readyz", ready, watch=started, timeout=timeout)
        kubeconfig.write_text(_kubeconfig(server, ca_file, token))
        kubeconfig.chmod(0o600)
        kube = KubeStack(server=server, token=token, kubeconfig=kubeconfig, ca_file=ca_file,
                         etcd_url=etcd_url, workdir=workdir, processes=tuple(started))
        # Server-side apply: the KEDA CRDs are too big for the client-side last-applied annotation.
        kube.kubectl("apply", "--server-side", "-f", str(crds))
        # Poll rather than `kubectl wait --all`: a CRD that has no conditions yet makes that
        # command fail at once ("conditions accessor error") instead of waiting.
        def all_established() -> bool:
            items = json.loads(kube.kubectl("get", "crd", "-o", "json"))["items"]
            return bool(items) and all(
                any(c.get("type") == "Established" and c.get("status") == "True"
                    for c in (i.get("status") or {}).get("conditions") or [])
                for i in items
            )

        wait_until("CRDs Established", all_established, watch=started, timeout=timeout)
        kube.kubectl("create", "namespace", "flux-system")
        if nodes:
            from raibid_gitops.devstack import cluster

            started.extend(cluster.start_control_plane(kube, timeout=timeout))
            started.append(cluster.start_kwok(kube, timeout=timeout))
            kube = replace(kube, processes=tuple(started))
            for i in range(1, nodes + 1):
                cluster.add_node(kube, f"dgx-spark-{i}", timeout=timeout)
            cluster.ensure_storage_class(kube)
        return replace(kube, processes=tuple(started))


# --- Flux controllers -----------------------------------------------------------------------


@dataclass(frozen=True)
class FluxControllers:
    """notification-, source- and kustomize-controller as host processes against ``kube``."""

    storage_url: str
    #: Where the notification-controller serves Receivers (path: a Receiver's status.webhookPath).
    receiver_url: str
    #: Where the other controllers post their events (and the notification-controller reads them).
    events_url: str
    workdir: Path
    processes: tuple[Process, ...] = field(repr=False)

    def stop(self) -> None:
        stop_all(self.processes)


def start_flux(kube: KubeStack, workdir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> FluxControllers:
    """Start the notification-controller, then source- and kustomize-controller posting their
    events to it; wait for each health endpoint."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    source_bin, kustomize_bin = binary("source-controller"), binary("kustomize-controller")
    notification_bin = binary("notification-controller")
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "RUNTIME_NAMESPACE": "flux-system"}
    common = [
        "--enable-leader-election=false",
        "--log-encoding=console", "--log-level=info",
        "--watch-all-namespaces=true",
    ]
    started: list[Process] = []
    with _stop_on_failure(started):
        storage_port = free_port()
        # source-controller refuses a storage path that does not exist yet.
        (workdir / "artifacts").mkdir(exist_ok=True)
        storage = f"127.0.0.1:{storage_port}"
        events = f"http://127.0.0.1:{free_port()}"
        receiver = f"127.0.0.1:{free_port()}"
        health: list[tuple[Process, str]] = []
        for name, exe, extra in (
            # First: the others post their events to it, and an event posted before it listens
            # is dropped (no Alert would fire for the first reconcile).
            ("notification-controller", notification_bin, [
                "--events-addr", events.removeprefix("http://"),
                "--receiverAddr", receiver,
                # Flux's default (5m) drops an identical event for five minutes; tests push the
                # same kind of change several times within that.
                "--rate-limit-interval", "1s",
            ]),
            ("source-controller", source_bin, [
                "--storage-path", str(workdir / "artifacts"),
                "--storage-addr", storage,
                # Left empty, artifact URLs would use the hostname, which may not be loopback.
                "--storage-adv-addr", storage,
                "--events-addr", events,
                # A Kustomization waiting on its GitRepository retries after this (default
                # 30s); tests want the first artifact picked up quickly.
                "--requeue-dependency=2s",
            ]),
            ("kustomize-controller", kustomize_bin, [
                "--no-remote-bases=true", "--events-addr", events, "--requeue-dependency=2s",
            ]),
        ):
            health_addr = f"127.0.0.1:{free_port()}"
            proc = Process.start(name, [
                exe, *common, *extra,
                "--metrics-addr", f"127.0.0.1:{free_port()}",
                "--health-addr", health_addr,
            ], logs=logs, env=env, cwd=workdir)
            started.append(proc)
            health.append((proc, health_addr))
            if name == "notification-controller":
                wait_until(f"{name} /readyz", partial(_http_ok, f"http://{health_addr}/readyz"),
                           watch=started, timeout=timeout)
        for proc, addr in health[1:]:
            wait_until(f"{proc.name} /readyz", partial(_http_ok, f"http://{addr}/readyz"),
                       watch=started, timeout=timeout)
        return FluxControllers(storage_url=f"http://{storage}", receiver_url=f"http://{receiver}",
                               events_url=events, workdir=workdir, processes=tuple(started))


# --- Gitea --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GiteaServer:
    """A Gitea with an admin user, its API token, and an organisation."""

    url: str
    admin_user: str
    admin_password: str
    token: str = field(repr=False)
    org: str
    workdir: Path
    processes: tuple[Process, ...] = field(repr=False)

    def api(self, method: str, path: str, body: object | None = None,
            expect: tuple[int, ...] = (200, 201, 204)) -> object:
        """Call the Gitea API as the admin; returns the decoded JSON (or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + "/api/v1" + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        if status not in expect:
            raise StackError(f"Gitea {method} {path} answered {status}: {raw[:500]!r}")
        return json.loads(raw) if raw.strip() else None

    def git_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for `git` that authenticates HTTP requests to this Gitea as the admin.

        The header goes in through GIT_CONFIG_* variables: not in a URL (URLs end up in logs
        and .git/config) and not in argv (visible in `ps`). Scoped to this Gitea's URL.
        """
        basic = base64.b64encode(f"{self.admin_user}:{self.token}".encode()).decode()
        env = dict(os.environ if base is None else base)
        n = int(env.get("GIT_CONFIG_COUNT", "0"))
        env.update({
            "GIT_CONFIG_COUNT": str(n + 1),
            f"GIT_CONFIG_KEY_{n}": f"http.{self.url}/.extraHeader",
            f"GIT_CONFIG_VALUE_{n}": f"Authorization: Basic {basic}",
            "GIT_TERMINAL_PROMPT": "0",
        })
        return env

    def stop(self) -> None:
        stop_all(self.processes)


def create_repo(gitea: GiteaServer, name: str, *, owner: str | None = None) -> str:
    """Create an empty repository in the organisation; returns its HTTP clone URL."""
    owner = owner or gitea.org
    repo = gitea.api("POST", f"/orgs/{owner}/repos",
                     {"name": name, "private": True, "auto_init": False, "default_branch": "main"})
    assert isinstance(repo, dict)
    return str(repo["clone_url"])


def delete_repo(gitea: GiteaServer, name: str, *, owner: str | None = None) -> None:
    gitea.api("DELETE", f"/repos/{owner or gitea.org}/{name}", expect=(204, 404))


def _gitea_ini(workdir: Path, port: int) -> str:
    # Secrets are random per stack; Gitea would otherwise write generated ones into app.ini.
    return f"""\
APP_NAME = raibid devstack
RUN_MODE = prod
RUN_USER = {os.environ.get("USER") or _current_user()}
WORK_PATH = {workdir}
; Gitea refuses to run as root without this; the machines here run everything as root.
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:{port}/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
APP_DATA_PATH = {workdir}/data
; Compiled web assets are not built; the API needs only options/ and templates/.
STATIC_ROOT_PATH = {versions.gitea_static_dir()}

[database]
DB_TYPE = sqlite3
PATH = {workdir}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {workdir}/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_urlsafe(32)}
INTERNAL_TOKEN = {secrets.token_urlsafe(64)}
; The default (argon2) costs ~64 MiB and noticeable CPU per login on a 2-core machine.
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
JWT_SECRET = {base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")}

[service]
DISABLE_REGISTRATION = true

[mailer]
ENABLED = false

[webhook]
; Receivers and test listeners live on 127.0.0.1.
ALLOWED_HOST_LIST = loopback

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[indexer]
ISSUE_INDEXER_TYPE = db

[actions]
ENABLED = false

[packages]
ENABLED = false

[cron.update_checker]
; Would call out to the internet.
ENABLED = false

[log]
MODE = console
LEVEL = Warn
ROOT_PATH = {workdir}/log
"""


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def start_gitea(workdir: Path, *, timeout: float = DEFAULT_TIMEOUT, org: str = "raibid") -> GiteaServer:
    """Start Gitea with an admin user, a token (made with its own CLI) and an organisation."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    gitea_bin = binary("gitea")
    static = versions.gitea_static_dir()
    if not (static / ".complete").exists():
        raise StackNotBuilt(f"stack not built: Gitea static files missing from {static}",
                            hint="run `raibid-devstack build`")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ini = workdir / "app.ini"
    ini.write_text(_gitea_ini(workdir, port))
    # Gitea runs git, which reads $HOME/.gitconfig; keep the user's out of the way.
    env = {**os.environ, "GITEA_WORK_DIR": str(workdir), "HOME": str(workdir / "home")}
    cli: list[str | Path] = [gitea_bin, "--config", ini, "--work-path", workdir]
    user, password = "raibid-admin", secrets.token_urlsafe(16)

    _run([*cli, "migrate"], what="gitea migrate", env=env)
    _run([*cli, "admin", "user", "create", "--admin", "--username", user, "--password", password,
          "--email", f"{user}@example.invalid", "--must-change-password=false"],
         what="gitea admin user create", env=env)
    token = _run([*cli, "admin", "user", "generate-access-token", "--username", user,
                  "--token-name", "devstack", "--scopes", "all", "--raw"],
                 what="gitea admin user generate-access-token", env=env).strip().splitlines()[-1]

    started: list[Process] = []
    with _stop_on_failure(started):
        started.append(Process.start("gitea", [*cli, "web"], logs=logs, env=env, cwd=workdir))
        wait_until("gitea /api/v1/version",
                   lambda: _http_get(url + "/api/v1/version")[0] == 200,
                   watch=started, timeout=timeout)
        gitea = GiteaServer(url=url, admin_user=user, admin_password=password, token=token,
                            org=org, workdir=workdir, processes=tuple(started))
        gitea.api("POST", "/orgs", {"username": org, "visibility": "private"})
        return gitea

