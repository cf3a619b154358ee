"""Build the local stack's binaries from the Go module proxy into a cache outside the clone.

Idempotent: each binary is built once per pinned version set (see ``versions.py``); a run
with everything present only checks and exits. Usage::

    python -m raibid_gitops.devstack.build          # or: raibid-devstack build
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raibid_gitops.devstack import versions
from raibid_gitops.devstack.versions import Component

#: A cold build needs module cache + build cache + binaries; measured ~9 GB, with margin.
MIN_FREE_BYTES = 15 * 1024**3


class BuildError(Exception):
    """A stack component could not be built."""


def log(msg: str) -> None:
    print(f"[build-stack] {msg}", file=sys.stderr, flush=True)


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The machine's own Go (1.26) must be used as is: a "toolchain" line in a module's
    # go.mod would otherwise make go try to download another toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = env.get("CGO_ENABLED", "0")
    return env


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env or go_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def module_dir(module: str, version: str) -> Path:
    out = run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=Path(tempfile.gettempdir()))
    info = json.loads(out)
    if info.get("Error"):
        raise BuildError(f"{module}@{version} is refused by the module proxy: {info['Error']}")
    return Path(info["Dir"])


_REPLACE_LINE = re.compile(r"^\s*(?:replace\s+)?(\S+)(?:\s+(\S+))?\s+=>\s+(\S+)(?:\s+(\S+))?")


def parse_gomod(text: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Return (replace directives as (old, new, newversion), godebug lines) of a go.mod."""
    replaces: list[tuple[str, str, str]] = []
    godebug: list[str] = []
    in_block = ""
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].rstrip()
        if not line.strip():
            continue
        stripped = line.strip()
        if in_block:
            if stripped == ")":
                in_block = ""
                continue
            if in_block == "replace":
                m = _REPLACE_LINE.match(stripped)
                if m:
                    replaces.append((m.group(1), m.group(3), m.group(4) or ""))
            elif in_block == "godebug":
                godebug.append(stripped)
            continue
        if stripped in ("replace (", "godebug ("):
            in_block = stripped.split()[0]
            continue
        if stripped.startswith("replace "):
            m = _REPLACE_LINE.match(stripped)
            if m:
                replaces.append((m.group(1), m.group(3), m.group(4) or ""))
        elif stripped.startswith("godebug "):
            godebug.append(stripped[len("godebug "):])
    return replaces, godebug


def wrapper_gomod(c: Component, target_gomod: str) -> str:
    replaces, godebug = parse_gomod(target_gomod)
    go_line = re.search(r"^go\s+(\S+)", target_gomod, re.M)
    lines = ["module raibidstack/" + c.name.replace("-", ""), "", f"go {go_line.group(1) if go_line else '1.24'}", ""]
    for g in godebug:
        lines.append(f"godebug {g}")
    k8s_minor = None
    if c.module == "k8s.io/kubernetes":
        # Staging modules are published as k8s.io/X v0.<minor>.<patch>.
        k8s_minor = "v0." + c.version.lstrip("v").split(".", 1)[1]
    for old, new, newver in replaces:
        if new.startswith("./") or new.startswith("../"):
            if k8s_minor and old.startswith("k8s.io/"):
                lines.append(f"replace {old} => {old} {k8s_minor}")
            # Otherwise the local replace points at a sibling module (flux's ./api, etcd's
            # ../api) that the target also requires at its published version: drop it.
            continue
        lines.append(f"replace {old} => {new} {newver}".rstrip())
    return "\n".join(lines) + "\n"


