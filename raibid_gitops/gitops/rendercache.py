"""kustomize builds and schema verdicts, kept in the repository's git directory and reused
while what they depend on is unchanged.

A build of a kustomization depends on the files of the kustomization directories it reads
(its own, and those its ``resources``/``components``/... name, recursively: kustomize's
default load restrictor keeps every other file inside one of them) and on the kustomize
binary. The cache key is a hash of exactly that: every file under those directories (path and
content) and the binary's path, size, mtime and inode. A build whose inputs cannot be known
from the files (a remote or missing resource, a Helm chart, a symbolic link on the way) is
never cached. So `raibid gitops set` renders the base it diffs against from the cache, and of
the new tree builds only what the change touched (usually the overlay: the Flux objects in
clusters/ do not depend on settings.yaml).

Schema verdicts are kept per rendered object (a hash of its JSON, key order included), with
the identity of the shipped schemas, of this validation code and of jsonschema: only objects
not seen before are validated, and jsonschema is not even imported when none is new.

Whole verify reports, last, are kept for `raibid gitops verify` (:func:`report_key`): keyed by
every file verify reads, the builds' keys, and the code that judges (this package, pydantic,
ruamel.yaml, PyYAML, jsonschema, the schemas, Python itself), so an unchanged repository is
answered without importing any of them.

Everything lives under ``.git/raibid/cache`` (never in the working tree, never pushed). It is
only a cache: a missing, unreadable or corrupt entry is a miss, a failed write is ignored,
and concurrent writers replace whole files atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops.errors import KustomizeError

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.problems import Problem

#: Bump when what an entry holds, or how a key is made, changes.
FORMAT = 1
CACHE_DIR = "raibid/cache"
#: Build entries kept (newest used first); a few per commit a person works on is plenty.
KEEP_BUILDS = 64
#: Verdicts kept: a rendered overlay is ~20 objects and a settings change makes one or two new
#: ones; more would only make the file every verify reads and writes bigger.
KEEP_VERDICTS = 512
#: A kustomization reading more than this is not cached (hashing it would cost what it saves).
MAX_INPUT_BYTES = 32 * 1024 * 1024
MAX_INPUT_FILES = 5000
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
#: Fields of a kustomization that name other kustomizations (directories) or files.
_REFERENCE_FIELDS = ("resources", "components", "bases", "generators", "transformers", "validators")
#: Fields that make a build read something outside the files (charts from the network).
_UNCACHEABLE_FIELDS = ("helmCharts", "helmChartInflationGenerator", "helmGlobals")


def git_dir(start: Path) -> Path | None:
    """The git directory of the repository containing ``start`` (``.git``, or where a
    ``.git`` file of a worktree points), or None outside any."""
    here = Path(os.path.abspath(start))
    for d in (here, *here.parents):
        dot = d / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            try:
                text = dot.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return None
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:"):].strip())
                return target if target.is_absolute() else d / target
            return None
    return None


def tool_identity(cmd: Sequence[str]) -> str | None:
    """The kustomize command and the binary it runs (path, size, mtime, inode): a new binary
    or a changed command is a new key."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    real = os.path.realpath(exe)
    try:
        st = os.stat(real)
    except OSError:
        return None
    return "\0".join([*cmd, real, str(st.st_size), str(st.st_mtime_ns), str(st.st_ino), str(st.st_dev)])


def is_within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


class _Graphs:
    """What each kustomization file names (its ``resources``, ``components``...), remembered by
    the file's bytes: an unchanged kustomization needs no YAML parser to key a build."""

    KEEP = 256

    def __init__(self, store: Path | None) -> None:
        self.path = store / "graphs.json" if store is not None else None
        self._known: dict[str, list[str] | None] | None = None
        self._dirty = False

    def _load(self) -> dict[str, list[str] | None]:
        if self._known is None:
            data = _read_json(self.path) if self.path is not None else None
            known = data.get("graphs") if data is not None and data.get("format") == FORMAT else None
            self._known = {k: v for k, v in known.items()
                           if v is None or (isinstance(v, list) and all(isinstance(e, str) for e in v))
                           } if isinstance(known, dict) else {}
        return self._known

    def entries(self, data: bytes) -> list[str] | None:
        """The paths (or URLs) the kustomization in ``data`` names; None: not cacheable."""
        digest = hashlib.sha256(data).hexdigest()[:40]
        known = self._load()
        if digest in known:
            return known[digest]
        entries = _referenced(data)
        known[digest] = entries
        self._dirty = True
        return entries

    def save(self) -> None:
        if not self._dirty or self.path is None or self._known is None:
            return
        known = dict(list(self._known.items())[-self.KEEP:])
        try:
            _write_atomic(self.path, json.dumps({"format": FORMAT, "graphs": known}, separators=(",", ":")))
        except OSError:
            pass  # only a cache
        self._dirty = False


