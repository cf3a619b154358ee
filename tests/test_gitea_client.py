"""The Gitea client's transport against a real HTTP server on loopback (no mocks of requests):
retries with backoff on 5xx, 429 and refused connections; our exceptions; no token leaks."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raibid_gitops.clients.gitea import Gitea, RepoRef, parse_repo_url
from raibid_gitops.errors import GiteaConflict, GiteaError, GiteaNotFound

TOKEN = "s3cr3t-token-value-0123456789"


class Scripted(ThreadingHTTPServer):
    """Answers each request with the next (status, body, headers) of its script."""

    daemon_threads = True

    def __init__(self, script: list[tuple[int, object, dict[str, str]]]):
        self.script = list(script)
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, payload, headers = (self.server.script.pop(0) if self.server.script
                                    else (500, {"message": "script ended"}, {}))
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    servers: list[Scripted] = []

    def start(*script: tuple[int, object, dict[str, str]] | tuple[int, object]) -> Scripted:
        srv = Scripted([(s[0], s[1], s[2] if len(s) > 2 else {}) for s in script])  # type: ignore[misc]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def client(url: str, **kw) -> Gitea:
    return Gitea(url, TOKEN, backoff=kw.pop("backoff", 0.01), timeout=kw.pop("timeout", (1.0, 2.0)), **kw)


class TestRetries:
    def test_5xx_then_success(self, serve):
        srv = serve((503, {"message": "busy"}), (502, b"<html>bad gateway</html>"), (200, {"version": "1.26.0"}))
        assert client(srv.url).version() == "1.26.0"
        assert len(srv.seen) == 3

    def test_429_honours_retry_after(self, serve):
        srv = serve((429, {"message": "slow down"}, {"Retry-After": "1"}), (200, {"version": "x"}))
        t0 = time.monotonic()
        assert client(srv.url).version() == "x"
        assert time.monotonic() - t0 >= 0.75  # Retry-After 1 s, jittered by at most 20 %

    def test_gives_up_after_bounded_attempts_with_status(self, serve):
        srv = serve(*[(500, {"message": "database is locked"})] * 5)
        with pytest.raises(GiteaError) as exc:
            client(srv.url, attempts=3).version()
        assert len(srv.seen) == 3
        assert exc.value.status == 500
        assert "answered 500: database is locked" in str(exc.value) and "after 3 attempts" in str(exc.value)

    def test_post_retried_on_503(self, serve):
        """503/429 mean the server did not act on it, so a POST is safe to resend."""
        srv = serve((503, {}), (201, {"number": 3}))
        assert client(srv.url).create_pull("o/r", head="b", base="main", title="t")["number"] == 3
        assert [m for m, *_ in srv.seen] == ["POST", "POST"]

    def test_pull_waits_for_a_just_pushed_branch(self, serve):
        """Gitea records a pushed branch from a queue: until then it answers 404 to the PR."""
        srv = serve((404, {"message": "not found"}), (404, {"message": "not found"}), (201, {"number": 4}))
        pull = client(srv.url).create_pull("o/r", head="b", base="main", title="t", head_pushed_within=5)
        assert pull["number"] == 4 and [m for m, *_ in srv.seen] == ["POST"] * 3

    def test_pull_404_is_final_without_a_push_and_bounded_after_one(self, serve):
        srv = serve((404, {"message": "not found"}))
        with pytest.raises(GiteaNotFound):
            client(srv.url).create_pull("o/r", head="b", base="main", title="t")
        assert len(srv.seen) == 1
        srv = serve(*[(404, {"message": "not found"})] * 40)
        t0 = time.monotonic()
        with pytest.raises(GiteaNotFound, match="had not recorded the pushed branch b 0.6 s after the push"):
            client(srv.url).create_pull("o/r", head="b", base="main", title="t", head_pushed_within=0.6)
        assert 0.3 < time.monotonic() - t0 < 2 and 2 < len(srv.seen) < 40

    def test_unreachable(self):
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(GiteaError) as exc:
            client(f"http://127.0.0.1:{port}", attempts=3).get_repo("raibid/cfg")
        assert time.monotonic() - t0 < 5
        assert exc.value.status is None
        assert f"cannot reach Gitea at http://127.0.0.1:{port}" in exc.value.message
        assert "gave up after 3 attempts" in exc.value.message and "RAIBID_GITEA_URL" in (exc.value.hint or "")

    def test_read_timeout_of_a_post_is_not_retried(self, serve):
        srv = Scripted([])

        class Slow(Handler):
            def _answer(self) -> None:
                self.server.seen.append((self.command, self.path, {}, b""))
                time.sleep(1.5)

            do_POST = _answer

        srv.RequestHandlerClass = Slow
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            with pytest.raises(GiteaError, match="may have been applied"):
                client(srv.url, timeout=(1.0, 0.3)).create_pull("o/r", head="b", base="main", title="t")
            assert len(srv.seen) == 1
        finally:
            srv.shutdown()
            srv.server_close()


class TestErrors:
    def test_one_class_per_status_and_cut_message(self, serve):
        srv = serve((404, {"message": "repo not found"}), (409, {"message": "x" * 2000}),
                    (405, {"message": "not mergeable"}), (422, {"message": "invalid", "errors": ["head: missing"]}),
                    (401, {"message": "token is required"}))
        c = client(srv.url)
        with pytest.raises(GiteaNotFound) as nf:
            c.get_repo("raibid/nope")
        assert nf.value.status == 404 and "GET /repos/raibid/nope answered 404: repo not found" in nf.value.message
        with pytest.raises(GiteaConflict) as conflict:
            c.get_repo("raibid/x")
        assert conflict.value.status == 409 and len(conflict.value.message) < 400
        with pytest.raises(GiteaConflict):
            c.merge_pull("raibid/x", 1)
        with pytest.raises(GiteaError, match=r"invalid \(head: missing\)"):
            c.create_pull("raibid/x", head="", base="main", title="t")
        with pytest.raises(GiteaError) as unauth:
            c.get_repo("raibid/x")
        assert unauth.value.status == 401 and "RAIBID_GITEA_TOKEN" in (unauth.value.hint or "")
        assert len(srv.seen) == 5, "4xx answers are not retried"

    def test_token_sent_in_header_never_shown(self, serve, caplog):
        srv = serve((500, {"message": "boom"}), (500, {"message": "boom"}))
        c = client(srv.url, attempts=2)
        caplog.set_level(logging.DEBUG)
        with pytest.raises(GiteaError) as exc:
            c.get_repo("raibid/cfg")
        assert srv.seen[0][2]["Authorization"] == f"token {TOKEN}"
        assert "?" not in srv.seen[0][1], "no token in the query string"
        for text in (repr(c), str(exc.value), repr(exc.value), caplog.text):
            assert TOKEN not in text
        assert repr(c) == f"Gitea(url='{srv.url}', auth=***)"


def test_parse_repo_url():
    assert parse_repo_url("http://127.0.0.1:3000/raibid/raibid-config.git") == \
        RepoRef("http://127.0.0.1:3000", "raibid", "raibid-config")
    assert parse_repo_url("https://user:pw@git.example/sub/path/o/r") == \
        RepoRef("https://git.example/sub/path", "o", "r")
    assert parse_repo_url("git@host:o/r.git") is None
    assert parse_repo_url("/srv/git/cfg") is None


class TestResolveTarget:
    """Which Gitea repository a config repository belongs to (status_report.resolve_target)."""

    def test_from_origin_then_env_override(self, config_repo, monkeypatch):
        import subprocess

        from raibid_gitops.gitops.status_report import resolve_target

        monkeypatch.delenv("RAIBID_GITEA_URL", raising=False)
        # No remote: settings.yaml's gitea.* (the in-cluster URL).
        assert resolve_target(config_repo) == RepoRef("http://gitea.raibid-ci.svc.cluster.local:3000", "raibid",
                                                      "raibid-config")
        subprocess.run(["git", "remote", "add", "origin", "http://127.0.0.1:3000/ops/cfg.git"], cwd=config_repo,
                       check=True)
        assert resolve_target(config_repo) == RepoRef("http://127.0.0.1:3000", "ops", "cfg")
        monkeypatch.setenv("RAIBID_GITEA_URL", "http://localhost:8080/")
        assert resolve_target(config_repo) == RepoRef("http://localhost:8080", "ops", "cfg")
        assert resolve_target(config_repo, url="http://h/x/y") == RepoRef("http://h", "x", "y")
