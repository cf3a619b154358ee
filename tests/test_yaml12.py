"""raibid_gitops.yaml12: the fast loader gives exactly what the YAML 1.2 reference loader
(ruamel, pure, safe) gives — the same data with the same types, or the same error."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path
from typing import Any

import pytest

from raibid_gitops import yaml12
from raibid_gitops.gitops import kustomize, layout
from raibid_gitops.gitops.generate import init


def same(a: Any, b: Any) -> bool:
    """Equal, with equal types all the way down (True is not 1) and equal key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (list(a) == list(b) and all(same(k1, k2) for k1, k2 in zip(a, b, strict=True))
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # NaN


def outcome(load: Any, text: str) -> Any:
    try:
        return ("ok", load(text))
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(exc), str(exc))


def assert_equivalent(text: str) -> None:
    fast, ref = outcome(yaml12.load_all, text), outcome(yaml12.load_all_reference, text)
    if ref[0] == "ok":
        assert fast[0] == "ok" and same(fast[1], ref[1]), (text, fast, ref)
    else:
        assert fast == ref, text


class TestRenderedObjects:
    """Every object kustomize renders from a config repository, loaded both ways."""

    @pytest.mark.parametrize("assignments", [
        [],
        ["agents.gpus=1", "agents.maxReplicas=1", "agents.memory=6Gi", "flux.interval=5m", "flux.wait=false"],
        ["cluster.namespace=ci-x", "queue.redisAddress=raibid-redis.ci-x.svc.cluster.local:6380",
         'agents.defaultPipeline=[{"name":"t","run":"echo yes: on\\n\\tx # y"}]', "gitea.url=https://git.example/x"],
    ])
    def test_same_objects_fast(self, tmp_path: Path, assignments: list[str]) -> None:
        repo = init(tmp_path / "config", assignments=assignments).path
        for rel in (layout.OVERLAY_DIR, layout.CLUSTER_DIR):
            text = kustomize.build(repo / rel)
            fast = yaml12._fast(text)
            ref = yaml12.load_all_reference(text)
            assert ref, rel
            if "\t" not in text:
                assert fast is not None, f"the fast path was not taken for {rel}"
            assert same(yaml12.load_all(text), ref)
            for got, want in zip(fast or [], ref, strict=False):
                assert same(got, want), (rel, got.get("kind"))


#: Plain scalars whose YAML 1.2 reading differs from YAML 1.1's, or that are near a rule's edge.
SCALARS = [
    "yes", "no", "on", "off", "y", "n", "Yes", "NO", "true", "True", "TRUE", "tRUE", "false", "False",
    "null", "Null", "NULL", "nULL", "~", "", "0", "-0", "+0", "007", "0777", "08", "0o17", "0x1F", "0b101",
    "1_000", "1:30", "190:20:30", "12", "-12", "+12", "1.5", "1e3", "1E3", ".5", "-.inf", ".NaN", ".nan",
    "2024-01-01", "2024-01-01T10:00:00Z", "2001-12-14 21:59:43.10 -5", "=", "<<", "0.", "1.", "12abc",
    "abc", "a b", "-", "--", "3Gi", "500m", "0x", "0o", "1__0", "9" * 30, "9" * 1200,
]


