"""Hostile and careless input to `raibid gitops` (issue 12), through the real CLI, git and
kustomize: every refusal exits 2 (or verify's 1) with a message that names the problem, shows
rejected input only cut short, never a traceback, and leaves the repository as it was."""

from __future__ import annotations

import http.server
import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fixtures_gitops import git_state

from raibid_gitops import names
from raibid_gitops.gitops import layout

SETTINGS = layout.SETTINGS_PATH


def raibid(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120,
           pre: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI as a user runs it. ``timeout`` bounds a hang (the bug class here), it asserts nothing."""
    return subprocess.run([*pre, sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def refused(r: subprocess.CompletedProcess, *words: str, code: int = 2) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == code, out
    assert "Traceback" not in out, out
    for w in words:
        assert w in out, f"{w!r} not in: {out}"


def commit_file(repo: Path, rel: str, text: str) -> None:
    (repo / rel).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "hand edit"], cwd=repo,
                   check=True)


def alias_bomb(levels: int = 7, width: int = 9) -> str:
    """The probe's file: ~3 KB of nested aliases expanding to width**levels (4.8 million) values."""
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


class TestAliasBomb:
    """Item 1: nested aliases are refused before anything expands them, by every reader."""

    def test_verify_get_set_queue(self, config_repo: Path):
        original = (config_repo / SETTINGS).read_text()
        commit_file(config_repo, SETTINGS, original + alias_bomb())
        before = git_state(config_repo)
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "aliases expanded", "more than 10000 values", code=1)
        refused(raibid("gitops", "get", "agents.maxReplicas", "-C", str(config_repo)), "aliases expanded")
        refused(raibid("gitops", "set", "agents.maxReplicas=6", "-C", str(config_repo)), "does not parse",
                "aliases expanded")
        refused(raibid("queue", "stats", "--settings", str(config_repo / SETTINGS)), "aliases expanded")
        assert git_state(config_repo) == before

    def test_deep_nesting(self, config_repo: Path):
        commit_file(config_repo, SETTINGS, "x: " + "[" * 5000 + "]" * 5000 + "\n")
        refused(raibid("gitops", "verify", str(config_repo)), code=1)
        deep = "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v: 1\n"
        commit_file(config_repo, SETTINGS, deep)
        refused(raibid("gitops", "verify", str(config_repo)), "nested deeper than 32", code=1)

    def test_few_aliases_are_fine(self, config_repo: Path):
        text = (config_repo / SETTINGS).read_text()
        text = text.replace("  heartbeatSeconds: 15\n", "  heartbeatSeconds: &beat 15\n")
        text = text.replace("  pollingInterval: 10\n", "  pollingInterval: *beat\n")
        commit_file(config_repo, SETTINGS, text)
        r = raibid("gitops", "get", "scaling.pollingInterval", "-C", str(config_repo))
        assert r.returncode == 0 and r.stdout.strip() == "15", r.stderr


