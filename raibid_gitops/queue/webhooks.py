"""The Gitea push-webhook endpoint: a verified push becomes a queued job.

Gitea signs each delivery with HMAC-SHA256 of the raw body under the webhook's secret and
sends the hex digest in ``X-Gitea-Signature``. A delivery is refused (and nothing queued)
when the signature is missing or wrong, or the body is not a push event we understand.
The comparison is constant-time so the signature cannot be guessed byte by byte.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from raibid_gitops.errors import QueueError, RaibidError, WebhookRejected

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.queue.jobs import JobSpec, Submitted

log = logging.getLogger("raibid.webhooks")

SECRET_ENV = "RAIBID_WEBHOOK_SECRET"
SECRET_FILE_ENV = "RAIBID_WEBHOOK_SECRET_FILE"
SIGNATURE_HEADER = "X-Gitea-Signature"
EVENT_HEADER = "X-Gitea-Event"
#: Push payloads of big pushes can be large, but not this large; refuse before reading.
MAX_BODY = 5 * 1024 * 1024
_ZERO_SHA = re.compile(r"^0+$")


def read_secret(secret_file: str | None = None) -> str:
    path = secret_file or os.environ.get(SECRET_FILE_ENV)
    if path:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise QueueError(f"cannot read the webhook secret file {path}: {exc.strerror}") from None
    else:
        secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise QueueError("no webhook secret: refusing to accept unsigned deliveries",
                         hint=f"set {SECRET_ENV} or --secret-file to the secret configured on the Gitea webhook")
    return secret


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, signature: str | None) -> None:
    if not signature:
        raise WebhookRejected(f"unsigned delivery: no {SIGNATURE_HEADER} header", status=401)
    expected = sign(secret, body)
    # Some proxies prefix the algorithm as GitHub does ("sha256=..."); accept that spelling too.
    given = signature.strip().removeprefix("sha256=").lower()
    if not hmac.compare_digest(expected, given):
        raise WebhookRejected("bad signature: the delivery was not signed with this webhook's secret", status=401)


@dataclass(frozen=True)
class Delivery:
    """What a verified delivery asks for: a job, or nothing (with why)."""

    spec: JobSpec | None
    ignored: str = ""


def parse_push(headers: Mapping[str, str], body: bytes, secret: str) -> Delivery:
    """Verify and parse one delivery; raises :class:`WebhookRejected`."""
    from raibid_gitops.queue.jobs import JobSpec

    verify_signature(secret, body, headers.get(SIGNATURE_HEADER))
    event = headers.get(EVENT_HEADER, "push")
    if event != "push":
        return Delivery(None, f"event {event!r} is not a push")
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("malformed body: not JSON", status=400) from None
    if not isinstance(payload, dict):
        raise WebhookRejected("malformed body: a push payload is a JSON object", status=400)
    ref, after, repo = payload.get("ref"), payload.get("after"), payload.get("repository")
    full_name = repo.get("full_name") if isinstance(repo, dict) else None
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(full_name, str):
        raise WebhookRejected("malformed body: a push needs ref, after and repository.full_name", status=400)
    if _ZERO_SHA.match(after):
        return Delivery(None, f"{ref} was deleted")
    try:
        return Delivery(JobSpec(repo=full_name, ref=ref, commit=after))
    except QueueError as exc:
        raise WebhookRejected(f"malformed body: {exc.message}", status=400) from None


def make_server(host: str, port: int, secret: str, enqueue: Callable[[JobSpec], Submitted]) -> ThreadingHTTPServer:
    """An HTTP server answering POST /hooks/gitea (any path works: Gitea posts to the URL given)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "raibid-webhooks"

        def log_message(self, fmt: str, *args: Any) -> None:  # route through logging, not stderr
            log.debug("%s " + fmt, self.client_address[0], *args)

        def _reply(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._reply(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._reply(411, {"error": "Content-Length required"})
                return
            if length < 0 or length > MAX_BODY:
                self._reply(413, {"error": f"body larger than {MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            try:
                delivery = parse_push(self.headers, body, secret)
            except WebhookRejected as exc:
                log.warning("refused a delivery from %s: %s", self.client_address[0], exc.message)
                self._reply(exc.status, {"error": exc.message})
                return
            if delivery.spec is None:
                self._reply(202, {"ignored": delivery.ignored})
                return
            try:
                submitted = enqueue(delivery.spec)
            except RaibidError as exc:
                log.error("could not queue %s@%s: %s", delivery.spec.repo, delivery.spec.ref, exc.message)
                self._reply(503, {"error": exc.message})
                return
            log.info("queued job %s for %s %s@%s", submitted.job_id, delivery.spec.repo, delivery.spec.ref,
                     delivery.spec.commit[:12])
            self._reply(201, {"job": submitted.job_id})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="webhooks", daemon=True)
    t.start()
    return t
