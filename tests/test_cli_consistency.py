"""Issue 17 item 8: every `raibid gitops` command takes ``-C DIR``, and ``-o`` takes the same
values everywhere (``text|wide|json|yaml``; ``table`` still means text). Through the real CLI,
real git and kustomize; bad values of both are refused with exit 2 and change nothing.

(Commands that talk to Gitea or Kubernetes are run here only as far as their option checks:
a refused ``-C`` or ``-o`` must stop them before any backend is asked. The same options against
the real stack are in test_cli_stack.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_gitops import git_state

from raibid_gitops.cli import build_parser
from raibid_gitops.cli.output import FORMATS, output_format
from raibid_gitops.gitops import layout

#: A kubeconfig and a Gitea that cannot be used: an option refused too late would show their errors.
NO_CLUSTER = {"KUBECONFIG": "/nonexistent/kubeconfig", "RAIBID_GITEA_URL": "", "RAIBID_GITEA_TOKEN": "x"}
NO_GITEA = ["--gitea-url", "http://127.0.0.1:9/raibid/raibid-config"]


def raibid(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raibid_gitops.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def _leaves(parser: argparse.ArgumentParser,
            path: tuple[str, ...] = ()) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command under ``parser`` that has no subcommands, by its words."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, sub in subs[0].choices.items():
        out.update(_leaves(sub, path + (name,)))
    return out


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _group(name: str) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    root = build_parser()
    sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return _leaves(sub.choices[name], (name,))


class TestEveryCommandHasTheOptions:
    def test_gitops_commands_take_C_and_o(self):
        leaves = _group("gitops")
        assert ("gitops", "pr", "close") in leaves and len(leaves) >= 16
        for words, parser in leaves.items():
            if words[-1] == "credential":  # git's credential-helper protocol: no repository, no format
                continue
            c, o = _option(parser, "-C"), _option(parser, "-o")
            assert c is not None, f"{' '.join(words)} has no -C"
            assert o is not None and o.type is output_format, f"{' '.join(words)} has no common -o"

    def test_queue_commands_take_o(self):
        for words, parser in _group("queue").items():
            if words[-1] == "serve-webhooks":  # a server: no result to format
                continue
            o = _option(parser, "-o")
            assert o is not None and o.type is output_format, f"{' '.join(words)} has no common -o"


class TestOutputValues:
    @pytest.mark.parametrize("fmt", [*FORMATS, "table"])
    def test_every_value_on_every_local_command(self, config_repo: Path, fmt: str):
        before = git_state(config_repo)
        for args in (["verify"], ["render"], ["get", "agents.maxReplicas"], ["get"], ["schema"],
                     ["set", "agents.maxReplicas=6", "--dry-run"]):
            r = raibid("gitops", *args, "-C", str(config_repo), "-o", fmt)
            assert r.returncode == 0, (args, r.stderr)
            if fmt == "json":
                json.loads(r.stdout)
        assert git_state(config_repo) == before

    def test_json_and_yaml_are_the_same_data(self, config_repo: Path):
        from ruamel.yaml import YAML

        for args in (["verify"], ["get"], ["set", "agents.maxReplicas=6", "--dry-run"]):
            j = json.loads(raibid("gitops", *args, "-C", str(config_repo), "-o", "json").stdout)
            y = YAML(typ="safe").load(raibid("gitops", *args, "-C", str(config_repo), "-o", "yaml").stdout)
            assert j == y, args

    def test_render_json_is_one_list(self, config_repo: Path):
        data = json.loads(raibid("gitops", "render", "-C", str(config_repo), "-o", "json").stdout)
        assert data["kind"] == "List" and {o["kind"] for o in data["items"]} >= {"ScaledJob", "ConfigMap"}

    def test_init_data_output(self, tmp_path: Path):
        r = raibid("gitops", "init", "-C", str(tmp_path / "cfg"), "-o", "json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["path"] == str(tmp_path / "cfg") and len(data["commit"]) == 40

    @pytest.mark.parametrize("bad", ["xml", "", "JSON", "text ", "text\n", "x" * 5000, "-"])
    @pytest.mark.parametrize("words", [["verify"], ["get"], ["status"], ["pr", "list"], ["sync"],
                                       ["set", "agents.maxReplicas=6"], ["suspend"]])
    def test_bad_value_refused_before_anything(self, config_repo: Path, bad: str, words: list[str]):
        before = git_state(config_repo)
        r = raibid("gitops", *words, "-C", str(config_repo), f"--output={bad}", env=NO_CLUSTER)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "is not an output format" in r.stderr and "text, wide, json, yaml" in r.stderr
        assert "x" * 100 not in r.stderr, "the rejected value is echoed whole"
        assert "/nonexistent" not in r.stderr and "Gitea" not in r.stderr and "Traceback" not in r.stderr
        assert r.stdout == "" and git_state(config_repo) == before


class TestDirOption:
    @pytest.mark.parametrize("words", [["verify"], ["render"], ["get"], ["schema"], ["set", "agents.maxReplicas=6"],
                                       ["status"], ["diff"], ["sync"], ["suspend"], ["resume"],
                                       ["pr", "list", *NO_GITEA], ["pr", "close", "1", *NO_GITEA]])
    @pytest.mark.parametrize("kind", ["file", "missing", "not a repository"])
    def test_bad_dir_refused_before_any_backend(self, config_repo: Path, tmp_path: Path, words: list[str], kind: str):
        target = {"file": config_repo / layout.SETTINGS_PATH, "missing": config_repo / "nope",
                  "not a repository": tmp_path}[kind]
        before = git_state(config_repo)
        r = raibid("gitops", *words, "-C", str(target), env=NO_CLUSTER)
        assert r.returncode == 2, r.stdout + r.stderr
        expected = {"file": "is not a directory", "missing": "does not exist",
                    "not a repository": "is not inside a raibid config repository"}[kind]
        assert expected in r.stderr and "Traceback" not in r.stderr
        assert "/nonexistent" not in r.stderr and "cannot reach Gitea" not in r.stderr
        assert git_state(config_repo) == before

    def test_a_subdirectory_finds_its_repository(self, config_repo: Path):
        r = raibid("gitops", "get", "agents.maxReplicas", "-C", str(config_repo / "base"))
        assert r.returncode == 0 and r.stdout == "8\n"

    def test_verify_and_render_take_both_spellings(self, config_repo: Path, tmp_path: Path):
        for args in (["verify", str(config_repo)], ["verify", "-C", str(config_repo)],
                     ["render", str(config_repo)], ["render", "-C", str(config_repo)],
                     ["verify", str(config_repo), "-C", str(config_repo / ".")]):
            r = raibid("gitops", *args, cwd=tmp_path)
            assert r.returncode == 0, (args, r.stderr)
        r = raibid("gitops", "verify", str(config_repo), "-C", str(tmp_path))
        assert r.returncode == 2 and "given twice" in r.stderr

    def test_init_takes_C_and_refuses_two_targets(self, tmp_path: Path):
        r = raibid("gitops", "init", str(tmp_path / "a"), "-C", str(tmp_path / "b"))
        assert r.returncode == 2 and "given twice" in r.stderr
        r = raibid("gitops", "init")
        assert r.returncode == 2 and "init needs the directory" in r.stderr
        assert list(tmp_path.iterdir()) == []
        r = raibid("gitops", "init", "-C", str(tmp_path / "cfg"))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "cfg" / layout.SETTINGS_PATH).is_file()


class TestPullRequestNumbers:
    @pytest.mark.parametrize("bad", ["abc", "0", "7x", "#", "", " 7", "7\n", "1" * 19, "9" * 5000, "0x10", "٣"])
    @pytest.mark.parametrize("command", ["show", "verify", "approve", "merge", "close"])
    def test_refused_before_gitea_is_asked(self, config_repo: Path, bad: str, command: str):
        r = raibid("gitops", "pr", command, bad, "-C", str(config_repo), *NO_GITEA)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "is not a pull request number" in r.stderr and "cannot reach Gitea" not in r.stderr
        assert "9" * 100 not in r.stderr

    @pytest.mark.parametrize("good", ["7", "#7", "1" * 18])
    def test_accepted_forms_reach_gitea(self, config_repo: Path, good: str):
        # Gitea at port 9 is not there: getting that far means the number was taken.
        r = raibid("gitops", "pr", "show", good, "-C", str(config_repo), *NO_GITEA, env={"RAIBID_GITEA_TOKEN": "x"})
        assert r.returncode == 2 and "cannot reach Gitea" in r.stderr, r.stderr


class TestPartialParser:
    """`raibid gitops set ...` builds only the parsers its words reach; what it parses must be
    exactly what the whole parser parses, and anything else gets the whole parser."""

    def test_the_command_map_is_what_the_areas_register(self):
        import importlib

        from raibid_gitops.cli import gitops

        registered = {}
        for area in gitops.AREAS:
            sub = argparse.ArgumentParser().add_subparsers()
            importlib.import_module(f"raibid_gitops.cli.{area}").register(sub)
            registered.update(dict.fromkeys(sub.choices, area))
        assert registered == gitops.COMMANDS

    @pytest.mark.parametrize("argv", [
        ["gitops", "set", "agents.maxReplicas=3", "--pr", "-m", "x"],
        ["--debug", "gitops", "verify", "-C", "/tmp", "-o", "json"],
        ["gitops", "pr", "merge", "7", "--style", "squash"],
        ["gitops", "status", "-o", "wide"],
        ["queue", "submit", "--repo", "a/b", "--ref", "main"],
        ["tui", "-n", "x"],
        ["bootstrap", "--gitea-url", "http://127.0.0.1:3000", "--dry-run"],
    ])
    def test_the_same_namespace_as_the_whole_parser(self, argv: list[str]):
        whole = build_parser().parse_args(argv)
        partial = build_parser(argv)
        assert partial.parse_args(argv) == whole
        groups = next(a for a in partial._actions if isinstance(a, argparse._SubParsersAction)).choices
        assert list(groups) == [next(w for w in argv if not w.startswith("-"))]  # only the group named

    @pytest.mark.parametrize("argv,words", [
        (["gitops", "sett", "x=1"], "invalid choice: 'sett'"),
        (["gitopz"], "invalid choice: 'gitopz'"),
    ])
    def test_a_word_naming_nothing_lists_every_choice(self, argv: list[str], words: str):
        proc = raibid(*argv)
        assert proc.returncode == 2 and words in proc.stderr
        listed = proc.stderr.split(words, 1)[1]
        expected = ("set", "verify", "sync") if argv[0] == "gitops" else ("gitops", "queue", "tui", "bootstrap")
        assert all(f"'{w}'" in listed for w in expected), proc.stderr

    def test_help_before_the_command_lists_everything(self):
        proc = raibid("-h", "gitops")
        assert proc.returncode == 0 and all(g in proc.stdout for g in ("gitops", "queue", "tui", "bootstrap"))
        proc = raibid("gitops", "-h", "set")
        assert proc.returncode == 0 and all(w in proc.stdout for w in ("set", "verify", "sync"))