def build_component(c: Component, work: Path, out: Path) -> None:
    env = go_env()
    if c.cgo:
        env["CGO_ENABLED"] = "1"
    src = module_dir(c.module, c.version)
    ldflags = "-s -w"
    tags = ["-tags", c.tags] if c.tags else []
    if c.goflags:
        env["GOFLAGS"] = (env.get("GOFLAGS", "") + " " + c.goflags).strip()
    if c.method == "copy":
        dst = work / c.name
        shutil.copytree(src, dst)
        subprocess.run(["chmod", "-R", "u+w", str(dst)], check=True)
        pkg = "./" + c.package if c.package else "."
        if c.name == "gitea":
            # main.Version, as Gitea's Makefile sets it: main's init copies it into
            # setting.AppVer, which /api/v1/version reports (and Gitea API clients parse).
            ldflags += f" -X main.Version={c.version.lstrip('v')}"
        run(["go", "build", "-p", "2", "-trimpath", *tags, "-ldflags", ldflags, "-o", str(out), pkg], cwd=dst, env=env)
        return
    wdir = work / c.name
    wdir.mkdir(parents=True)
    (wdir / "go.mod").write_text(wrapper_gomod(c, (src / "go.mod").read_text()))
    pkg = c.module + ("/" + c.package if c.package else "")
    run(["go", "get", "-tool", f"{pkg}@{c.version}"], cwd=wdir, env=env)
    run(["go", "build", "-p", "2", "-trimpath", *tags, "-ldflags", ldflags, "-o", str(out), pkg], cwd=wdir, env=env)


#: CRD files taken from each component's module (config/crd/bases unless said otherwise).
CRD_SOURCES: dict[str, tuple[str, str]] = {
    "source-controller": ("config/crd/bases", "source.toolkit.fluxcd.io_"),
    "kustomize-controller": ("config/crd/bases", "kustomize.toolkit.fluxcd.io_"),
    "notification-controller": ("config/crd/bases", "notification.toolkit.fluxcd.io_"),
    # Every KEDA CRD, eventing.keda.sh included: the operator's caches never sync without them.
    "keda-operator": ("config/crd/bases", ""),
    # Only the Stage API: the stack's node and pod lifecycles are KWOK Stage objects.
    "kwok": ("kustomize/crd/bases", "kwok.x-k8s.io_stages"),
}

#: KWOK's own stages (kustomize/stage/<dir>/<file>): a node becomes Ready, a scheduled Pod
#: becomes Running and Ready, a deleted Pod goes away. pod-complete is left out: it would
#: finish every Job's Pod at once, and tests count the agent Jobs KEDA keeps running.
KWOK_STAGES = ("node/fast/node-initialize.yaml", "pod/fast/pod-ready.yaml", "pod/fast/pod-delete.yaml")


def collect_crds() -> None:
    dest = versions.crd_dir()
    if (dest / ".complete").exists():
        return
    tmp = Path(tempfile.mkdtemp(prefix="crds.", dir=dest.parent))
    for c in versions.COMPONENTS:
        if c.name not in CRD_SOURCES:
            continue
        sub, prefix = CRD_SOURCES[c.name]
        d = module_dir(c.module, c.version) / sub
        found = sorted(d.glob(prefix + "*.yaml"))
        if not found:
            raise BuildError(f"no CRDs {prefix}*.yaml in {d}")
        for f in found:
            shutil.copy(f, tmp / f.name)
    for want in ("keda.sh_scaledjobs.yaml", "eventing.keda.sh_cloudeventsources.yaml",
                 "source.toolkit.fluxcd.io_gitrepositories.yaml", "notification.toolkit.fluxcd.io_receivers.yaml",
                 "kwok.x-k8s.io_stages.yaml"):
        if not (tmp / want).exists():
            raise BuildError(f"CRD {want} missing from the module cache")
    (tmp / ".complete").write_text("")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def collect_kwok_stages() -> None:
    dest = versions.kwok_stages_dir()
    if (dest / ".complete").exists():
        return
    c = next(c for c in versions.COMPONENTS if c.name == "kwok")
    src = module_dir(c.module, c.version) / "kustomize" / "stage"
    tmp = Path(tempfile.mkdtemp(prefix="kwok-stages.", dir=dest.parent))
    for rel in KWOK_STAGES:
        shutil.copy(src / rel, tmp / rel.rsplit("/", 1)[-1])
    (tmp / ".complete").write_text("")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def collect_gitea_static() -> None:
    dest = versions.gitea_static_dir()
    if (dest / ".complete").exists():
        return
    c = next(c for c in versions.COMPONENTS if c.name == "gitea")
    src = module_dir(c.module, c.version)
    tmp = Path(tempfile.mkdtemp(prefix="gitea-static.", dir=dest.parent))
    # The API needs options/ (locales, licences, gitignores) and templates/; the web UI's
    # compiled assets are not needed for the tests.
    for sub in ("options", "templates", "public"):
        if (src / sub).exists():
            shutil.copytree(src / sub, tmp / sub)
    subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=True)
    (tmp / ".complete").write_text("")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def missing() -> list[Component]:
    return [c for c in versions.COMPONENTS if not (versions.bin_dir() / c.name).exists()]