def _referenced(data: bytes) -> list[str] | None:
    """What a kustomization file names, parsed; None when it cannot be cached."""
    from raibid_gitops import yaml12

    try:
        docs = yaml12.load_all(data.decode("utf-8"))
    except Exception:  # noqa: BLE001 - unreadable: kustomize reports it; nothing to cache
        return None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        return None
    k = docs[0]
    if any(name in k for name in _UNCACHEABLE_FIELDS):
        return None
    out: list[str] = []
    for name in _REFERENCE_FIELDS:
        entries = k.get(name) or []
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if isinstance(entry, dict):
                continue  # an inline generator or transformer: part of this file
            if not isinstance(entry, str) or not entry:
                return None
            out.append(entry)
    return out


def _kustomization_dirs(path: Path, graphs: _Graphs) -> list[Path] | None:
    """Every kustomization directory a build of ``path`` reads (real paths), or None when that
    cannot be told from the files. A reference is followed both from the directory as named and
    from its real path; where a symbolic link makes the two disagree, the build is not cached,
    so that kustomize and this walk cannot read different directories."""
    seen: list[Path] = []
    todo = [(Path(os.path.normpath(os.path.abspath(path))), Path(os.path.realpath(path)))]
    while todo:
        lexical, d = todo.pop()
        if d in seen:
            continue
        seen.append(d)
        found = [d / name for name in KUSTOMIZATION_FILES if (d / name).is_file()]
        if len(found) != 1:
            return None  # none (kustomize fails) or several (kustomize refuses): not ours to cache
        try:
            entries = graphs.entries(found[0].read_bytes())
        except OSError:
            return None
        if entries is None:
            return None
        for entry in entries:
            target = Path(os.path.realpath(os.path.normpath(d / entry)))
            if target != Path(os.path.realpath(os.path.normpath(lexical / entry))):
                return None
            if target.is_dir():
                todo.append((Path(os.path.normpath(lexical / entry)), target))
            elif target.is_file() and is_within(target, d):
                continue  # hashed with d
            else:
                return None  # a URL, a missing path, or a file kustomize would refuse
    return seen


def kustomization_dirs(path: Path, git: Path | None) -> list[Path] | None:
    """The kustomization directories a build of ``path`` reads (see :func:`build_key`), using
    the graphs remembered in git directory ``git``."""
    graphs = _Graphs(git / CACHE_DIR if git is not None else None)
    dirs = _kustomization_dirs(path, graphs)
    graphs.save()
    return dirs


def _hash_inputs(start: Path, dirs: list[Path], tool: str) -> str | None:
    h = hashlib.sha256(f"raibid-render\0{FORMAT}\0{tool}\0".encode())
    files = total = 0
    for d in sorted(dirs):
        h.update(b"\0dir\0" + os.path.relpath(d, start).encode("utf-8", "surrogateescape"))
        for top, subdirs, names in os.walk(d):
            subdirs[:] = sorted(s for s in subdirs if s != ".git")
            for s in subdirs:
                if os.path.islink(os.path.join(top, s)):
                    return None
            for name in sorted(names):
                full = os.path.join(top, name)
                if os.path.islink(full):
                    return None
                try:
                    data = Path(full).read_bytes()
                except OSError:
                    return None
                files += 1
                total += len(data)
                if files > MAX_INPUT_FILES or total > MAX_INPUT_BYTES:
                    return None
                rel = os.path.relpath(full, d).encode("utf-8", "surrogateescape")
                h.update(b"\0file\0" + rel + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:40]


def build_key(path: Path, cmd: Sequence[str], graphs: _Graphs | None = None) -> str | None:
    """The cache key of ``kustomize build path`` with ``cmd``, or None if it is not cacheable."""
    tool = tool_identity(cmd)
    if tool is None:
        return None
    dirs = _kustomization_dirs(path, graphs or _Graphs(None))
    if dirs is None:
        return None
    return _hash_inputs(Path(os.path.realpath(path)), dirs, tool)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{random.getrandbits(32):08x}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a concurrent reader sees the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)


