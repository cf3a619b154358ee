"""The Gitea push-webhook endpoint: only correctly signed push deliveries queue a job, and no
client can hold, flood or crash the server (real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from fixtures_redis import wait_until

from raibid_gitops import contract as c
from raibid_gitops.errors import QueueError, WebhookRejected
from raibid_gitops.queue import get_job, submit
from raibid_gitops.queue.webhooks import Limits, WebhookServer, parse_push, read_secret, sign
from raibid_gitops.settings import defaults

SECRET = "s3cret-for-tests"
SHA = "0123456789abcdef0123456789abcdef01234567"
PUSH = {"ref": "refs/heads/main", "before": "0" * 40, "after": SHA,
        "repository": {"full_name": "raibid/hello", "clone_url": "http://gitea/raibid/hello.git"}}


def _body(payload=PUSH) -> bytes:
    return json.dumps(payload).encode()


class TestParse:
    """Signature and payload checks, without a server."""

    def test_good(self):
        body = _body()
        d = parse_push({"X-Gitea-Signature": sign(SECRET, body), "X-Gitea-Event": "push"}, body, SECRET)
        assert d.spec is not None
        assert (d.spec.repo, d.spec.ref, d.spec.commit) == ("raibid/hello", "refs/heads/main", SHA)

    def test_unsigned(self):
        with pytest.raises(WebhookRejected, match="unsigned") as exc:
            parse_push({}, _body(), SECRET)
        assert exc.value.status == 401

    def test_bad_signature(self):
        body = _body()
        with pytest.raises(WebhookRejected, match="bad signature"):
            parse_push({"X-Gitea-Signature": sign("other", body)}, body, SECRET)

    def test_signature_of_other_body(self):
        with pytest.raises(WebhookRejected, match="bad signature"):
            parse_push({"X-Gitea-Signature": sign(SECRET, b"{}")}, _body(), SECRET)

    @pytest.mark.parametrize("body", [b"not json", b"[1,2]", _body({"ref": "refs/heads/main"}),
                                      _body({**PUSH, "after": "zz"}),
                                      _body({**PUSH, "repository": {"full_name": "x"}})])
    def test_malformed(self, body):
        with pytest.raises(WebhookRejected, match="malformed body") as exc:
            parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET)
        assert exc.value.status == 400

    def test_deleted_branch_and_other_events_are_ignored(self):
        body = _body({**PUSH, "after": "0" * 40})
        assert parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET).spec is None
        body = _body()
        d = parse_push({"X-Gitea-Signature": sign(SECRET, body), "X-Gitea-Event": "issues"}, body, SECRET)
        assert d.spec is None and "not a push" in d.ignored

    def test_no_secret_refuses_to_start(self, monkeypatch):
        monkeypatch.delenv("RAIBID_WEBHOOK_SECRET", raising=False)
        monkeypatch.delenv("RAIBID_WEBHOOK_SECRET_FILE", raising=False)
        with pytest.raises(QueueError, match="no webhook secret"):
            read_secret()


    @pytest.mark.parametrize("field,value,why", [
        ("ref", "refs/heads/main\n", "not a valid git ref"),
        ("ref", "refs/heads/main.lock", "'.lock'"),
        ("ref", "refs/heads/a//b", "double '/'"),
        ("ref", "refs/heads/.hidden", "start with '.'"),
        ("after", "", "not a commit id"),
        ("after", "abc1234", "not a commit id"),  # Gitea sends the full id; a short one is not Gitea
    ])
    def test_refused_values(self, field, value, why):
        body = _body({**PUSH, field: value})
        with pytest.raises(WebhookRejected, match="malformed body") as exc:
            parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET)
        assert why in exc.value.message and exc.value.status == 400

    def test_path_traversal_repository_refused(self):
        body = _body({**PUSH, "repository": {"full_name": "../remote"}})
        with pytest.raises(WebhookRejected, match="not a Gitea user or organisation name"):
            parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET)

    def test_deeply_nested_json_is_refused_not_crashing(self):
        body = b"[" * 200_000 + b"]" * 200_000
        with pytest.raises(WebhookRejected, match="not JSON"):
            parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET)

    def test_uppercase_commit_is_queued_lowercase(self):
        body = _body({**PUSH, "after": SHA.upper()})
        d = parse_push({"X-Gitea-Signature": sign(SECRET, body)}, body, SECRET)
        assert d.spec is not None and d.spec.commit == SHA


# -- over real sockets -----------------------------------------------------------------------

#: Small limits so that the tests see every bound act within a second or two.
TEST_LIMITS = Limits(header_bytes=4096, body_bytes=64 * 1024, request_seconds=1.0, connections=20, workers=2,
                     pending=8)


def _request(body: bytes, headers: dict[str, str]) -> bytes:
    head = "POST /hooks/gitea HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def _signed(payload=PUSH) -> bytes:
    body = _body(payload)
    return _request(body, {"Content-Type": "application/json", "Content-Length": str(len(body)),
                           "X-Gitea-Event": "push", "X-Gitea-Signature": sign(SECRET, body)})


def _exchange(address, raw: bytes, timeout: float = 10.0) -> tuple[int, dict]:
    """Send ``raw`` on a new connection; the status and JSON body of the answer."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(raw)
        data = _read_all(s)
    return _parse(data)


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes) -> tuple[int, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body or b"{}")