class TestRefsAndValues:
    """Item 4: whole-string matching and git's own ref rules."""

    @pytest.mark.parametrize("ref", ["main\n", "main.lock", "a//b", ".hidden", "refs/heads/.x", "a..b", "-x",
                                     "a/", "/a", "a.", "refs/heads/x.lock/y", "a b", "a~1", "a^", "a:b", "@{x}",
                                     "a\\b", "x" * 256])
    def test_git_refuses_what_we_refuse_or_we_are_stricter(self, ref):
        ours = names.ref_problem(ref)
        assert ours is not None
        assert "\n" not in ours.split("(")[0].replace("\\n", ""), "the ref is shown escaped, not raw"

    @pytest.mark.parametrize("ref", ["main", "refs/heads/main", "feature/x-1", "v1.2.3", "release/2024.01", "a_b"])
    def test_good_refs_pass_and_git_agrees(self, ref):
        assert names.ref_problem(ref) is None
        git = subprocess.run(["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True)
        assert git.returncode == 0

    @pytest.mark.parametrize("ref", ["main.lock", "a//b", ".hidden", "a..b", "a.", "a/.b", "x/y.lock", "/a", "a/"])
    def test_what_git_refuses_we_refuse(self, ref):
        git = subprocess.run(["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True)
        assert git.returncode != 0, f"git accepts {ref!r}: the case proves nothing"
        assert names.ref_problem(ref) is not None

    def test_set_with_a_trailing_newline_commits_nothing(self, config_repo: Path):
        before = git_state(config_repo)
        for assignment in ("cluster.capacity.cpu=20\n", "agents.maxReplicas=6\n", "agents.memory= 4Gi",
                           "gitea.branch=main\n", "agents.image=img:1\n"):
            r = raibid("gitops", "set", assignment, "-C", str(config_repo))
            refused(r)
            assert "\n6\n" not in r.stderr
        assert git_state(config_repo) == before

    def test_set_refuses_branch_git_would_refuse(self, config_repo: Path):
        before = git_state(config_repo)
        for branch in ("main.lock", "a//b", ".hidden", "refs/heads/main"):
            refused(raibid("gitops", "set", f"gitea.branch={branch}", "-C", str(config_repo)), "gitea.branch")
        assert git_state(config_repo) == before


class TestNumbersAndFiles:
    """Item 5: huge numbers, unwritable and odd targets: exit 2 with a message."""

    def test_huge_numbers(self, config_repo: Path, tmp_path: Path):
        before = git_state(config_repo)
        digits = "9" * 5000
        r = raibid("gitops", "set", f"agents.maxReplicas={digits}", "-C", str(config_repo))
        refused(r, "must be an integer", "5000 characters")
        assert digits not in r.stderr
        refused(raibid("gitops", "init", str(tmp_path / "new"), "--set", f"agents.maxReplicas={digits}"),
                "must be an integer")
        assert not (tmp_path / "new").exists()
        assert git_state(config_repo) == before
        text = (config_repo / SETTINGS).read_text().replace("maxReplicas: 8", f"maxReplicas: {digits}")
        commit_file(config_repo, SETTINGS, text)
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "5000 digits", code=1)
        assert digits not in r.stdout + r.stderr
        text = (config_repo / SETTINGS).read_text().replace(f"maxReplicas: {digits}", f"maxReplicas: {'9' * 200}")
        commit_file(config_repo, SETTINGS, text)
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "agents.maxReplicas", "a number of 200 digits", code=1)

    def test_read_only_parent(self, tmp_path: Path):
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        # As root, permission bits only bind without CAP_DAC_OVERRIDE: drop it for the command.
        pre = ("setpriv", "--bounding-set=-dac_override,-dac_read_search") if os.geteuid() == 0 else ()
        r = raibid("gitops", "init", str(parent / "cfg"), pre=pre)
        refused(r, "cannot create", "Permission denied")
        assert list(parent.iterdir()) == []

    def test_dangling_symlink(self, tmp_path: Path):
        link = tmp_path / "link"
        link.symlink_to(tmp_path / "missing")
        refused(raibid("gitops", "init", str(link)), "symbolic link", "dangling")
        assert link.is_symlink() and not (tmp_path / "missing").exists()

    def test_file_as_target(self, tmp_path: Path):
        f = tmp_path / "f"
        f.write_text("x")
        refused(raibid("gitops", "init", str(f)), "is not a directory")


class TestMessages:
    """Items 6 and 7: failures list their problems, in words that fit."""

    def test_set_lists_verify_problems(self, config_repo: Path):
        kust = config_repo / layout.OVERLAY_DIR / "kustomization.yaml"
        commit_file(config_repo, f"{layout.OVERLAY_DIR}/kustomization.yaml",
                    kust.read_text() + "resources:\n  - missing-file.yaml\n")
        before = git_state(config_repo)
        r = raibid("gitops", "set", "agents.maxReplicas=6", "-C", str(config_repo))
        refused(r, "verify found", "(kustomize build)", code=1)
        assert git_state(config_repo) == before

    def test_model_error_wording(self, config_repo: Path):
        text = (config_repo / SETTINGS).read_text().replace("maxReplicas: 8", "maxReplicas: 99")
        commit_file(config_repo, SETTINGS, text)
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "agents.maxReplicas", "(found 99)", code=1)
        assert "expected None" not in r.stdout

    def test_yaml_error_names_the_file_once(self, config_repo: Path):
        commit_file(config_repo, SETTINGS, "agents:\n  maxReplicas: [\n")
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "malformed YAML", code=1)
        assert r.stdout.count("settings.yaml") == 1, r.stdout

    def test_cross_field_error_names_the_key_that_was_set(self, config_repo: Path):
        before = git_state(config_repo)
        r = raibid("gitops", "set", "agents.cpu=4", "-C", str(config_repo))
        refused(r, "agents.cpu: agents.maxReplicas (8) x agents.cpu (4)", "cluster.capacity.cpu")
        r = raibid("gitops", "set", "queue.heartbeatSeconds=200", "-C", str(config_repo))
        refused(r, "queue.heartbeatSeconds: queue.claimIdleSeconds (300)")
        assert git_state(config_repo) == before

    def test_push_answered_500_is_a_server_error(self, config_repo: Path):
        class Fails(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_error(500, "boom")

            do_POST = do_GET

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fails)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            subprocess.run(["git", "remote", "add", "origin",
                            f"http://127.0.0.1:{server.server_address[1]}/raibid/raibid-config.git"],
                           cwd=config_repo, check=True)
            before = git_state(config_repo)
            r = raibid("gitops", "set", "agents.maxReplicas=6", "-C", str(config_repo))
            refused(r, "HTTP 500", "server error", "nothing was pushed")
            assert "protected" not in r.stderr
            assert git_state(config_repo) == before
        finally:
            server.shutdown()
            server.server_close()


    def test_push_refused_by_a_protection_hook_still_points_to_pr(self, config_repo: Path, tmp_path: Path):
        """The other side of the wording fix: a real refusal (a pre-receive hook, as Gitea's
        branch protection is) keeps the hint to propose the change with --pr."""
        bare = tmp_path / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(config_repo), str(bare)], check=True)
        hook = bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'Gitea: Not allowed to push to protected branch main' >&2\nexit 1\n")
        hook.chmod(0o755)
        subprocess.run(["git", "remote", "add", "origin", str(bare)], cwd=config_repo, check=True)
        subprocess.run(["git", "fetch", "-q", "origin"], cwd=config_repo, check=True)
        before = git_state(config_repo)
        r = raibid("gitops", "set", "agents.maxReplicas=6", "-C", str(config_repo))
        refused(r, "was refused", "protected", "--pr")
        assert git_state(config_repo) == before