def _plain_json(objects: Any) -> bool:
    """Whether ``objects`` survive a JSON round trip unchanged (no dates, no int keys, no NaN)."""
    try:
        return bool(json.loads(json.dumps(objects, allow_nan=False)) == objects)
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Builds


@dataclass
class Build:
    """One ``kustomize build``: its text (or the error), from the cache or from kustomize."""

    path: Path
    text: str | None = None
    error: KustomizeError | None = None
    cached: bool = False
    key: str | None = None
    _objects: list[dict[str, Any]] | None = None
    _parse_error: KustomizeError | None = None

    def objects(self) -> list[dict[str, Any]]:
        """The rendered objects; KustomizeError when the build failed or its output is unreadable."""
        if self.error is not None:
            raise self.error
        if self._parse_error is not None:
            raise self._parse_error
        if self._objects is None:
            from raibid_gitops.gitops import kustomize

            assert self.text is not None
            try:
                self._objects = kustomize.parse(self.text)
            except KustomizeError as exc:
                self._parse_error = exc
                raise
        return self._objects


@dataclass
class _Offered:
    """A build started ahead of time in a copy of the inputs (see :func:`offer`)."""

    handle: Any
    tmp: Path


#: Builds offered ahead of time in this process, by input key, not yet taken by :func:`start`.
_OFFERED: dict[str, _Offered] = {}


def offer(path: Path, cmd: Sequence[str], tmp: Path, git: Path) -> None:
    """Start ``kustomize build path`` now, for a later :func:`start` of another directory with the
    same inputs (the same key) in the repository whose git directory is ``git``. ``path`` lies in
    ``tmp``, a copy removed once the build is taken or the process ends."""
    import atexit

    from raibid_gitops.gitops import kustomize

    store = git / CACHE_DIR
    graphs = _Graphs(store)
    key = build_key(path, cmd, graphs)
    graphs.save()
    if key is None or key in _OFFERED or _load_entry(store / "builds" / f"{key}.json") is not None:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if not _OFFERED:
        atexit.register(_drop_offers)
    _OFFERED[key] = _Offered(kustomize.start(path, list(cmd)), tmp)


def _drop_offers() -> None:
    from raibid_gitops.gitops import kustomize

    for offered in list(_OFFERED.values()):
        kustomize.kill(offered.handle)
        shutil.rmtree(offered.tmp, ignore_errors=True)
    _OFFERED.clear()