@pytest.mark.redis
class TestServer:
    """Over HTTP: a good delivery queues a job; refused ones queue nothing."""

    @pytest.fixture
    def server(self, redis_client):
        settings = defaults()
        srv = WebhookServer("127.0.0.1", 0, SECRET, lambda spec: submit(redis_client, settings, spec), TEST_LIMITS)
        srv.start()
        yield srv
        srv.stop()

    def _post(self, url, body, headers):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def test_deliveries(self, server, redis_client):
        endpoint = f"http://127.0.0.1:{server.address[1]}/hooks/gitea"
        body = _body()
        status, data = self._post(endpoint, body, {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(SECRET, body)})
        assert status == 201
        job = get_job(redis_client, data["job"])
        assert (job.repo, job.commit, job.state) == ("raibid/hello", SHA, c.STATE_QUEUED)

        assert self._post(endpoint, body, {"X-Gitea-Event": "push"})[0] == 401
        assert self._post(endpoint, body, {"X-Gitea-Signature": "00" * 32})[0] == 401
        bad = b"{not json"
        assert self._post(endpoint, bad, {"X-Gitea-Signature": sign(SECRET, bad)})[0] == 400
        assert redis_client.xlen(defaults().queue.stream) == 1  # only the good one

    def test_healthz(self, server):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.address[1]}/healthz", timeout=10) as resp:
            assert resp.status == 200

    def test_stalled_connections_do_not_block_a_good_delivery(self, redis_client):
        """200 clients that send half a header and stall (what held 200 threads of the old
        server for over a minute): a good delivery is still served, and every stalled one is
        cut off (408) once request_seconds is over."""
        settings = defaults()
        server = WebhookServer("127.0.0.1", 0, SECRET, lambda spec: submit(redis_client, settings, spec),
                               Limits(request_seconds=2.0))
        server.start()
        stalled = []
        try:
            for _ in range(200):
                s = socket.create_connection(server.address, timeout=10)
                s.sendall(b"POST /hooks/gitea HTTP/1.1\r\nHost: x\r\nContent-Le")
                stalled.append(s)
            wait_until(lambda: server.open_connections == 200, 10, what="the server to hold the stalled connections")
            self._good_delivery_and_cut_off(server, redis_client, stalled)
        finally:
            for s in stalled:
                s.close()
            server.stop()

    def _good_delivery_and_cut_off(self, server, redis_client, stalled):
        status, data = _exchange(server.address, _signed())
        assert status == 201 and get_job(redis_client, data["job"]).state == c.STATE_QUEUED
        for s in stalled:
            with s:
                assert _parse(_read_all(s))[0] == 408
        wait_until(lambda: server.open_connections == 0, 10, what="the server to let go of them")

    def test_busy_workers_answer_503_and_lose_nothing(self, redis_client):
        """Deliveries waiting for the Redis workers are bounded: one more is answered 503
        (Gitea retries it), and the ones accepted are all queued."""
        settings = defaults()
        release = threading.Event()

        def slow_submit(spec):
            release.wait(10)
            return submit(redis_client, settings, spec)

        server = WebhookServer("127.0.0.1", 0, SECRET, slow_submit, Limits(workers=1, pending=1))
        server.start()
        try:
            first: list[tuple[int, dict]] = []
            t = threading.Thread(target=lambda: first.append(_exchange(server.address, _signed())))
            t.start()
            wait_until(lambda: server._pending == 1, 10, what="the first delivery to wait for the worker")
            status, data = _exchange(server.address, _signed())
            assert status == 503 and "busy" in data["error"]
            release.set()
            t.join(10)
            assert first[0][0] == 201
            assert redis_client.xlen(settings.queue.stream) == 1
        finally:
            release.set()
            server.stop()

    def test_trickling_client_is_cut_off(self, server, redis_client):
        """A slowloris that keeps sending a byte at a time is still cut off: the limit is on
        the whole request, not on the gap between bytes."""
        request = _signed()
        got: list[bytes] = []
        with socket.create_connection(server.address, timeout=10) as s:
            try:
                for byte in request[:200]:  # 200 x 20 ms = 4 s > request_seconds
                    s.sendall(bytes([byte]))
                    time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                pass
            got.append(_read_all(s))
        assert _parse(got[0])[0] == 408
        assert redis_client.xlen(defaults().queue.stream) == 0

    def test_connection_limit(self, server, redis_client):
        """Past Limits.connections, a connection is answered 503 at once; once the stalled ones
        are cut off, deliveries are served again."""
        stalled = [socket.create_connection(server.address, timeout=10) for _ in range(TEST_LIMITS.connections)]
        wait_until(lambda: server.open_connections == TEST_LIMITS.connections, 10, what="the connections to open")
        with socket.create_connection(server.address, timeout=10) as extra:
            status, data = _parse(_read_all(extra))
        assert status == 503 and "too many connections" in data["error"]
        for s in stalled:
            s.close()
        wait_until(lambda: server.open_connections == 0, 10, what="the stalled connections to be cut off")
        assert _exchange(server.address, _signed())[0] == 201

    @pytest.mark.parametrize("headers,status", [
        ({"Content-Length": "-1"}, 400),
        ({"Content-Length": "abc"}, 400),
        ({"Content-Length": "1" * 5000}, 400),
        ({"Content-Length": "10", "content-length": "11"}, 400),
        ({"Content-Length": str(10**9)}, 413),
        ({}, 411),
    ])
    def test_bad_content_length(self, server, redis_client, headers, status):
        body = _body()
        got, data = _exchange(server.address, _request(body, {"X-Gitea-Signature": sign(SECRET, body), **headers}))
        assert got == status, data
        assert redis_client.xlen(defaults().queue.stream) == 0

    def test_oversized_headers(self, server, redis_client):
        body = _body()
        huge = {"X-Padding": "a" * (TEST_LIMITS.header_bytes + 10), "Content-Length": str(len(body)),
                "X-Gitea-Signature": sign(SECRET, body)}
        assert _exchange(server.address, _request(body, huge))[0] == 431
        many = {f"X-H{i}": "v" * 50 for i in range(200)}
        assert _exchange(server.address, _request(body, {**many, "Content-Length": str(len(body))}))[0] == 431
        assert redis_client.xlen(defaults().queue.stream) == 0

    def test_oversized_chunked_body(self, server, redis_client):
        chunk = b"a" * 16384
        raw = _request(b"", {"Transfer-Encoding": "chunked"}) + (b"4000\r\n" + chunk + b"\r\n") * 6
        assert _exchange(server.address, raw)[0] == 413
        assert redis_client.xlen(defaults().queue.stream) == 0

    def test_garbage_request_line(self, server):
        status, data = _exchange(server.address, b"\x00\x01\x02 garbage\r\n\r\n")
        assert status == 400 and data == {"error": "malformed HTTP request"}  # h11's words quote the input
        assert 400 <= _exchange(server.address, b"GET / HTTP/9.9\r\n\r\n")[0] < 500
        assert _exchange(server.address, b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405

    def test_rejected_input_is_not_echoed_in_full(self, server, redis_client, caplog):
        name = "x" * 10_000
        caplog.set_level(logging.WARNING, logger="raibid.webhooks")
        raw = _signed({**PUSH, "repository": {"full_name": f"{name}/repo"}})
        status, data = _exchange(server.address, raw)
        assert status == 400 and "10000 characters" in data["error"] and len(data["error"]) < 400
        assert caplog.records and all(len(r.getMessage()) < 500 for r in caplog.records)
        assert redis_client.xlen(defaults().queue.stream) == 0

    def test_signed_ref_with_newline_is_refused(self, server, redis_client):
        status, data = _exchange(server.address, _signed({**PUSH, "ref": "refs/heads/main\n"}))
        assert status == 400 and "not a valid git ref" in data["error"]
        assert _exchange(server.address, _signed({**PUSH, "after": ""}))[0] == 400
        assert redis_client.xlen(defaults().queue.stream) == 0


@pytest.mark.redis
class TestCommand:
    """`raibid queue serve-webhooks` as a process: listens on loopback by default."""

    def test_default_listen_is_loopback(self):
        from raibid_gitops.cli import build_parser

        args = build_parser().parse_args(["queue", "serve-webhooks"])
        assert args.listen == "127.0.0.1:8080"

    def test_serves_a_delivery(self, redis_server, redis_client, tmp_path):
        secret_file = tmp_path / "secret"
        secret_file.write_text(SECRET + "\n")
        env = dict(os.environ, RAIBID_REDIS_PASSWORD=redis_server.password)
        proc = subprocess.Popen(
            [sys.executable, "-m", "raibid_gitops.cli", "queue", "serve-webhooks", "--listen", "127.0.0.1:0",
             "--secret-file", str(secret_file), "--redis-url", redis_server.url],
            env=env, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            assert "listening for Gitea push webhooks on 127.0.0.1:" in line, line
            port = int(line.rsplit(":", 1)[1])
            status, data = _exchange(("127.0.0.1", port), _signed())
            assert status == 201 and get_job(redis_client, data["job"]).repo == "raibid/hello"
        finally:
            proc.terminate()
            proc.wait(10)

    def test_bad_listen_address(self):
        r = subprocess.run([sys.executable, "-m", "raibid_gitops.cli", "queue", "serve-webhooks", "--listen", "nope"],
                           capture_output=True, text=True, env=dict(os.environ, RAIBID_WEBHOOK_SECRET="x"))
        assert r.returncode == 2 and "is not HOST:PORT" in r.stderr and "Traceback" not in r.stderr
