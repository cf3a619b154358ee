"""The Gitea push-webhook endpoint: only correctly signed push deliveries queue a job."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from raibid_gitops import contract as c
from raibid_gitops.errors import QueueError, WebhookRejected
from raibid_gitops.queue import get_job, submit
from raibid_gitops.queue.webhooks import make_server, parse_push, read_secret, serve_in_thread, sign
from raibid_gitops.settings import Settings

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
        assert d.spec is not None and (d.spec.repo, d.spec.ref, d.spec.commit) == ("raibid/hello", "refs/heads/main", SHA)

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
                                      _body({**PUSH, "after": "zz"}), _body({**PUSH, "repository": {"full_name": "x"}})])
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


@pytest.mark.redis
class TestServer:
    """Over HTTP: a good delivery queues a job; refused ones queue nothing."""

    @pytest.fixture
    def endpoint(self, redis_client):
        settings = Settings()
        server = make_server("127.0.0.1", 0, SECRET, lambda spec: submit(redis_client, settings, spec))
        serve_in_thread(server)
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/gitea"
        server.shutdown()
        server.server_close()

    def _post(self, url, body, headers):
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def test_deliveries(self, endpoint, redis_client):
        body = _body()
        status, data = self._post(endpoint, body, {"X-Gitea-Event": "push", "X-Gitea-Signature": sign(SECRET, body)})
        assert status == 201
        job = get_job(redis_client, data["job"])
        assert (job.repo, job.commit, job.state) == ("raibid/hello", SHA, c.STATE_QUEUED)

        assert self._post(endpoint, body, {"X-Gitea-Event": "push"})[0] == 401
        assert self._post(endpoint, body, {"X-Gitea-Signature": "00" * 32})[0] == 401
        bad = b"{not json"
        assert self._post(endpoint, bad, {"X-Gitea-Signature": sign(SECRET, bad)})[0] == 400
        assert redis_client.xlen(Settings().queue.stream) == 1  # only the good one
