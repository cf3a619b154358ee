"""`raibid gitops status` on the terminal: the table of Flux objects, the pools, and the exit
code. The data comes from :mod:`raibid_gitops.gitops.status`; this module only presents it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raibid_gitops.gitops import flux, keda
from raibid_gitops.gitops.status import (
    HEADERS,
    MESSAGE_TAIL,
    MESSAGE_WIDTH,
    POOL_HEADERS,
    Row,
    collect,
    collect_pools,
    committed_max_replicas,
    exit_code,
    head_check,
    rows,
    watch_objects,
)

if TYPE_CHECKING:  # pragma: no cover
    from raibid_gitops.clients.kube import Kube


def _cut(text: str, width: int = MESSAGE_WIDTH) -> str:
    """One line of at most ``width`` characters: the start and the end (the cause) of a longer one."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    tail = min(MESSAGE_TAIL, width // 2)
    return text[: width - tail - 3] + "..." + text[-tail:]


def render_table(rs: list[Row], *, all_namespaces: bool, color: bool, head_sha: str | None,
                 stream: Any = None, wide: bool = False) -> bool:
    """Print the table; True when a message was cut (-o wide prints every one whole)."""
    from raibid_gitops.cli.output import table

    stream = stream or sys.stdout
    prefix = {flux.GIT_REPOSITORY: "gitrepository/", flux.KUSTOMIZATION: "kustomization/"}
    headers = (("NAMESPACE",) if all_namespaces else ()) + HEADERS
    body = []
    for r in rs:
        cells = ([r.namespace] if all_namespaces else []) + [
            prefix.get(r.kind, "") + r.name, flux.format_revision(r.revision), str(r.suspended), r.ready,
            r.reason, " ".join(r.message.split()) if wide else _cut(r.message), r.head or "",
        ]
        body.append(cells)
    if head_sha is None:
        headers = headers[:-1]
        body = [b[:-1] for b in body]
    if not color:
        table(headers, body, stream)
    else:
        import io

        buf = io.StringIO()
        table(headers, body, buf)
        lines = buf.getvalue().splitlines()
        stream.write(lines[0] + "\n")
        for r, line in zip(rs, lines[1:], strict=False):
            if r.failing_new_commit or r.head == "FAILED":
                line = f"\033[31m{line}\033[0m"
            elif r.ready == "False" or r.suspended:
                line = f"\033[33m{line}\033[0m"
            stream.write(line + "\n")
    for r in rs:
        if r.failing_new_commit:
            stream.write(f"! {r.kind} {r.namespace}/{r.name}: {flux.format_revision(r.last_attempted)} failed "
                         f"({r.reason}); the cluster still runs {flux.format_revision(r.last_applied) or 'nothing'}\n")
    if head_sha is not None:
        stream.write(f"HEAD {head_sha[:12]} of the config repository\n")
    return not wide and any(len(" ".join(r.message.split())) > MESSAGE_WIDTH for r in rs)


def render_pools(pools: list[keda.Pool], committed: int | None, stream: Any = None, *, wide: bool = False) -> None:
    from raibid_gitops.cli.output import table

    stream = stream or sys.stdout
    body = [[f"{p.namespace}/{p.name}", p.verdict.state, p.verdict.reason, str(p.active),
             "" if p.max_replicas is None else str(p.max_replicas), "" if committed is None else str(committed),
             str(p.succeeded), str(p.failed)] for p in pools]
    table(POOL_HEADERS, body, stream)
    for p in pools:
        if p.verdict.rejected:
            message = " ".join(p.verdict.message.split()) if wide else _cut(p.verdict.message)
            stream.write(f"! ScaledJob {p.namespace}/{p.name}: KEDA: {p.verdict.reason}: {message}\n")


def run_status(kube: Kube, *, namespace: str | None, repo_dir: Path | None, output: str = "text",
               watch: bool = False) -> int:
    from raibid_gitops.cli import use_color
    from raibid_gitops.cli.output import emit

    head = head_check(repo_dir)

    committed = committed_max_replicas(head)

    def show(objs: list[dict[str, Any]]) -> tuple[list[Row], list[keda.Pool]]:
        rs = rows(objs, head)
        pools = collect_pools(kube, objs)
        if output in ("text", "table", "wide"):
            wide = output == "wide"
            cut = render_table(rs, all_namespaces=namespace is None, color=use_color(sys.stdout),
                               head_sha=head.head if head else None, wide=wide)
            if pools:
                print()
                render_pools(pools, committed, wide=wide)
            if cut:
                print("(long messages are cut in the middle; -o wide shows them whole)", file=sys.stderr)
            if not rs:
                where = "any namespace" if namespace is None else f"namespace {namespace}"
                print(f"no Flux GitRepository or Kustomization in {where}", file=sys.stderr)
        else:
            data = {"head": head.head if head else None, "objects": [r.to_dict() for r in rs],
                    "pools": [{**p.to_dict(), "committedMaxReplicas": committed} for p in pools]}
            emit(data, output)
        sys.stdout.flush()
        return rs, pools

    if not watch:
        return exit_code(*show(collect(kube, namespace)))
    for objs in watch_objects(kube, namespace):
        show(objs)
        print(file=sys.stdout, flush=True)
    return 0