@dataclass
class Builds:
    """Builds started together: cache hits are done at once, misses run concurrently."""

    builds: list[Build]
    store: Path | None
    want_objects: bool
    #: The config repository: kustomize's errors show paths inside it relative to it.
    root: Path | None = None
    _running: list[tuple[Build, Any, _Offered | None]] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        """Whether a kustomize process is still to be waited for."""
        return bool(self._running)

    def results(self) -> list[Build]:
        """Every build, in the order asked; waits for running ones and caches what they made."""
        from raibid_gitops.gitops import kustomize

        running, self._running = self._running, []
        for build, handle, offered in running:
            try:
                build.text = kustomize.wait(handle)
            except KustomizeError as exc:
                if offered is None:
                    build.error = exc
                    continue
                # Built ahead of time elsewhere: its error would name that place. Build here.
                try:
                    build.text = kustomize.build(build.path, root=self.root)
                except KustomizeError as exc2:
                    build.error = exc2
                    continue
            finally:
                if offered is not None:
                    shutil.rmtree(offered.tmp, ignore_errors=True)
            if self.store is not None and build.key is not None:
                self._save(build)
        return self.builds

    def _save(self, build: Build) -> None:
        objects = None
        if self.want_objects:
            try:
                objects = build.objects()
            except KustomizeError:
                objects = None  # kept as text; a hit parses it again and fails the same way
        entry = {"format": FORMAT, "text": build.text,
                 "objects": objects if objects is not None and _plain_json(objects) else None}
        assert self.store is not None and build.key is not None
        try:
            builds_dir = self.store / "builds"
            _write_atomic(builds_dir / f"{build.key}.json", json.dumps(entry, separators=(",", ":")))
            entries = sorted(builds_dir.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            for stale in entries[:-KEEP_BUILDS]:
                stale.unlink(missing_ok=True)
        except OSError:
            pass  # only a cache

    def cancel(self) -> None:
        from raibid_gitops.gitops import kustomize

        for _build, handle, offered in self._running:
            kustomize.kill(handle)
            if offered is not None:
                shutil.rmtree(offered.tmp, ignore_errors=True)
        self._running = []


def _load_entry(path: Path) -> dict[str, Any] | None:
    entry = _read_json(path)
    if entry is None or entry.get("format") != FORMAT or not isinstance(entry.get("text"), str):
        return None
    objects = entry.get("objects")
    if objects is not None and not (isinstance(objects, list) and all(isinstance(o, dict) for o in objects)):
        return None
    return entry


def start(paths: Sequence[Path], *, objects: bool = True, root: Path | None = None) -> Builds:
    """``kustomize build`` of each of ``paths``: from the cache where the inputs are unchanged,
    else started now, all at once (see :meth:`Builds.results`). ``root``: the config repository,
    for kustomize's errors."""
    from raibid_gitops.gitops import kustomize

    git = git_dir(paths[0]) if paths else None
    store = git / CACHE_DIR if git is not None else None
    try:
        cmd: list[str] | None = kustomize.command()
        cmd_error = None
    except KustomizeError as exc:
        cmd, cmd_error = None, exc
    builds: list[Build] = []
    running: list[tuple[Build, Any, _Offered | None]] = []
    graphs = _Graphs(store)
    for path in paths:
        build = Build(path)
        builds.append(build)
        if cmd is None:
            build.error = cmd_error
            continue
        if store is not None:
            build.key = build_key(path, cmd, graphs)
            if build.key is not None:
                entry = _load_entry(store / "builds" / f"{build.key}.json")
                if entry is not None:
                    build.text, build.cached = entry["text"], True
                    if entry.get("objects") is not None:
                        build._objects = entry["objects"]  # noqa: SLF001 - this module's Build: parsed before
                    continue
                offered = _OFFERED.pop(build.key, None)
                if offered is not None:
                    running.append((build, offered.handle, offered))
                    continue
        running.append((build, kustomize.start(path, cmd, root=root), None))
    graphs.save()
    return Builds(builds, store, objects, root, running)


def build_all(paths: Sequence[Path], *, objects: bool = True, root: Path | None = None) -> list[Build]:
    return start(paths, objects=objects, root=root).results()


# ---------------------------------------------------------------------------------------------
# Schema verdicts


def _object_digest(obj: dict[str, Any]) -> str | None:
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None  # not plain JSON: validated every time
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def schema_identity() -> str:
    """What a verdict depends on besides the object: the shipped schemas, the code that
    validates and formats, and the jsonschema installation (found without importing it)."""
    import importlib.util

    from raibid_gitops.gitops import schemas

    parts = [str(FORMAT)]
    files = sorted(schemas.SCHEMA_DIR.iterdir()) + [Path(schemas.__file__)]
    spec = importlib.util.find_spec("jsonschema")
    if spec is not None and spec.origin:
        origin = Path(spec.origin)
        files += [origin, origin.parent / "validators.py", origin.parent / "_keywords.py"]
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{f}\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{f}\0-")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:40]


class Verdicts:
    """Schema problems of rendered objects, remembered per object (see the module doc)."""

    def __init__(self, store: Path | None) -> None:
        self.store = store
        self._identity: str | None = None
        self._known: dict[str, list[list[str]]] | None = None
        self._dirty = False

    @classmethod
    def for_root(cls, root: Path) -> Verdicts:
        git = git_dir(root)
        return cls(git / CACHE_DIR if git is not None else None)

    def _load(self) -> dict[str, list[list[str]]]:
        if self._known is None:
            self._known = {}
            if self.store is None:
                return self._known
            self._identity = schema_identity()
            try:
                data = json.loads((self.store / "verdicts.json").read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError):
                return self._known
            if (isinstance(data, dict) and data.get("format") == FORMAT and data.get("schemas") == self._identity
                    and isinstance(data.get("verdicts"), dict)):
                self._known = {k: v for k, v in data["verdicts"].items()
                               if isinstance(v, list) and all(isinstance(p, list) and len(p) == 2
                                                              and all(isinstance(s, str) for s in p) for p in v)}
        return self._known

    def validate(self, obj: dict[str, Any], source: str, locate: Any = None) -> list[Problem]:
        """:func:`schemas.validate_object`, from memory when this exact object was seen. Only
        verdicts without a place (file line, expected, found) are remembered: a valid object's
        empty list above all; problems a ``locate`` placed are judged again each time."""
        from raibid_gitops.gitops import schemas
        from raibid_gitops.problems import Problem

        known = self._load()
        digest = _object_digest(obj) if self.store is not None else None
        if digest is not None and digest in known:
            where = f"{source} {schemas.object_ref(obj)}"
            return [Problem(file=where, field=f, message=m) for f, m in known[digest]]
        problems = schemas.validate_object(obj, source, locate)
        if digest is not None and all(p.line is None and p.expected is None and p.found is None for p in problems):
            known[digest] = [[p.field, p.message] for p in problems]
            self._dirty = True
        return problems

    def save(self) -> None:
        if not self._dirty or self.store is None or self._known is None:
            return
        known = self._known
        if len(known) > KEEP_VERDICTS:  # the oldest first (insertion order)
            known = dict(list(known.items())[-KEEP_VERDICTS:])
        try:
            _write_atomic(self.store / "verdicts.json", json.dumps(
                {"format": FORMAT, "schemas": self._identity, "verdicts": known}, separators=(",", ":")))
        except OSError:
            pass  # only a cache
        self._dirty = False


# ---------------------------------------------------------------------------------------------
# Whole reports


def _code_identity() -> str:
    """Every module and library whose code decides a verify verdict, by path, size and mtime:
    an upgrade or an edit of any of them is a new identity."""
    import importlib.util
    import sys

    package = Path(__file__).resolve().parent.parent
    parts = [sys.version, sys.executable]
    for top, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "templates", "devstack"))
        for name in sorted(names):
            if name.endswith(".py") or name == "settings.schema.json":  # the certifier reads the latter
                st = os.stat(os.path.join(top, name))
                parts.append(f"{os.path.join(top, name)}\0{st.st_size}\0{st.st_mtime_ns}")
    for lib in ("pydantic", "pydantic_core", "ruamel.yaml", "yaml"):
        spec = importlib.util.find_spec(lib)
        origin = spec.origin if spec is not None else None
        try:
            lib_st = os.stat(origin) if origin else None
        except OSError:
            lib_st = None
        parts.append(f"{lib}\0{origin}\0{lib_st.st_size if lib_st else '-'}\0{lib_st.st_mtime_ns if lib_st else '-'}")
    parts.append(schema_identity())
    return "\n".join(parts)


