"""`raibid gitops verify`: everything that must hold before a commit may reach the cluster.

- settings.yaml parses (no YAML-1.1 traps) and validates against the settings model;
- every marked manifest field equals its setting; generated files are current;
- kustomize builds the overlay and the Flux objects;
- every rendered object validates against its schema;
- the rendered ConfigMap carries exactly settings.yaml;
- no rendered ConfigMap or Secret holds more than Kubernetes takes (1 MiB of data).
The same check runs on a hand edit pushed with git or made in Gitea's web editor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops import contract
from raibid_gitops.errors import KustomizeError, SettingsError
from raibid_gitops.gitops import layout, rendercache
from raibid_gitops.problems import Problem

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.gitops import schemas
    from raibid_gitops.settings import Settings

#: What verify builds: the overlay Flux applies, and the Flux objects themselves.
RENDERED_DIRS = (layout.OVERLAY_DIR, layout.CLUSTER_DIR)


#: The API server refuses a ConfigMap or Secret whose data (keys and values) exceeds 1 MiB
#: (``MaxSecretSize``, used for both); Flux would then fail the whole apply.
MAX_CONFIG_DATA_BYTES = 1024 * 1024


@dataclass
class Report:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    settings: Settings | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    checked_fields: int = 0
    #: The settings' hash; set even where ``settings`` is not (a report from the cache).
    settings_hash: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repository": str(self.root),
            "markedFields": self.checked_fields,
            "objects": len(self.objects),
            "settingsHash": self.settings.hash() if self.settings else self.settings_hash,
            "problems": [p.to_dict() for p in self.problems],
        }


def check_marked_fields(root: Path, settings: Settings) -> tuple[list[Problem], int]:
    from raibid_gitops.gitops import setters

    problems: list[Problem] = []
    fields = setters.scan(root)
    for path in setters.marked_files(root):
        rel = path.relative_to(root).as_posix()
        for line, text in setters.malformed_markers(rel, path.read_text(encoding="utf-8")):
            problems.append(Problem(file=rel, line=line, field="(marker)",
                                    message=f"marker on a line the setter cannot edit: {text}"))
    for f in fields:
        try:
            expected = setters.expected_text(f, settings)
        except SettingsError as exc:
            problems.append(Problem(file=f.file, line=f.line, field=f.field,
                                    message=f"marker names an unknown setting: {exc.message}"))
            continue
        if expected != f.text:
            problems.append(Problem(file=f.file, line=f.line, field=f.field,
                                    message=f"differs from {', '.join(f.settings_named())} in {layout.SETTINGS_PATH}",
                                    expected=expected, found=f.text))
    return problems, len(fields)


def check_generated(root: Path, settings: Settings) -> list[Problem]:
    from raibid_gitops.gitops import generated

    problems = []
    for rel, content in generated.generated_files(settings).items():
        path = root / rel
        found = path.read_text(encoding="utf-8") if path.exists() else None
        if found != content:
            problems.append(Problem(
                file=rel, field="(generated file)",
                message="missing" if found is None else "out of date with settings.yaml; "
                "`raibid gitops set` regenerates it (or restore it from the last commit)",
            ))
    return problems


def _locator(root: Path, rel: str) -> schemas.Locator:
    """Finds a rendered object's field in the sources of the kustomization ``rel``; the
    sources are read only when a schema error needs them."""
    sources: list[Any] = []

    def locate(obj: dict[str, Any], path: list[Any]) -> tuple[str, int | None] | None:
        if not sources:
            from raibid_gitops.gitops.origins import Sources  # only when a problem needs placing

            sources.append(Sources(root, root / rel))
        origin = sources[0].locate(obj, path)
        return None if origin is None else (origin.file, origin.line)

    return locate


def check_topology_included(root: Path) -> list[Problem]:
    """The generated `topology` component takes effect only if the overlay includes it (a
    config repository made before it existed does not, and nothing else would notice)."""
    from raibid_gitops import yamlio

    rel = f"{layout.OVERLAY_DIR}/kustomization.yaml"
    try:
        data = yamlio.load_plain((root / rel).read_text(encoding="utf-8"), rel)
    except (OSError, SettingsError):
        return []  # kustomize build reports a missing or broken kustomization.yaml
    components = data.get("components") if isinstance(data, dict) else None
    if isinstance(components, list) and layout.TOPOLOGY_DIR_NAME in components:
        return []
    return [Problem(file=rel, field="components",
                    message=f"does not include the generated component {layout.TOPOLOGY_DIR_NAME!r}, so cluster.nodes "
                            "and queue.mode would not take effect; add `components: [topology]` (repositories made "
                            "by `raibid gitops init` have it)")]


def check_trigger(settings: Settings, objects: list[dict[str, Any]]) -> list[Problem]:
    """The rendered ScaledJob reaches Redis as queue.mode says (a leftover hand patch of the
    trigger's address would otherwise win over the topology component)."""
    q = settings.queue
    want = (("redis-sentinel-streams", q.sentinel.addresses) if q.mode == "sentinel"
            else ("redis-streams", q.redis_address))
    problems = []
    for obj in objects:
        if obj.get("kind") != "ScaledJob":
            continue
        for i, trig in enumerate((obj.get("spec") or {}).get("triggers") or []):
            if not isinstance(trig, dict) or not str(trig.get("type", "")).startswith("redis"):
                continue
            found = (trig.get("type"), (trig.get("metadata") or {}).get("address"))
            if found != want:
                name = (obj.get("metadata") or {}).get("name", "?")
                problems.append(Problem(
                    file=layout.OVERLAY_DIR, field=f"ScaledJob {name} triggers[{i}]",
                    message=f"does not reach Redis as queue.mode {q.mode} says; remove any patch of the trigger's "
                            "type or address besides the topology component's",
                    expected=f"{want[0]} at {want[1]}", found=f"{found[0]} at {found[1]}"))
    return problems


def check_render(root: Path, settings: Settings, report: Report, builds: rendercache.Builds | None = None) -> None:
    """Build the overlay and the Flux objects (``builds``: already started by the caller) and
    check every object: its schema, its size, the settings ConfigMap and the KEDA trigger."""
    builds = builds or rendercache.start([root / rel for rel in RENDERED_DIRS], root=root)
    verdicts = rendercache.Verdicts.for_root(root)
    overlay_built = False
    for rel, build in zip(RENDERED_DIRS, builds.results(), strict=True):
        try:
            objs = build.objects()
        except KustomizeError as exc:
            # kustomize's own words, once: what it could not build is the one problem here.
            detail = getattr(exc, "detail", None) or exc.message
            report.problems.append(Problem(file=rel, field="(kustomize build)", message=detail))
            continue
        overlay_built = overlay_built or rel == layout.OVERLAY_DIR
        locate = _locator(root, rel)
        for obj in objs:
            report.problems.extend(verdicts.validate(obj, rel, locate))
            report.problems.extend(check_data_size(obj, rel))
        report.objects.extend(objs)
    verdicts.save()
    if not overlay_built:
        return  # what the overlay would render is unknown: checking it would only restate the failure
    report.problems.extend(check_trigger(settings, report.objects))
    settings_text = (root / layout.SETTINGS_PATH).read_text(encoding="utf-8")
    cms = [o for o in report.objects if o.get("kind") == "ConfigMap"
           and (o.get("metadata") or {}).get("name") == contract.SETTINGS_CONFIGMAP]
    if not cms:
        report.problems.append(Problem(file=layout.OVERLAY_DIR, field="configMapGenerator",
                                       message=f"the overlay renders no ConfigMap {contract.SETTINGS_CONFIGMAP} "
                                               "(or it has a name hash; keep disableNameSuffixHash: true)"))
    for cm in cms:
        data = (cm.get("data") or {}).get(contract.SETTINGS_KEY)
        if data != settings_text:
            report.problems.append(Problem(file=layout.OVERLAY_DIR, field=f"ConfigMap {contract.SETTINGS_CONFIGMAP}",
                                           message=f"data.{contract.SETTINGS_KEY} is not {layout.SETTINGS_PATH}"))


def check_data_size(obj: dict[str, Any], rel: str) -> list[Problem]:
    """A ConfigMap or Secret over the API server's 1 MiB limit, counted as it counts (every
    key and value of data and binaryData; binaryData as its decoded bytes)."""
    if obj.get("kind") not in ("ConfigMap", "Secret"):
        return []
    size = 0
    for section in ("data", "stringData", "binaryData"):
        for key, value in (obj.get(section) or {}).items():
            text = str(value)
            size += len(str(key).encode())
            size += len(text) * 3 // 4 if section == "binaryData" else len(text.encode("utf-8", "surrogatepass"))
    if size <= MAX_CONFIG_DATA_BYTES:
        return []
    name = (obj.get("metadata") or {}).get("name", "?")
    return [Problem(file=rel, field=f"{obj['kind']} {name}",
                    message=f"holds {size} bytes of data; Kubernetes refuses more than {MAX_CONFIG_DATA_BYTES} (1 MiB)",
                    expected=f"<= {MAX_CONFIG_DATA_BYTES}", found=str(size))]


def verify(root: Path, *, render: bool = True, builds: rendercache.Builds | None = None) -> Report:
    """Check the config repository at ``root``; problems are collected, never raised.

    ``builds``: the builds of :data:`RENDERED_DIRS`, when the caller started them already."""
    # The builds start first (from the cache, or as kustomize processes), so that kustomize
    # runs while the settings and marked fields are checked here.
    if render and builds is None:
        builds = rendercache.start([root / rel for rel in RENDERED_DIRS], root=root)
    from raibid_gitops.settings import load_path

    report = Report(root=root)
    try:
        settings = load_path(root / layout.SETTINGS_PATH, layout.SETTINGS_PATH)
    except SettingsError as exc:
        if builds is not None:
            builds.cancel()
        report.problems.extend(exc.problems
                               or [Problem(file=layout.SETTINGS_PATH, field="(file)", message=exc.message)])
        return report
    report.settings = settings
    report.settings_hash = settings.hash()
    marked, n = check_marked_fields(root, settings)
    report.problems.extend(marked)
    report.checked_fields = n
    report.problems.extend(check_generated(root, settings))
    report.problems.extend(check_topology_included(root))
    if builds is not None:
        check_render(root, settings, report, builds)
    return report


def _report_files(root: Path) -> list[str]:
    """Every file verify reads besides the builds: settings.yaml, the marked files, the
    generated files (present or not)."""
    from raibid_gitops.gitops import setters

    files = {layout.SETTINGS_PATH, layout.GPU_PATCH_PATH, layout.SCHEMA_PATH}
    files.update(p.relative_to(root).as_posix() for p in setters.marked_files(root))
    return sorted(files)


def verify_cached(root: Path) -> Report:
    """:func:`verify`, answered from the render cache when nothing it depends on changed (see
    :func:`rendercache.report_key`): what `raibid gitops verify` runs, again and again, on a
    repository it has seen. A report from the cache has ``settings_hash`` but not ``settings``."""
    from raibid_gitops.problems import Problem

    key = rendercache.report_key(root, RENDERED_DIRS, _report_files(root))
    known = rendercache.load_report(root, key) if key else None
    if known is not None:
        try:
            return Report(root=root, problems=[Problem(**p) for p in known["problems"]], objects=known["objects"],
                          checked_fields=int(known["checkedFields"]), settings_hash=known["settingsHash"])
        except (KeyError, TypeError, ValueError):
            pass  # not what we wrote: verify again
    report = verify(root)
    if key:
        rendercache.store_report(root, key, {
            "problems": [p.to_dict() for p in report.problems], "objects": report.objects,
            "checkedFields": report.checked_fields, "settingsHash": report.settings_hash,
        })
    return report
