"""The settings model: defaults, ranges, cross-field rules, located messages, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raibid_gitops import settings as sm
from raibid_gitops import yamlio
from raibid_gitops.errors import SettingsError
from raibid_gitops.gitops import settingsdoc

TEMPLATE = Path(__file__).resolve().parent.parent / "overlays" / "dgx-spark" / "settings.yaml"

REQUIRED_KEYS = """cluster.namespace cluster.capacity.cpu cluster.capacity.memory queue.redisAddress queue.stream
queue.consumerGroup queue.deadLetterStream queue.maxLen queue.maxDeliveries queue.claimIdleSeconds
queue.heartbeatSeconds agents.image agents.minReplicas agents.maxReplicas agents.cpu agents.memory agents.gpus
agents.jobTimeoutSeconds agents.ttlSecondsAfterFinished scaling.pollingInterval scaling.lagCount
scaling.activationLagCount scaling.scalingStrategy scaling.successfulJobsHistoryLimit
scaling.failedJobsHistoryLimit gitea.url gitea.owner gitea.repo gitea.branch flux.interval flux.path flux.prune
flux.timeout""".split()


def test_every_required_key_exists_and_template_equals_defaults():
    keys = set(sm.all_keys())
    assert set(REQUIRED_KEYS) <= keys
    assert sm.load_path(TEMPLATE) == sm.defaults()


def test_defaults_fit_a_dgx_spark():
    s = sm.defaults()
    assert s.agents.max_replicas == 8 and s.agents.cpu == "2" and s.agents.memory == "4Gi"
    assert s.cluster.capacity.cpu == "20" and s.cluster.capacity.memory == "128Gi"
    assert s.queue.stream == "raibid:jobs" and s.queue.consumer_group == "raibid-agents"
    assert s.queue.dead_letter_stream == "raibid:jobs:dead"


def test_template_starts_with_schema_line():
    assert TEMPLATE.read_text().startswith("# yaml-language-server: $schema=./settings.schema.json\n")


def test_round_trip_is_byte_identical():
    text = TEMPLATE.read_text()
    assert yamlio.dump_rt(yamlio.load_rt(text, "settings.yaml")) == text
    assert settingsdoc.update_text(text, {}) == text


def test_update_changes_only_the_changed_line():
    text = TEMPLATE.read_text()
    new = settingsdoc.update_text(text, {"agents.maxReplicas": 6, "cluster.capacity.cpu": "16"})
    diff = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert diff == [('    cpu: "20"', '    cpu: "16"'), ("  maxReplicas: 8", "  maxReplicas: 6")]


def test_update_quotes_yaml11_words():
    text = TEMPLATE.read_text()
    new = settingsdoc.update_text(text, {"gitea.branch": "on"})
    assert '  branch: "on"\n' in new
    assert sm.load_text(new).gitea.branch == "on"


BAD = [
    ("wrong type", "agents:\n  maxReplicas: lots\n", "agents.maxReplicas", "integer"),
    ("out of range", "agents:\n  maxReplicas: 0\n", "agents.maxReplicas", "greater than or equal to 1"),
    ("unknown key", "agents:\n  maxReplica: 4\n", "agents.maxReplica", "did you mean agents.maxReplicas"),
    ("min > max", "agents:\n  minReplicas: 5\n  maxReplicas: 2\n", "agents.minReplicas", "agents.maxReplicas"),
    ("over capacity cpu", "agents:\n  maxReplicas: 11\n", "agents.maxReplicas", "cluster.capacity.cpu"),
    ("over capacity memory", "agents:\n  memory: 20Gi\n", "agents.maxReplicas", "cluster.capacity.memory"),
    ("claim vs heartbeat", "queue:\n  claimIdleSeconds: 20\n  heartbeatSeconds: 10\n", "queue.claimIdleSeconds",
     "queue.heartbeatSeconds"),
    ("bad enum", "scaling:\n  scalingStrategy: fastest\n", "scaling.scalingStrategy", "accurate"),
    ("bad quantity", "agents:\n  cpu: two\n", "agents.cpu", "not a Kubernetes quantity"),
    ("yaml 1.1 trap", "flux:\n  prune: on\n", "flux.prune", "YAML 1.1"),
    ("string for bool", 'flux:\n  prune: "yes"\n', "flux.prune", "boolean"),
    ("redis in other namespace", "queue:\n  redisAddress: raibid-redis.other.svc.cluster.local:6379\n",
     "queue.redisAddress", "cluster.namespace"),
    ("unknown section", "agent:\n  maxReplicas: 4\n", "agent", "did you mean"),
]


@pytest.mark.parametrize("name,text,field,words", BAD, ids=[b[0] for b in BAD])
def test_invalid_settings_are_located(name, text, field, words):
    with pytest.raises(SettingsError) as info:
        sm.load_text(text, "overlays/dgx-spark/settings.yaml")
    problems = info.value.problems
    assert problems, str(info.value)
    assert any(p.field == field and words in p.message for p in problems), [p.format() for p in problems]
    assert all(p.line for p in problems), "every problem names its line"
    assert "overlays/dgx-spark/settings.yaml:" in str(info.value)


def test_malformed_yaml_names_file_and_line():
    with pytest.raises(SettingsError) as info:
        sm.load_text("agents:\n  maxReplicas: [1,\n  cpu: 2\n", "s.yaml")
    assert "s.yaml:" in str(info.value) and "malformed YAML" in str(info.value)


def test_assignments_typed_and_hinted():
    assert sm.parse_assignments(["agents.maxReplicas=6", "flux.prune=false"]) == {
        "agents.maxReplicas": 6, "flux.prune": False}
    with pytest.raises(SettingsError, match="did you mean agents.maxReplicas"):
        sm.parse_assignments(["agents.maxReplica=6"])
    with pytest.raises(SettingsError, match="must be true or false"):
        sm.parse_assignments(["flux.prune=yes"])
    with pytest.raises(SettingsError, match="not KEY=VALUE"):
        sm.parse_assignments(["agents.maxReplicas"])


def test_hash_tracks_values_not_comments():
    text = TEMPLATE.read_text()
    assert sm.load_text(text).hash() == sm.load_text(text.replace("# Seconds", "# seconds")).hash()
    changed = settingsdoc.update_text(text, {"agents.gpus": 1, "agents.maxReplicas": 1})
    assert sm.load_text(text).hash() != sm.load_text(changed).hash()


def test_json_schema_has_ranges_enums_and_rejects_unknown():
    schema = sm.json_schema()
    text = json.dumps(schema)
    assert '"accurate"' in text and "additionalProperties" in text
    agents = schema["$defs"]["Agents"]["properties"]
    assert agents["maxReplicas"]["minimum"] == 1


def test_no_string_setting_takes_a_trailing_newline():
    """Issue 12 item 4, closed for the class: every string setting, given its own default plus a
    newline (what `$` instead of a whole-string match lets through), is refused."""
    from raibid_gitops.errors import SettingsError
    from raibid_gitops.settings import all_keys, apply_assignments, defaults

    base = defaults()
    strings = [k for k in all_keys() if isinstance(base.get(k), str)]
    assert len(strings) >= 15
    for key in strings:
        for bad in (base.get(key) + "\n", " " + base.get(key), base.get(key) + " "):
            with pytest.raises(SettingsError):
                apply_assignments(base, {key: bad})


def test_integers_are_strict():
    from raibid_gitops.errors import SettingsError
    from raibid_gitops.settings import all_keys, apply_assignments, defaults

    base = defaults()
    ints = [k for k in all_keys() if type(base.get(k)) is int]
    assert "queue.retention.finishedJobs" in ints
    for key in ints:
        for bad in (True, float(base.get(key)), str(base.get(key))):
            with pytest.raises(SettingsError):
                apply_assignments(base, {key: bad})