class TestStrictValues:
    """Item 8: no silent coercion; camelCase keys only; quantities as Kubernetes reads them."""

    @pytest.mark.parametrize("old,new,words", [
        ("gpus: 0", "gpus: false", "agents.gpus"),
        ("maxReplicas: 8", "maxReplicas: true", "agents.maxReplicas"),
        ("maxReplicas: 8", "maxReplicas: 8.0", "agents.maxReplicas"),
        ('  cpu: "2"', "  cpu: 0", "agents.cpu must be more than 0"),
        ("  memory: 4Gi", "  memory: 0", "agents.memory must be more than 0"),
        ("  memory: 4Gi", '  memory: " 4Gi"', "agents.memory"),
        ("  memory: 4Gi", '  memory: "4Gi\\n"', "agents.memory"),
        ("maxReplicas: 8", "max_replicas: 8", "agents.max_replicas: unknown setting; did you mean agents.maxReplicas"),
    ])
    def test_verify_refuses(self, config_repo: Path, old, new, words):
        text = (config_repo / SETTINGS).read_text()
        assert old in text
        commit_file(config_repo, SETTINGS, text.replace(old, new, 1))
        refused(raibid("gitops", "verify", str(config_repo)), words, code=1)

    def test_set_refuses_padded_quantity(self, config_repo: Path):
        before = git_state(config_repo)
        refused(raibid("gitops", "set", "agents.cpu= 2", "-C", str(config_repo)), "not a Kubernetes quantity")
        refused(raibid("gitops", "set", "agents.cpu=0", "-C", str(config_repo)), "must be more than 0")
        assert git_state(config_repo) == before


class TestSizes:
    """Item 9: what Kubernetes would refuse, verify refuses."""

    def test_huge_settings_file(self, config_repo: Path):
        text = (config_repo / SETTINGS).read_text()
        (config_repo / SETTINGS).write_text(text + ("# " + "x" * 98 + "\n") * 100_000)  # 10 MB
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "settings.yaml", "bytes", "at most 262144", code=1)
        refused(raibid("gitops", "get", "-C", str(config_repo)), "at most 262144")

    def test_configmap_over_one_mib(self, config_repo: Path):
        overlay = config_repo / layout.OVERLAY_DIR
        (overlay / "big.txt").write_text("x" * (1024 * 1024 + 10))
        kust = overlay / "kustomization.yaml"
        kust.write_text(kust.read_text().replace("configMapGenerator:\n", "configMapGenerator:\n"
                                                 "  - name: raibid-big\n    files:\n      - big.txt\n"
                                                 "    options:\n      disableNameSuffixHash: true\n", 1))
        assert "raibid-big" in kust.read_text()
        r = raibid("gitops", "verify", str(config_repo))
        refused(r, "ConfigMap raibid-big", "Kubernetes refuses more than 1048576", code=1)