class TestResolverTable:
    def test_the_copy_is_ruamels_table(self) -> None:
        """yaml12 resolves plain scalars with a copy of ruamel's YAML 1.2 table (importing ruamel
        costs every command about 10 ms): it must be the table of the ruamel installed."""
        from ruamel.yaml.resolver import implicit_resolvers

        ruamels = [(str(tag), regexp.pattern, regexp.flags, list(first))
                   for versions, tag, regexp, first in implicit_resolvers if (1, 2) in versions]
        ours = [(tag, pattern, re.compile(pattern, flags).flags, first)
                for tag, pattern, flags, first in yaml12.RESOLVERS_1_2]
        assert ours == ruamels

    def test_the_printable_characters_are_ruamels(self) -> None:
        from ruamel.yaml.reader import Reader as RuamelReader
        from yaml.reader import Reader

        assert Reader.NON_PRINTABLE.pattern == RuamelReader.NON_PRINTABLE.pattern
        assert Reader.NON_PRINTABLE.flags == RuamelReader.NON_PRINTABLE.flags

    def test_loading_needs_no_ruamel(self) -> None:
        import subprocess
        import sys

        code = ("import sys; from raibid_gitops import yaml12; "
                "docs = yaml12.load_all('a: 1\\nb: [true, ~, x]\\nc:\\n'); "
                "assert docs == [{'a': 1, 'b': [True, None, 'x'], 'c': None}], docs; "
                "print(sorted(m for m in sys.modules if m.startswith('ruamel')))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "[]"


class TestScalars:
    @pytest.mark.parametrize("scalar", SCALARS)
    @pytest.mark.parametrize("template", ["a: {}\n", "- {}\n", "{}: x\n", "a: [{}]\n", "a: {{b: {}}}\n",
                                          "a: '{}'\n", 'a: "{}"\n', "a: |\n  {}\n"])
    def test_scalar(self, scalar: str, template: str) -> None:
        assert_equivalent(template.format(scalar))

    def test_random_documents(self) -> None:
        rng = random.Random(14)
        for _ in range(300):
            lines = []
            for i in range(rng.randint(1, 6)):
                value = rng.choice(SCALARS[:-1])
                style = rng.choice(["plain", "plain", "single", "double", "flow"])
                if style == "single":
                    value = "'" + value.replace("'", "''") + "'"
                elif style == "double":
                    value = '"' + value + '"'
                elif style == "flow":
                    value = f"[{value or '~'}, {{k: {value or '~'}}}]"
                lines.append(f"k{i}: {value}")
            assert_equivalent("\n".join(lines) + "\n")


class TestFallbacks:
    """Texts the fast path hands to the reference loader: the result is the reference's."""

    @pytest.mark.parametrize("text", [
        "a: &x 1\nb: *x\n",                     # alias: sharing
        "a: &x {b: 1}\nc: *x\n",
        "a: 1\na: 2\n",                         # duplicate key: the reference's error
        "1: a\ntrue: b\n",                      # 1 == True: a duplicate to the reference too
        "%YAML 1.1\n---\na: yes\n",             # a directive changes the rules
        "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
        "? [a, b]\n: 1\n",                      # complex key
        "a: !!str 12\n",                        # explicit tags
        "a: !!binary aGk=\n",
        "a: !custom x\n",
        "<<: {a: 1}\nb: 2\n",                   # merge key
        "a:\n\t- 1\n",                          # tab
        "a: 1\r\nb: 2\r\n",                     # CR
        "a: x\x85y\n",                          # NEL: a line break in YAML 1.1 only
        "a: x\u2028y\n",
        "\ufeffa: 1\n",
        "a: \x07\n",                            # not printable
        "{a: 1",                                # malformed
        "a: b: c\n",
        "- [" * 3000 + "]" * 3000 + "\n",       # deep flow nesting
        "a:\n" + "".join(" " * (2 * i) + f"k{i}:\n" for i in range(1, 200)) + " " * 400 + "x: 1\n",
    ])
    def test_fallback_same_result(self, text: str) -> None:
        assert yaml12._fast(text) is None
        assert_equivalent(text)

    def test_without_libyaml(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(yaml12, "_loader", False)
        assert yaml12._fast("a: 1\n") is None
        assert yaml12.load_all("a: yes\nb: 1\n") == [{"a": "yes", "b": 1}]

    def test_documents(self) -> None:
        for text in ("", "---\n", "---\n---\na: 1\n", "a: 1\n---\nb: 2\n...\n", "x\n", "--- |\n  text\n"):
            assert_equivalent(text)
        assert all(same(a, b) for a, b in itertools.zip_longest(yaml12.load_all("---\n---\na: 1\n"), [None, {"a": 1}]))


class TestFieldPaths:
    """setters' line -> field path map from libyaml's nodes equals the round-trip walk's."""

    def texts(self) -> list[str]:
        from raibid_gitops.gitops import setters

        root = layout.templates_dir()
        files = sorted(p for pattern in setters.MARKED_GLOBS for p in root.glob(pattern))
        assert files
        return [p.read_text(encoding="utf-8") for p in files] + [
            "- op: replace\n  path: /spec/x\n  value: 3 # marker\n- op: add\n  path: /a\n  value: {b: 1}\n",
            "a:\n  b: [1, {c: 2}]\n  d:\n    - e: 1\n      f: 2\n---\ng: 1\n",
            "1: a\ntrue: b\n",
            "a: &x 1\nb: *x\n",
            "- op: test\n  path: 12\n  value: 1\n",
            "{a: 1, b: {c: 2}}\n",
            "a: 1\na: 2\n",
            "",
        ]

    def test_same_paths(self) -> None:
        from raibid_gitops.gitops import setters

        fast_used = 0
        for text in self.texts():
            fast = setters._field_paths_fast(text)
            if fast is not None:
                fast_used += 1
                assert fast == setters._field_paths_rt(text), text
            assert setters._field_paths(text) == setters._field_paths_rt(text)
        assert fast_used >= 5


class TestSettingsFast:
    """yamlio.load_settings_fast gives what the round-trip path gives (data and key lines), and
    load_text's verdict is the same with it as without it."""

    @staticmethod
    def reference(text: str) -> Any:
        from raibid_gitops import yamlio

        doc = yamlio.load_settings_doc(text, "settings.yaml")
        return yamlio.to_plain(doc), yamlio.key_lines(doc)

    @staticmethod
    def verdict(text: str, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
        from raibid_gitops import settings as settings_mod
        from raibid_gitops import yamlio

        settings_mod._LOADED.clear()
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(yamlio, "load_settings_fast", lambda *_a: None)
            try:
                return ("ok", settings_mod.load_text(text).data())
            except Exception as exc:  # noqa: BLE001 - the error is the verdict
                return ("error", type(exc), str(exc), [p.to_dict() for p in getattr(exc, "problems", [])])

    def texts(self) -> list[str]:
        base = (layout.templates_dir() / layout.SETTINGS_PATH).read_text(encoding="utf-8")
        rng = random.Random(1414)
        out = [base,
               base.replace("maxReplicas: 8", "maxReplicas: 80"),                    # invalid: capacity
               base.replace("maxReplicas: 8", "maxReplicas: yes"),                   # a YAML-1.1 trap
               base.replace("maxReplicas: 8", "maxReplicas: '8'"),
               base.replace("maxReplicas: 8", "maxReplicas: 0x8"),
               base.replace("maxReplicas: 8", "maxReplicas: 8.0"),
               base.replace("maxReplicas: 8", "maxReplicas:\n    8"),
               base + "\nextraSection:\n  a: 1\n",
               "agents:\n  defaultPipeline:\n    -\n      name: t\n      run: make\n    - {name: u, run: x}\n",
               "agents:\n  defaultPipeline: [{name: t, run: make, timeoutSeconds: 60}]\n# end\n",
               "queue: {maxLen: 200, stream: 'a:b'}\nagents: {cpu: 2, memory: 4Gi}\n",
               "'agents':\n  maxReplicas: 4\n", "agents:\n  maxReplicas: &n 4\n  minReplicas: *n\n",
               "", "---\n", "agents: [1, 2]\n", "- a\n", "a: 1\n---\nb: 2\n",
               "agents:\n  maxReplicas: 4\n  maxReplicas: 5\n"]
        lines = base.splitlines()
        for _ in range(150):
            mutated = list(lines)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(mutated))
                line = mutated[i]
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, _rest = line.partition(":")
                    value = rng.choice(SCALARS[:-2] + ["'quoted'", '"dq"', "[]", "{}", "|\n      block"])
                    mutated[i] = f"{key}: {value}"
                else:
                    mutated.insert(i, "# a comment" if rng.random() < 0.5 else "")
            out.append("\n".join(mutated) + "\n")
        return out

    def test_same_data_lines_and_verdicts(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from raibid_gitops import yamlio

        fast_used = 0
        for text in self.texts():
            try:
                fast = yamlio.load_settings_fast(text, "settings.yaml")
            except Exception as exc:  # noqa: BLE001 - must then be the reference's own error
                with pytest.raises(type(exc)):
                    self.reference(text)
                continue
            if fast is not None:
                fast_used += 1
                ref = self.reference(text)
                assert same(fast[0], ref[0]) and fast[1] == ref[1], text
            assert self.verdict(text, True, monkeypatch) == self.verdict(text, False, monkeypatch), text
        assert fast_used > 50


class TestEvents:
    """settingsdoc's spans from libyaml's events equal those from ruamel's (set edits in place
    with them)."""

    def test_same_spans(self) -> None:
        from ruamel.yaml import YAML

        from raibid_gitops.gitops import settingsdoc

        used = 0
        for text in TestSettingsFast().texts():
            ruamel = lambda t: YAML(typ="rt").parse(t)  # noqa: E731
            try:
                want = settingsdoc._scan(text, ruamel)
            except Exception as exc:  # noqa: BLE001 - ruamel refuses it: libyaml's events must not be used
                refused = yaml12.events(text)
                if refused is not None:  # then they fail the same way
                    with pytest.raises(type(exc)):
                        settingsdoc._scan(text, lambda _t, evs=refused: evs)
                continue
            fast = yaml12.events(text)
            if fast is not None:
                used += 1
                assert settingsdoc._scan(text, lambda _t, evs=fast: evs) == want, text
        assert used > 100


class TestLoadPlain:
    """yamlio.load_plain (libyaml where certain) gives what to_plain(load_rt()) gives, or the same
    refusal: on every kustomization of the templates and on texts that must fall back."""

    @staticmethod
    def both(text: str) -> tuple[Any, Any]:
        from raibid_gitops import yamlio
        from raibid_gitops.errors import SettingsError

        out = []
        for load in (lambda t: yamlio.load_plain(t, "k.yaml"), lambda t: yamlio.to_plain(yamlio.load_rt(t, "k.yaml"))):
            try:
                out.append(("ok", load(text)))
            except SettingsError as exc:
                out.append(("error", exc.message))
        return out[0], out[1]

    def test_templates_and_fallbacks(self) -> None:
        import os

        texts = [Path(top, "kustomization.yaml").read_text(encoding="utf-8")
                 for top, _dirs, names in os.walk(layout.templates_dir(), followlinks=True)
                 if "kustomization.yaml" in names]
        assert len(texts) >= 3
        texts += [
            "components: [topology]\nresources:\n  - ../../base\n",
            "a: &x [1, 2]\nb: *x\n",  # an alias: ruamel reads it
            "a: 1.5\nb: 0x10\nc: 2001-12-14\n",  # floats, hex, timestamps: ruamel's types
            "a:\n\t- b\n",  # a tab
            "<<: {a: 1}\nb: 2\n",  # a merge key
            "a: 1\na: 2\n",  # a duplicate key: ruamel's refusal
            "a: [\n",  # malformed
            "",  # no document
            "x: " + "[" * 40 + "]" * 40 + "\n",  # nesting beyond the bound
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        ]
        for text in texts:
            fast, reference = self.both(text)
            assert fast == reference, text
