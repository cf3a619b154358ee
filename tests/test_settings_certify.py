"""The settings fast path (raibid_gitops/settings/certify.py) against the validator of record
(the pydantic model): never valid where the model refuses, the same data where both accept,
and the shipped schema and the views in step with the model."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raibid_gitops import settings as sm
from raibid_gitops.errors import SettingsError
from raibid_gitops.settings import certify, model, rules, views

TEMPLATE = Path(sm.__file__).resolve().parents[1] / "templates" / "overlays" / "dgx-spark" / "settings.yaml"


def model_verdict(data: Any) -> dict[str, Any] | None:
    try:
        return model.validate(data, "settings.yaml").data()
    except SettingsError:
        return None


# ---------------------------------------------------------------------------------------------
# In step with the model


def test_shipped_schema_is_the_models():
    shipped = certify.SCHEMA_PATH.read_text(encoding="utf-8")
    assert shipped == model.schema_text(), (
        "raibid_gitops/settings/settings.schema.json is stale: run `python -m raibid_gitops.settings.model`")
    assert sm.schema_text() == shipped and sm.json_schema() == model.json_schema()


def test_views_have_the_models_fields_in_its_order():
    pairs = [(views.Settings, model.Settings)]
    seen = set()
    while pairs:
        view, pyd = pairs.pop()
        if view in seen:
            continue
        seen.add(view)
        assert view.__name__ == pyd.__name__
        assert [name for name, _ in view.field_keys()] == list(pyd.model_fields)
        assert [key for _, key in view.field_keys()] == [f.alias for f in pyd.model_fields.values()]
        for name, nested in view.NESTED.items():
            annotation = pyd.model_fields[name].annotation
            inner = annotation.__args__[0] if getattr(annotation, "__args__", None) else annotation
            assert inner.__name__ == nested.__name__, name
            pairs.append((nested, inner))
    assert {v.__name__ for v in seen} == {"Settings", "Cluster", "Nodes", "Capacity", "Queue", "Sentinel",
                                          "Retention", "Agents", "Step", "Scaling", "Gitea", "Flux"}


def test_every_rule_names_a_class_and_field_of_the_schema():
    schema = model.json_schema()
    classes = {**schema["$defs"], "Settings": schema}
    for cls, key in (*rules.FIELD_BEFORE, *rules.FIELD_AFTER):
        assert key in classes[cls]["properties"], (cls, key)
    for cls in (*rules.MODEL_BEFORE, *rules.MODEL_AFTER):
        assert cls in classes, cls


def test_defaults_and_template_are_certified_without_pydantic():
    """The fast path is taken for what people and `set` actually load: a process that loads the
    template and applies a change never imports pydantic."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from raibid_gitops import settings as sm\n"
        f"s = sm.load_path(Path({str(TEMPLATE)!r}))\n"
        "s = sm.apply_assignments(s, sm.parse_assignments(['agents.maxReplicas=5', 'flux.interval=2m']))\n"
        "assert s.agents.max_replicas == 5 and sm.defaults().agents.max_replicas == 8\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_refusal_is_worded_by_the_model():
    with pytest.raises(SettingsError) as err:
        sm.validate_data({"agents": {"maxReplicas": 0, "minReplicas": "1"}, "bogus": 1})
    fields = {p.field for p in err.value.problems}
    assert fields == {"agents.maxReplicas", "agents.minReplicas", "bogus"}


def test_a_valid_value_the_certifier_leaves_alone_is_still_accepted():
    """Non-ASCII text in a field without a pattern is certified; in a patterned field the
    certifier is not sure and the model decides (here: accepts, normalised the same way)."""
    pipeline = [{"name": "test", "run": "echo grüße"}]
    s = sm.validate_data({"agents": {"defaultPipeline": pipeline}})
    assert s.agents.default_pipeline[0].run == "echo grüße"
    assert certify.certify({"gitea": {"url": "http://gitea.example:3000/ä/"}}) is None
    s = sm.validate_data({"gitea": {"url": "http://gitea.example:3000/ä/"}})
    assert s.gitea.url == "http://gitea.example:3000/ä" == model_verdict({"gitea": {"url": "http://gitea.example:3000/ä/"}})["gitea"]["url"]


# ---------------------------------------------------------------------------------------------
# The same verdicts on thousands of mutations

#: Values of every kind the model meets in hostile files: bounds, wrong types, text that a
#: loose regex lets through (newlines, spaces, unicode look-alikes), quantities in every form.
ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 5, 8, 20, 59, 60, 63, 64, 65, 99, 100, 101, 255, 256, 65535, 65536,
    10**18, -(10**18), 1.0, 2.5, 1e20, float("nan"), "", " ", "\n", "0", "1", "2", "20", "2\n", " 2", "500m", "4Gi",
    "128Gi", "129Gi", "1Ti", "1e3", "0.5", "-1", "abc", "raibid-ci", "Raibid-CI", "raibid:jobs", "raibid:jobs:dead",
    "main", "main\n", "feature/x", "a..b", "a.lock", "-x", "http://gitea:3000", "http://gitea:3000/",
    "https://u@gitea:3000", "http://gitea:3000/a b", "./overlays/dgx-spark", "./../x", "1m", "5m", "90s",
    "1h30m", "1m\n", "host:6379", "host:0", "host:99999", "raibid-redis.other.svc.cluster.local:6379",
    "a:1,b:2", "a:1,b:2,c:3,d:4,e:5,f:6", "single", "sentinel", "accurate", "eager", "Accurate", "x" * 64,
    "x" * 65, "x" * 513, "ｍain", "main\u200b", "é", "\t", [], [{}], [{"name": "a", "run": "b"}],
    [{"name": "a", "run": ""}], [{"name": "a", "run": "b", "timeoutSeconds": 0}], [{"name": "a\n", "run": "b"}],
    [{"name": "a", "run": "b", "extra": 1}], [{"name": "a", "run": "b"}] * 101, {}, {"x": 1}, {"cpu": "2"},
]


