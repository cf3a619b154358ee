"""The Gitea push-webhook endpoint: a verified push becomes a queued job.

Gitea signs each delivery with HMAC-SHA256 of the raw body under the webhook's secret and
sends the hex digest in ``X-Gitea-Signature``. A delivery is refused (and nothing queued)
when the signature is missing or wrong, or the body is not a push event we understand.
The comparison is constant-time so the signature cannot be guessed byte by byte.

The endpoint faces a network, so the server is built to be cheap to attack: an asyncio loop
holds idle or slow connections at the cost of a socket each (no thread per connection), h11
parses HTTP (request line, headers, Content-Length, chunked bodies) and refuses malformed or
oversized input, and :class:`Limits` bounds everything else — the time a whole request may
take to arrive (a client trickling one byte a second is cut off too), header and body size,
open connections (more are answered 503 at once), and the deliveries waiting for the small
thread pool that talks to Redis. One request per connection (``Connection: close``): nothing
to keep alive, nothing to hold a connection open between requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops import names
from raibid_gitops.errors import QueueError, RaibidError, WebhookRejected, shown

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.queue.jobs import JobSpec, Submitted

log = logging.getLogger("raibid.webhooks")

SECRET_ENV = "RAIBID_WEBHOOK_SECRET"
SECRET_FILE_ENV = "RAIBID_WEBHOOK_SECRET_FILE"
SIGNATURE_HEADER = "X-Gitea-Signature"
EVENT_HEADER = "X-Gitea-Event"
#: Push payloads of big pushes can be large, but not this large; refuse before reading.
MAX_BODY = 5 * 1024 * 1024
_ZERO_SHA = re.compile(r"0+")
#: Where the server listens unless told otherwise: only this machine. Exposing it (to Gitea
#: in the cluster) is a decision: ``--listen 0.0.0.0:8080`` behind a Service / NetworkPolicy.
DEFAULT_LISTEN = "127.0.0.1:8080"


@dataclass(frozen=True)
class Limits:
    """What one client may cost the server. Defaults fit Gitea on the same cluster."""

    #: Request line and headers together. Gitea sends well under 2 KiB of headers.
    header_bytes: int = 16 * 1024
    #: A delivery's body (Content-Length, or the sum of its chunks).
    body_bytes: int = MAX_BODY
    #: The whole request (headers and body) must arrive within this, however steadily the
    #: client trickles: bounds how long one connection can be held. 5 MiB in 10 s is 0.5 MB/s,
    #: far below what Gitea on the same network sends.
    request_seconds: float = 10.0
    #: Open connections at once; one more is answered 503 and closed without being read.
    connections: int = 256
    #: Threads submitting verified deliveries to Redis (each a few ms).
    workers: int = 4
    #: Verified deliveries waiting for a worker; one more is answered 503 (Gitea retries).
    pending: int = 64


def read_secret(secret_file: str | None = None) -> str:
    path = secret_file or os.environ.get(SECRET_FILE_ENV)
    if path:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise QueueError(f"cannot read the webhook secret file {path}: {exc.strerror}") from exc
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
        return Delivery(None, f"event {shown(event)} is not a push")
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise WebhookRejected("malformed body: not JSON", status=400) from exc
    if not isinstance(payload, dict):
        raise WebhookRejected("malformed body: a push payload is a JSON object", status=400)
    ref, after, repo = payload.get("ref"), payload.get("after"), payload.get("repository")
    full_name = repo.get("full_name") if isinstance(repo, dict) else None
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(full_name, str):
        raise WebhookRejected("malformed body: a push needs ref, after and repository.full_name", status=400)
    if _ZERO_SHA.fullmatch(after):
        return Delivery(None, f"{shown(ref)} was deleted")
    # Gitea always sends the full commit id of the new head: an empty or short one would queue
    # a build of whatever the ref points at when an agent gets to it.
    problem = names.commit_problem(after.lower(), full=True)
    if problem:
        raise WebhookRejected(f"malformed body: after: {problem}", status=400)
    try:
        return Delivery(JobSpec(repo=full_name, ref=ref, commit=after))
    except QueueError as exc:
        raise WebhookRejected(f"malformed body: {exc.message}", status=400) from exc


#: After refusing a request: how long, and how much of the rest, is read before closing.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
            413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _response(status: int, data: dict[str, Any]) -> bytes:
    """A complete HTTP/1.1 response. Written by hand (not through h11) so that it can also
    answer a client whose request h11 refused; no header carries anything the client sent."""
    body = json.dumps(data).encode()
    extra = "Retry-After: 5\r\n" if status == 503 else ""
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
    return head.encode("ascii") + body


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class WebhookServer:
    """The endpoint: POST (any path; Gitea posts to the URL it is given) and GET /healthz.

    ``start()`` binds and serves from a background thread (tests, embedding);
    ``serve_forever()`` does the same and waits (the CLI); ``stop()`` ends it.
    """

    def __init__(self, host: str, port: int, secret: str, enqueue: Callable[[JobSpec], Submitted],
                 limits: Limits | None = None) -> None:
        self.host, self.port, self.secret, self.enqueue = host, port, secret, enqueue
        self.limits = limits or Limits()
        self.address: tuple[str, int] | None = None
        self.open_connections = 0
        self._pending = 0
        self._loop: Any = None
        self._server: Any = None
        self._pool: Any = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Bind and serve in a background thread; returns the bound (host, port)."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="webhook-submit")
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(asyncio.start_server(
                    self._handle, self.host, self.port, limit=self.limits.header_bytes,
                    backlog=min(1024, self.limits.connections)))
                self.address = self._server.sockets[0].getsockname()[:2]
            except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._server.close()
                self._loop.run_until_complete(self._server.wait_closed())
                self._loop.close()
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="webhooks", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._pool.shutdown(wait=False)
            exc = failure[0]
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise QueueError(f"cannot listen on {self.host}:{self.port}: {reason}",
                             hint="choose another --listen address or port") from None
        assert self.address is not None
        return self.address

    def serve_forever(self) -> None:
        if self._thread is None:
            self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection -----------------------------------------------------------------

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        peer = (writer.get_extra_info("peername") or ("?",))[0]
        if self.open_connections >= self.limits.connections:
            log.warning("refused a connection from %s: %d connections open (the limit)", peer,
                        self.open_connections)
            await self._send(writer, _response(503, {"error": "too many connections; retry later"}))
            return
        self.open_connections += 1
        try:
            try:
                async with asyncio.timeout(self.limits.request_seconds):
                    method, target, headers, body = await self._read_request(reader)
            except TimeoutError:
                log.warning("closed a connection from %s: no complete request within %gs", peer,
                            self.limits.request_seconds)
                await self._send(writer, _response(408, {"error": "request not complete in time"}))
                return
            except _Refused as exc:
                log.warning("refused a request from %s: %s", peer, exc.message)
                await self._send(writer, _response(exc.status, {"error": exc.message}), linger=reader)
                return
            status, data = await self._dispatch(peer, method, target, headers, body)
            await self._send(writer, _response(status, data))
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self.open_connections -= 1

    async def _send(self, writer: Any, payload: bytes, linger: Any = None) -> None:
        import asyncio

        try:
            writer.write(payload)
            # A client that does not read cannot hold the connection past this either.
            async with asyncio.timeout(self.limits.request_seconds):
                await writer.drain()
            if linger is not None and writer.can_write_eof():
                # The client may still be sending the body we refused: closing with unread
                # input would reset the connection and could destroy our answer on its way.
                # Read a little more, briefly, then close (a "lingering close").
                writer.write_eof()
                async with asyncio.timeout(LINGER_SECONDS):
                    for _ in range(LINGER_BYTES // 65536):
                        if not await linger.read(65536):
                            break
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()
            try:
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            except (TimeoutError, ConnectionError, OSError):
                pass

    async def _read_request(self, reader: Any) -> tuple[str, str, dict[str, str], bytes]:
        import h11

        lim = self.limits
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=lim.header_bytes)
        method = target = ""
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except ValueError as exc:  # e.g. a Content-Length of thousands of digits: int() refuses it
                raise _Refused(400, "malformed HTTP request (bad Content-Length)") from exc
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint in (400, 413, 431) else 400
                if status == 400 and "too long" in str(exc).lower():
                    status = 431
                # h11's own words quote the offending bytes: not repeated to the client or the log.
                what = f"request headers larger than {lim.header_bytes} bytes" if status == 431 \
                    else "malformed HTTP request"
                raise _Refused(status, what) from exc
            if event is h11.NEED_DATA:
                data = await reader.read(min(65536, lim.header_bytes + lim.body_bytes))
                conn.receive_data(data)  # b"" marks the end of the stream; h11 then complains
                continue
            if isinstance(event, h11.Request):
                # h11 bounds only a request still arriving; one that came in a single read is
                # measured here (the request line and every header line as sent).
                size = len(event.method) + len(event.target) + 12 + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > lim.header_bytes:
                    raise _Refused(431, f"request headers larger than {lim.header_bytes} bytes")
                method, target = event.method.decode("ascii", "replace"), event.target.decode("ascii", "replace")
                # Latin-1 maps every byte, so a hostile header cannot fail the decode.
                headers = {k.decode("latin-1").title(): v.decode("latin-1") for k, v in event.headers}
                if method == "POST":
                    length = headers.get("Content-Length")
                    if length is None and "chunked" not in headers.get("Transfer-Encoding", "").lower():
                        raise _Refused(411, "Content-Length required")
                    # h11 has checked it is digits only (no sign, no garbage); refuse before reading.
                    if length is not None and (len(length) > 12 or int(length) > lim.body_bytes):
                        raise _Refused(413, f"body larger than {lim.body_bytes} bytes")
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > lim.body_bytes:
                    raise _Refused(413, f"body larger than {lim.body_bytes} bytes")
                continue
            if isinstance(event, h11.EndOfMessage):
                return method, target, headers, bytes(body)
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("client closed the connection mid-request")

    async def _dispatch(self, peer: str, method: str, target: str, headers: dict[str, str],
                        body: bytes) -> tuple[int, dict[str, Any]]:
        import asyncio

        if method == "GET":
            ok = target == "/healthz"
            return (200 if ok else 404), {"ok": ok}
        if method != "POST":
            return 405, {"error": "only POST (deliveries) and GET /healthz"}
        if self._pending >= self.limits.pending:
            log.warning("refused a delivery from %s: %d deliveries waiting (the limit)", peer, self._pending)
            return 503, {"error": "busy; retry later"}
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._deliver, peer, headers, body)
        finally:
            self._pending -= 1

    def _deliver(self, peer: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Verify, parse and queue one delivery (in a worker thread: HMAC, JSON and Redis)."""
        try:
            delivery = parse_push(headers, body, self.secret)
        except WebhookRejected as exc:
            log.warning("refused a delivery from %s: %s", peer, exc.message)
            return exc.status, {"error": exc.message}
        if delivery.spec is None:
            return 202, {"ignored": delivery.ignored}
        try:
            submitted = self.enqueue(delivery.spec)
        except RaibidError as exc:
            log.error("could not queue %s@%s: %s", delivery.spec.repo, delivery.spec.ref, exc.message)
            return 503, {"error": "could not queue the job; retry later"}
        log.info("queued job %s for %s %s@%s", submitted.job_id, delivery.spec.repo, delivery.spec.ref,
                 delivery.spec.commit[:12])
        return 201, {"job": submitted.job_id}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port); QueueError if malformed."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise QueueError(f"--listen {shown(text)} is not HOST:PORT", hint=f"e.g. --listen {DEFAULT_LISTEN}")
    return host, int(port)
