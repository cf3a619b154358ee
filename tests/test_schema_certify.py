"""schema_certify answers only when it is right: True only where jsonschema finds no error,
False only where it finds one — on every rendered object and on mutations of them."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from raibid_gitops.gitops import kustomize, layout, schemas
from raibid_gitops.gitops.generate import init
from raibid_gitops.gitops.schema_certify import Unsure, certify


def jsonschema_errors(obj: dict[str, Any]) -> list[Any]:
    filename = schemas._index()[f"{obj['apiVersion']}/{obj['kind']}"]
    return list(schemas._validator(filename).iter_errors(obj))


def verdict(obj: dict[str, Any]) -> bool | None:
    filename = schemas._index().get(f"{obj.get('apiVersion')}/{obj.get('kind')}")
    try:
        return certify(obj, schemas._schema(filename))
    except Unsure:
        return None


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i, assignments in enumerate(([], ["agents.gpus=1", "agents.maxReplicas=1", "flux.wait=false",
                                                      "scaling.scalingStrategy=eager"])):
        repo = init(tmp_path_factory.mktemp(f"c{i}") / "config", assignments=assignments).path
        for rel in (layout.OVERLAY_DIR, layout.CLUSTER_DIR):
            objs.extend(kustomize.build_objects(repo / rel))
    return objs


#: Values a mutation puts in place of a field: every JSON type, and strings that break patterns.
REPLACEMENTS: list[Any] = [None, True, False, 0, -1, 7, 2**40, 1.5, 2.0, "", "x", "Yes", "UPPER_case!", "-1",
                           "12Gi", "a" * 300, [], [1], ["x"], {}, {"x": 1}, {"name": "n"}]


def names_an_object(obj: dict[str, Any]) -> bool:
    """Whether schemas.object_ref can name it (kustomize refuses objects whose metadata is not a
    mapping of strings long before they get here)."""
    try:
        schemas.object_ref(obj)
        return True
    except (AttributeError, TypeError):
        return False


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


def mutate(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    path = rng.choice([p for p in paths(out) if p[:1] not in (("apiVersion",), ("kind",))])
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    action = rng.random()
    if action < 0.2 and isinstance(parent, dict):
        del parent[last]
    elif action < 0.35 and isinstance(parent, dict):
        parent[f"unknownField{rng.randint(0, 9)}"] = rng.choice(REPLACEMENTS)
    elif action < 0.45 and isinstance(parent[last], list):
        parent[last] = parent[last] + parent[last] if parent[last] else []
    else:
        parent[last] = copy.deepcopy(rng.choice(REPLACEMENTS))
    return out


class TestRendered:
    def test_every_rendered_object_is_certified_valid(self, rendered: list[dict[str, Any]]) -> None:
        assert len(rendered) >= 30
        for obj in rendered:
            assert verdict(obj) is True, obj["kind"]
            assert jsonschema_errors(obj) == []


class TestMutations:
    def test_never_wrong(self, rendered: list[dict[str, Any]]) -> None:
        rng = random.Random(1414)
        answered = {True: 0, False: 0, None: 0}
        for obj in rendered:
            for _ in range(120):
                m = mutate(obj, rng)
                v = verdict(m)
                answered[v] += 1
                if v is None:
                    continue
                errors = jsonschema_errors(m)
                assert (v is True) == (not errors), (obj["kind"], v, [e.message for e in errors][:3])
                # And the whole problem list validate_object gives is jsonschema's.
                if v is True and names_an_object(m):
                    assert schemas.validate_object(m, "src") == []
        # Most mutations get a certain answer (else the fast path would rarely help).
        assert answered[True] + answered[False] > 0.8 * sum(answered.values()), answered
        assert answered[True] > 100 and answered[False] > 1000, answered

    def test_problems_unchanged(self, rendered: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
        """validate_object gives the same problems with and without the certifier."""
        rng = random.Random(7)
        cases = [m for m in (mutate(o, rng) for o in rendered for _ in range(20)) if names_an_object(m)]
        with_certify = [schemas.validate_object(m, "src") for m in cases]
        from raibid_gitops.gitops import schema_certify

        def never_sure(*_a: Any) -> bool:
            raise schema_certify.Unsure

        monkeypatch.setattr(schema_certify, "certify", never_sure)
        assert [schemas.validate_object(m, "src") for m in cases] == with_certify


class TestUnsure:
    @pytest.mark.parametrize(("instance", "schema"), [
        (1.0, {"type": "integer"}),                                  # jsonschema: an integer
        (1, {"enum": [1, 2]}),                                       # non-string enum
        ("x", {"$ref": "other.json#/a"}),                            # not in this document
        ("x", {"not": {"type": "integer"}}),                         # a keyword outside the subset
        ({"a": 1}, {"patternProperties": {"^a$": {}}, "additionalProperties": False}),
        ("x", {"type": ["string", "null"]}),
    ])
    def test_unsure(self, instance: Any, schema: dict[str, Any]) -> None:
        with pytest.raises(Unsure):
            certify(instance, schema)

    @pytest.mark.parametrize(("instance", "expected"), [(3, True), ("3", True), (True, False), (None, False)])
    def test_int_or_string(self, instance: Any, expected: bool) -> None:
        from jsonschema import Draft202012Validator

        schema = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
        assert certify(instance, schema) is expected
        assert Draft202012Validator(schema).is_valid(instance) is expected

    def test_false_wins_over_unsure(self) -> None:
        from jsonschema import Draft202012Validator

        schema = {"type": "object", "required": ["a"], "not": {}}
        assert certify({}, schema) is False
        assert not Draft202012Validator(schema).is_valid({})