def leaf_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in data.items():
        path = (*prefix, key)
        out.append(path)
        if isinstance(value, dict):
            out += leaf_paths(value, path)
    return out


def mutate(rng: random.Random, base: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = leaf_paths(data)
        if not paths:
            break
        path = rng.choice(paths)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = rng.random()
        if action < 0.12:
            del parent[path[-1]]
        elif action < 0.17:
            parent[rng.choice(("bogus", "max_replicas", "maxreplicas", path[-1] + "s"))] = 1
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


BASES = [
    sm.defaults().data(),
    {},
    {"queue": {"mode": "sentinel"}},
    {"cluster": {"nodes": {"count": 3, "cpu": "20", "memory": "128Gi", "gpus": 1},
                 "capacity": {"cpu": "60", "memory": "384Gi"}}, "agents": {"maxReplicas": 9, "cpu": "6"}},
    {"cluster": {"capacity": {"cpu": "40", "memory": "256Gi"}}},  # before `nodes` existed
    {"agents": {"gpus": 1, "maxReplicas": 1}},
]


@pytest.mark.parametrize("seed", range(4))
def test_never_looser_than_the_model_and_the_same_data(seed: int):
    rng = random.Random(seed)
    both = model_only = refused = 0
    for i in range(1500):
        data = mutate(rng, BASES[i % len(BASES)])
        fast = certify.certify(copy.deepcopy(data))
        expected = model_verdict(copy.deepcopy(data))
        if fast is not None:
            assert expected is not None, f"certified what the model refuses: {json.dumps(data, default=str)[:2000]}"
            assert fast.data() == expected, json.dumps(data, default=str)[:2000]
            assert fast.hash() == sm.Settings.from_data(expected).hash()
            both += 1
        elif expected is not None:
            model_only += 1
        else:
            refused += 1
    # Not vacuous: most mutations the model accepts are certified, and many are refused.
    assert both > 4 * model_only and both > 150 and refused > 300, (both, model_only, refused)


def test_hostile_shapes_are_left_to_the_model():
    deep: Any = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    loop: list[Any] = []
    loop.append(loop)
    for data in ({"cluster": deep}, {"agents": {"defaultPipeline": loop}}, {1: 2}, {"agents": {"cpu": 10**400}},
                 {"agents": {"maxReplicas": 10**4000}}):
        assert certify.certify(data) is None


# ---------------------------------------------------------------------------------------------
# A repository's .raibid.yml: the same promise for the agent's pipeline model

STEP_VALUES: list[Any] = [
    None, True, 0, 1, 1800, 86400, 86401, -1, 1.5, "", "t", "make test", "a" * 64, "a" * 65, "a\n", "a b", "ü",
    "x" * 65536, "x" * 65537, [], {}, "timeoutSeconds",
]


def pipeline_verdict(data: Any) -> tuple[views.Step, ...] | None:
    from pydantic import ValidationError

    try:
        steps = model.Pipeline.model_validate(data, by_alias=True, by_name=False).steps
    except ValidationError:
        return None
    return tuple(views.Step(name=s.name, run=s.run, timeout_seconds=s.timeout_seconds) for s in steps)


@pytest.mark.parametrize("seed", range(2))
def test_pipelines_never_looser_than_the_model(seed: int):
    rng = random.Random(seed)
    base = {"steps": [{"name": "build", "run": "make", "timeoutSeconds": 600}, {"name": "test", "run": "make test"}]}
    both = refused = 0
    for _ in range(1500):
        data: Any = copy.deepcopy(base)
        for _ in range(rng.choice((1, 1, 2))):
            roll = rng.random()
            steps = data.get("steps") if isinstance(data, dict) else None
            if roll < 0.05:
                data = rng.choice(([], None, "steps", {"steps": []}, {"steps": [{"name": "a", "run": "b"}] * 101}))
            elif roll < 0.1 and isinstance(data, dict):
                data[rng.choice(("Steps", "extra", "step"))] = []
            elif isinstance(steps, list) and steps and isinstance(steps[0], dict):
                step = rng.choice(steps)
                key = rng.choice(("name", "run", "timeoutSeconds", "timeout_seconds", "bogus"))
                if rng.random() < 0.15:
                    step.pop(key, None)
                else:
                    step[key] = copy.deepcopy(rng.choice(STEP_VALUES))
        fast, expected = certify.pipeline(copy.deepcopy(data)), pipeline_verdict(copy.deepcopy(data))
        if fast is not None:
            assert fast == expected, json.dumps(data, default=str)[:500]
            both += 1
        elif expected is None:
            refused += 1
        else:
            raise AssertionError(f"a valid pipeline left to the model: {json.dumps(data, default=str)[:500]}")
    assert both > 150 and refused > 300, (both, refused)