class TestAnchors:
    """Item 10: set on a file with anchors changes only the changed lines."""

    def _with_anchors(self, repo: Path) -> str:
        text = (repo / SETTINGS).read_text()
        text = text.replace("  heartbeatSeconds: 15\n", "  heartbeatSeconds: &beat 15 # beat\n")
        text = text.replace("  pollingInterval: 10\n", "  pollingInterval: *beat # poll\n")
        text = text.replace("    - name: test\n", "    - &step\n      name: test\n")
        commit_file(repo, SETTINGS, text)
        return text

    def test_only_the_changed_line_differs(self, config_repo: Path):
        text = self._with_anchors(config_repo)
        r = raibid("gitops", "set", "agents.maxReplicas=6", "-C", str(config_repo))
        assert r.returncode == 0, r.stderr
        new = (config_repo / SETTINGS).read_text()
        assert new == text.replace("  maxReplicas: 8\n", "  maxReplicas: 6\n")
        # The alias itself can be set: it becomes a value, its comment stays.
        r = raibid("gitops", "set", "scaling.pollingInterval=20", "-C", str(config_repo))
        assert r.returncode == 0, r.stderr
        assert (config_repo / SETTINGS).read_text() == new.replace("pollingInterval: *beat # poll",
                                                                     "pollingInterval: 20 # poll")

    def test_an_anchored_value_that_others_alias_is_refused(self, config_repo: Path):
        self._with_anchors(config_repo)
        before = git_state(config_repo)
        r = raibid("gitops", "set", "queue.heartbeatSeconds=20", "-C", str(config_repo))
        refused(r, "would also change scaling.pollingInterval", "YAML anchor")
        assert git_state(config_repo) == before


class _EchoHeaders(http.server.BaseHTTPRequestHandler):
    """A Gitea stand-in whose error pages echo the request headers back (as some proxies do)."""

    def _echo(self) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        if self.path.endswith("/pulls") or "pulls" in self.path:
            body = json.dumps({"message": f"bad request; you sent:\n{headers}"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
        else:
            body = f"<html><pre>{headers}</pre></html>".encode()
            self.send_response(403)
            self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _echo
    do_POST = _echo

    def log_message(self, *args):
        pass


class TestCredentials:
    """Item 11: no credential in .git/config, and none echoed back by a server."""

    def test_init_remote_with_password_refused(self, tmp_path: Path):
        r = raibid("gitops", "init", str(tmp_path / "cfg"), "--remote", "http://bob:PASSWORD123@127.0.0.1:1/o/r.git")
        refused(r, "carries credentials", "RAIBID_GITEA_TOKEN")
        assert "PASSWORD123" not in r.stderr
        assert not (tmp_path / "cfg").exists()
        r = raibid("gitops", "init", str(tmp_path / "cfg"), "--remote", "http://TOKEN123456@127.0.0.1:1/o/r.git")
        refused(r, "carries credentials")
        assert "TOKEN123456" not in r.stderr

    def test_set_and_pr_urls_with_credentials_refused(self, config_repo: Path):
        r = raibid("gitops", "set", "agents.maxReplicas=6", "-C", "http://bob:PASSWORD123@127.0.0.1:1/o/r.git")
        refused(r, "carries credentials")
        assert "PASSWORD123" not in r.stderr
        r = raibid("gitops", "pr", "list", "--gitea-url", "http://bob:PASSWORD123@127.0.0.1:1/o/r")
        refused(r, "carries credentials")
        assert "PASSWORD123" not in r.stderr

    def test_gitea_error_bodies_do_not_echo_the_token(self, tmp_path: Path):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/raibid/raibid-config"
        try:
            env = {"RAIBID_GITEA_TOKEN": "tok-SECRET-0123456789"}
            r = raibid("gitops", "pr", "list", "--gitea-url", url, env=env)
            refused(r, "answered 400")
            assert "tok-SECRET-0123456789" not in r.stdout + r.stderr
            r = raibid("gitops", "pr", "show", "1", "--gitea-url", url, env=env)
            refused(r)
            assert "tok-SECRET-0123456789" not in r.stdout + r.stderr
        finally:
            server.shutdown()
            server.server_close()


class TestInitMode:
    """Item 12: init keeps an existing directory's mode; a new one gets the umask's."""

    def test_existing_empty_directory_keeps_its_mode(self, tmp_path: Path):
        target = tmp_path / "cfg"
        target.mkdir()
        target.chmod(0o755)
        r = raibid("gitops", "init", str(target))
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o755

    def test_new_directory_follows_the_umask(self, tmp_path: Path):
        target = tmp_path / "cfg"
        r = raibid("gitops", "init", str(target), pre=("sh", "-c", 'umask 027 && exec "$@"', "sh"))
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o750


def test_rejected_input_is_cut_in_every_message(config_repo: Path):
    """Whatever the command, a long hostile value comes back as its first 40 characters."""
    junk = "Z" * 3000
    for args in (("gitops", "set", f"{junk}=1", "-C", str(config_repo)),
                 ("gitops", "set", f"agents.cpu={junk}", "-C", str(config_repo)),
                 ("gitops", "get", junk, "-C", str(config_repo)),
                 ("gitops", "set", "x", "-m", "m", "--author", junk, "-C", str(config_repo))):
        r = raibid(*args)
        refused(r)
        assert junk not in r.stderr and re.search(r"\(\d{4} characters\)", r.stderr), r.stderr