def is_complete() -> bool:
    return (
        not missing()
        and (versions.crd_dir() / ".complete").exists()
        and (versions.gitea_static_dir() / ".complete").exists()
        and (versions.kwok_stages_dir() / ".complete").exists()
    )


def build(only: list[str] | None = None) -> dict[str, float]:
    root = versions.cache_root()
    bindir = versions.bin_dir()
    bindir.mkdir(parents=True, exist_ok=True)
    todo = [c for c in missing() if not only or c.name in only]
    timings: dict[str, float] = {}
    versions.objects_dir().mkdir(parents=True, exist_ok=True)
    # Cold-build times are kept per built object, so a reused binary keeps its figure.
    timings_file = versions.objects_dir() / "timings.json"
    if timings_file.exists():
        timings = json.loads(timings_file.read_text())
    if todo:
        free = shutil.disk_usage(root).free
        if free < MIN_FREE_BYTES:
            raise BuildError(
                f"only {free / 1024**3:.1f} GiB free under {root}; the stack build needs about "
                f"{MIN_FREE_BYTES / 1024**3:.0f} GiB (module and build caches). Free disk space or set "
                "RAIBID_STACK_CACHE to a larger disk."
            )
    log(f"cache: {root}")
    for c in todo:
        log(f"building {c.name} ({c.module}@{c.version}) ...")
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"build-{c.name}."))
        objects = versions.objects_dir()
        objects.mkdir(parents=True, exist_ok=True)
        obj = objects / versions.object_name(c)
        tmp_out = objects / f".{versions.object_name(c)}.tmp"
        try:
            if obj.exists():
                log(f"reusing {obj}")
            else:
                build_component(c, work, tmp_out)
                tmp_out.rename(obj)  # atomic: a half-built binary never looks complete
            (bindir / c.name).symlink_to(obj)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            tmp_out.unlink(missing_ok=True)
        key = versions.object_name(c)
        if key not in timings:
            timings[key] = round(time.monotonic() - t0, 1)
            timings_file.write_text(json.dumps(timings, indent=2))
            log(f"built {c.name} in {timings[key]:.0f}s")
    t0 = time.monotonic()
    collect_crds()
    collect_gitea_static()
    collect_kwok_stages()
    log(f"CRDs, KWOK stages and Gitea static files ready ({time.monotonic() - t0:.0f}s)")
    for c in versions.COMPONENTS:
        key = versions.object_name(c)
        state = f"{timings[key]:.0f}s cold build" if key in timings else "present"
        log(f"  {c.name:22} {c.version:8} {state}")
    return timings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("--check",):
        ok = is_complete()
        print("complete" if ok else "incomplete: " + ", ".join(c.name for c in missing()))
        return 0 if ok else 1
    if shutil.which("go") is None:
        log("the Go toolchain is not on PATH; install Go 1.24+ (the stack is built from the module proxy)")
        return 2
    try:
        build(args or None)
    except BuildError as exc:
        log(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