def report_key(root: Path, dirs: Sequence[str], files: Sequence[str]) -> str | None:
    """The key of a verify report of ``root``: the keys of the builds of ``dirs``, the bytes of
    ``files`` (relative paths; a missing one counts as missing), the repository's place and the
    code identity. None when a build is not cacheable."""
    from raibid_gitops.gitops import kustomize

    if git_dir(root) is None:
        return None
    try:
        cmd = kustomize.command()
    except KustomizeError:
        return None
    h = hashlib.sha256(f"raibid-report\0{FORMAT}\0{os.path.abspath(root)}\0".encode("utf-8", "surrogateescape"))
    graphs = _Graphs(git_dir(root) / CACHE_DIR)  # type: ignore[operator]
    for rel in dirs:
        key = build_key(root / rel, cmd, graphs)
        if key is None:
            return None
        h.update(f"build\0{rel}\0{key}\0".encode())
    graphs.save()
    for rel in files:
        try:
            data = (root / rel).read_bytes()
            h.update(f"file\0{rel}\0{len(data)}\0".encode("utf-8", "surrogateescape") + data)
        except FileNotFoundError:
            h.update(f"missing\0{rel}\0".encode("utf-8", "surrogateescape"))
        except OSError:
            return None
    h.update(_code_identity().encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:40]


def load_report(root: Path, key: str) -> dict[str, Any] | None:
    git = git_dir(root)
    if git is None:
        return None
    entry = _read_json(git / CACHE_DIR / "reports" / f"{key}.json")
    if entry is None or entry.get("format") != FORMAT or not isinstance(entry.get("report"), dict):
        return None
    return entry["report"]


def store_report(root: Path, key: str, report: dict[str, Any]) -> None:
    git = git_dir(root)
    if git is None:
        return
    reports = git / CACHE_DIR / "reports"
    try:
        _write_atomic(reports / f"{key}.json", json.dumps({"format": FORMAT, "report": report},
                                                          separators=(",", ":"), allow_nan=False))
        entries = sorted(reports.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for stale in entries[:-KEEP_BUILDS]:
            stale.unlink(missing_ok=True)
    except (OSError, TypeError, ValueError):
        pass  # only a cache (objects that are not plain JSON are simply not kept)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        os.utime(path)  # recently used: kept when older entries are pruned
    except OSError:
        pass
    return data
