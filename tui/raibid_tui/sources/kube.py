"""One Kubernetes connection for the TUI's sources, and the translation of the kubernetes
client's exceptions to :mod:`raibid_gitops.errors` (no library exception reaches a widget)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from raibid_gitops.errors import KubeError

#: Longest error body shown to the user; API errors can carry whole objects.
MAX_BODY = 300


def translate(exc: BaseException, what: str, server: str = "") -> KubeError:
    """The raibid error for a kubernetes/urllib3 exception raised while doing ``what``: the
    CLI's one mapping (raibid_gitops.clients.kube), plus the server address when it is
    unreachable, since the TUI shows no command line to read it from."""
    from raibid_gitops.clients.kube import translate as translate_client_error

    err = translate_client_error(exc, what)
    if server and not err.status and "cannot reach" in err.message:
        return KubeError(f"{err.message} (server {server})"[:MAX_BODY * 2], hint=err.hint)
    return err


@contextmanager
def kube_errors(what: str, server: str = "") -> Iterator[None]:
    """Translate any client exception raised inside to a :class:`KubeError`."""
    try:
        yield
    except KubeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the boundary: every client failure is translated
        raise translate(exc, what, server) from exc


class KubeConn:
    """A lazily built ``ApiClient`` for a kubeconfig file and context (in-cluster config
    when neither is given and no kubeconfig exists). Thread-safe to share: urllib3's pool is."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._client: Any = None
        self.server = ""

    def client(self) -> Any:
        if self._client is None:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException

            try:
                try:
                    api = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
                except ConfigException:
                    if self.kubeconfig or self.context:
                        raise
                    cfg = client.Configuration()
                    config.load_incluster_config(client_configuration=cfg)
                    api = client.ApiClient(cfg)
            except (ConfigException, OSError) as exc:
                raise KubeError(f"cannot load the Kubernetes configuration: {exc}",
                                hint="pass --kubeconfig FILE (and --context NAME)") from exc
            self.server = api.configuration.host
            self._client = api
        return self._client

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client())

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.client())

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing on exit must never fail the exit
                pass
