"""set, pr: changes as commits and pull requests."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from raibid_gitops.cli.options import add_dir_flag, pr_number
from raibid_gitops.cli.output import add_output_flag, is_data


def register(cmds: argparse._SubParsersAction) -> None:
    p = cmds.add_parser(
        "set", help="change settings as one verified commit (to main, or as a pull request)",
        description="Validate KEY=VALUE against the settings model, update settings.yaml and every marked "
                    "field, verify, print the semantic diff of the rendered objects, commit and push to the "
                    "branch Flux watches (or open a Gitea pull request with --pr). If the branch moved, the "
                    "change is applied again on the new head; the same key changed meanwhile is a conflict.",
    )
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="e.g. agents.maxReplicas=12")
    p.add_argument("-C", "--repo", dest="repo", metavar="DIR|URL",
                   help="config repository: a directory (default: the current one) or a Gitea http(s) URL "
                        "to clone into a temporary directory")
    p.add_argument("-m", "--message", help="why: added as the first paragraph of the commit and PR body")
    p.add_argument("--pr", action="store_true", help="push a branch and open a pull request instead of pushing to main")
    p.add_argument("--dry-run", action="store_true", help="show the change and the diff; change nothing")
    p.add_argument("--author", metavar="'NAME <EMAIL>'",
                   help="commit author (default: RAIBID_AUTHOR_NAME/EMAIL, else git config user.name/email)")
    p.add_argument("--gitea-url", metavar="URL",
                   help="the Gitea repository URL for --pr when the remote is not http(s) (or RAIBID_GITEA_URL)")
    add_output_flag(p)
    p.set_defaults(handler=cmd_set)

    p = cmds.add_parser(
        "revert", help="undo the settings change of a commit, as a new verified commit (or a pull request)",
        description="Set every setting COMMIT changed back to its value before COMMIT, on today's head: the "
                    "marked fields are recomputed, verify runs, the commit is pushed like `set` (or proposed "
                    "with --pr). A setting changed again since COMMIT is a conflict, never overwritten. A commit "
                    "that changed more than settings is refused (use `git revert`, then `raibid gitops sync`).")
    p.add_argument("commit", nargs="?", default="HEAD", help="the commit to undo (default HEAD)")
    p.add_argument("-C", "--repo", dest="repo", metavar="DIR", help="config repository (default: the current one)")
    p.add_argument("-m", "--message", help="why: added to the commit and PR body")
    p.add_argument("--pr", action="store_true", help="open a pull request instead of pushing to main")
    p.add_argument("--dry-run", action="store_true", help="show the change and the diff; change nothing")
    p.add_argument("--author", metavar="'NAME <EMAIL>'", help="commit author")
    p.add_argument("--gitea-url", metavar="URL", help="the Gitea repository URL for --pr (or RAIBID_GITEA_URL)")
    add_output_flag(p, ("text", "json", "yaml"), default="text")
    p.set_defaults(handler=cmd_revert)

    pr = cmds.add_parser("pr",
                         help="list, show, verify, approve, merge and close pull requests of the config repository",
                         description="Pull requests on Gitea. The repository comes from -C DIR's remote origin, "
                                     "--gitea-url, or RAIBID_GITEA_URL.")
    prs = pr.add_subparsers(dest="pr_command", metavar="{list,show,verify,approve,merge,close}")

    def common(sp: argparse.ArgumentParser) -> None:
        add_dir_flag(sp)
        sp.add_argument("--gitea-url", metavar="URL", help="repository URL, e.g. http://HOST/raibid/raibid-config")

    sp = prs.add_parser("list", help="open pull requests with their raibid/verify status")
    common(sp)
    sp.add_argument("--state", choices=("open", "closed", "all"), default="open")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_list)

    sp = prs.add_parser("show", help="one pull request: state, checks, reviews, body")
    common(sp)
    sp.add_argument("number", type=pr_number, metavar="N", help="the pull request number (7 or #7)")
    sp.add_argument("--diff", action="store_true", help="also print the PR's text diff")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_show)

    sp = prs.add_parser("verify", help="verify a pull request's head and report it as commit status raibid/verify",
                        description="Fetch the PR's head as Gitea has it (any PR, including one edited in the web "
                                    "editor), run verify on it, and post raibid/verify on it. Exit 1 if verify fails.")
    common(sp)
    sp.add_argument("number", type=pr_number, metavar="N", help="the pull request number (7 or #7)")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_verify)

    sp = prs.add_parser("approve", help="approve a pull request (as the token's user)",
                        description="Approve as the token's user. Gitea refuses an approval from the pull "
                                    "request's author: a change made with `set --pr` needs a second user to "
                                    "approve it.")
    common(sp)
    sp.add_argument("number", type=pr_number, metavar="N", help="the pull request number (7 or #7)")
    sp.add_argument("-m", "--message", default="", help="review comment")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_approve)

    sp = prs.add_parser("merge", help="merge a pull request whose raibid/verify status is success")
    common(sp)
    sp.add_argument("number", type=pr_number, metavar="N", help="the pull request number (7 or #7)")
    sp.add_argument("--style", choices=("merge", "rebase", "rebase-merge", "squash", "fast-forward-only"),
                    default="merge", help="merge style (default merge)")
    sp.add_argument("--delete-branch", action="store_true", help="delete the PR branch after merging")
    sp.add_argument("--force", action="store_true", help="merge even if raibid/verify is not success")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_merge)

    sp = prs.add_parser("close", help="close a pull request without merging it",
                        description="Close an open pull request without merging (a change not wanted after all). "
                                    "Closing one already closed changes nothing.")
    common(sp)
    sp.add_argument("number", type=pr_number, metavar="N", help="the pull request number (7 or #7)")
    sp.add_argument("--delete-branch", action="store_true", help="also delete the PR's branch")
    add_output_flag(sp)
    sp.set_defaults(handler=cmd_pr_close)
    pr.set_defaults(handler=lambda args: (pr.print_help(sys.stderr), 2)[1])


def _author(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    # Whole-string match: a newline in NAME would forge a second header line in the commit.
    m = re.fullmatch(r"[ \t]*([^<>\n]+?)[ \t]*<([^<>\s]+@[^<>\s]+)>[ \t]*", text)
    if not m or len(text) > 256:
        from raibid_gitops.errors import SettingsError, shown

        raise SettingsError(f"--author {shown(text)} is not 'NAME <EMAIL>'")
    return m.group(1), m.group(2)


def cmd_set(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.output import progress
    from raibid_gitops.gitops.change import set_settings

    result = set_settings(args.assignments, repo=args.repo, message=args.message, pr=args.pr,
                          dry_run=args.dry_run, author=_author(args.author), gitea_url=args.gitea_url,
                          progress=progress)
    return _report_change(args, result)


def cmd_revert(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.output import progress
    from raibid_gitops.gitops.revert import revert

    result = revert(args.commit, repo=args.repo, message=args.message, pr=args.pr, dry_run=args.dry_run,
                    author=_author(args.author), gitea_url=args.gitea_url, progress=progress)
    return _report_change(args, result)


def _report_change(args: argparse.Namespace, result: Any) -> int:
    """What set and revert print: the changes and the rendered diff on stdout, where the commit
    went on stderr."""
    from raibid_gitops.cli.output import emit, progress
    from raibid_gitops.gitops import objdiff
    from raibid_gitops.gitops.change import format_value

    if is_data(args.output):
        emit(result.to_dict(), args.output)
    else:
        for c in result.changes:
            print(f"{c.key}: {format_value(c.old)} → {format_value(c.new)}")
        if result.changes:
            print()
            sys.stdout.write(objdiff.format_text(result.diff))
        if result.pr_url:
            print(result.pr_url)
    for note in result.notes:
        progress(note)
    if result.dry_run and result.changes:
        progress("dry run: nothing was changed")
    elif result.commit:
        # "pushed" only when the remote has the commit: a commit left on the local branch
        # (no remote) is not on its way to the cluster, and the user must know.
        tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        if result.pr_number:
            progress(f"committed {result.commit[:12]}, pushed it to branch {result.pushed_to} and opened "
                     f"pull request #{result.pr_number}")
        elif result.pushed_to:
            progress(f"committed {result.commit[:12]} and pushed it to {result.pushed_to}{tries}")
        else:
            progress(f"committed {result.commit[:12]} on the local branch only: not pushed")
    return 0


def _target(args: argparse.Namespace):
    from pathlib import Path

    from raibid_gitops.gitops.layout import find_repo_root
    from raibid_gitops.gitops.status_report import client_for, resolve_target

    root = None
    if args.dir is not None or not args.gitea_url:  # a given -C is checked even beside --gitea-url
        root = find_repo_root(Path(args.dir) if args.dir else None)
    ref = resolve_target(root, url=args.gitea_url)
    return ref, client_for(ref)


def _verify_state(client: Any, ref: Any, sha: str) -> tuple[str, str]:
    from raibid_gitops.gitops.status_report import CONTEXT

    st = client.status_of(ref, sha, CONTEXT)
    if not st:
        return "none", ""
    return str(st.get("status") or st.get("state")), str(st.get("description") or "")


def _pull_summary(client: Any, ref: Any, pull: dict[str, Any]) -> dict[str, Any]:
    sha = pull["head"]["sha"]
    state, desc = _verify_state(client, ref, sha)
    return {
        "number": pull["number"], "title": pull["title"], "state": "merged" if pull.get("merged") else pull["state"],
        "head": pull["head"]["ref"], "headSha": sha, "base": pull["base"]["ref"],
        "author": (pull.get("user") or {}).get("login"), "mergeable": pull.get("mergeable"),
        "verify": state, "verifyDescription": desc, "url": pull.get("html_url"),
    }


def cmd_pr_list(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.output import emit, table

    ref, client = _target(args)
    with client:
        rows = [_pull_summary(client, ref, p) for p in client.list_pulls(ref, args.state)]
    if is_data(args.output):
        emit(rows, args.output)
        return 0
    if not rows:
        print(f"no {args.state} pull requests in {ref.full_name}", file=sys.stderr)
        return 0
    table(["#", "TITLE", "BRANCH", "AUTHOR", "STATE", "MERGEABLE", "VERIFY"],
          [[r["number"], r["title"], r["head"], r["author"], r["state"], r["mergeable"], r["verify"]] for r in rows])
    return 0


def cmd_pr_show(args: argparse.Namespace) -> int:
    from raibid_gitops.cli.output import emit

    ref, client = _target(args)
    with client:
        pull = client.get_pull(ref, args.number)
        info = _pull_summary(client, ref, pull)
        info["reviews"] = [{"user": (r.get("user") or {}).get("login"), "state": r.get("state")}
                           for r in client.list_reviews(ref, args.number)]
        info["body"] = pull.get("body") or ""
        diff = client.pull_diff(ref, args.number) if args.diff else None
    if diff is not None:
        info["diff"] = diff
    if is_data(args.output):
        emit(info, args.output)
        return 0
    print(f"#{info['number']} {info['title']}")
    print(f"  state:     {info['state']}   {info['head']} → {info['base']} ({info['headSha'][:12]})")
    print(f"  author:    {info['author']}")
    print(f"  mergeable: {info['mergeable']}")
    print(f"  verify:    {info['verify']}" + (f" ({info['verifyDescription']})" if info["verifyDescription"] else ""))
    reviews = ", ".join(f"{r['user']}: {r['state']}" for r in info["reviews"]) or "none"
    print(f"  reviews:   {reviews}")
    print(f"  url:       {info['url']}")
    if info["body"]:
        print()
        print(info["body"].rstrip())
    if diff:
        print()
        sys.stdout.write(diff)
    return 0


def cmd_pr_verify(args: argparse.Namespace) -> int:
    from raibid_gitops.gitops.status_report import verify_pull

    ref, client = _target(args)
    client.close()  # verify_pull opens its own
    report, posted = verify_pull(ref, args.number)
    print(f"commit status raibid/verify={posted.state} on {posted.repo}#{args.number} ({posted.sha[:12]})",
          file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"number": args.number, **report.to_dict()}, args.output)
    else:
        for p in report.problems:
            print(p.format())
    return 0 if report.ok else 1


def cmd_pr_approve(args: argparse.Namespace) -> int:
    ref, client = _target(args)
    with client:
        client.get_pull(ref, args.number)  # a clear "does not exist" before the review call
        review = client.approve_pull(ref, args.number, args.message)
    print(f"approved #{args.number} in {ref.full_name}", file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"number": args.number, "repository": ref.full_name, "state": "approved",
              "user": ((review or {}).get("user") or {}).get("login")}, args.output)
    return 0


def _follow_merge(args: argparse.Namespace, branch: str) -> None:
    """Bring the local checkout up to the merge (fast-forward only), so the next `sync` or `get`
    reads what Flux will apply; say so when it cannot."""
    from pathlib import Path

    from raibid_gitops.clients.git import Repo, auth_from_env, fast_forward
    from raibid_gitops.errors import ConfigRepoError, GitError
    from raibid_gitops.gitops.layout import find_repo_root

    try:
        root = find_repo_root(Path(args.dir) if args.dir else None)
        repo = Repo(root, auth_from_env())
        head = fast_forward(repo, branch)
    except (ConfigRepoError, GitError):
        return  # no local checkout (--gitea-url from elsewhere) or no way to reach it: nothing to update
    if head is None:
        print(f"note: {root} was not fast-forwarded to {branch} (another branch checked out, local commits or "
              f"changes in the way); `git pull` before `raibid gitops get`", file=sys.stderr)
    else:
        print(f"fast-forwarded {root} to {head[:12]}", file=sys.stderr)


def cmd_pr_merge(args: argparse.Namespace) -> int:
    from raibid_gitops.errors import GiteaConflict
    from raibid_gitops.gitops.status_report import CONTEXT

    ref, client = _target(args)
    with client:
        pull = client.get_pull(ref, args.number)
        if pull.get("merged"):
            raise GiteaConflict(f"#{args.number} is already merged", status=None)
        if pull.get("state") != "open":
            raise GiteaConflict(f"#{args.number} is {pull.get('state')}, not open", status=None)
        sha = pull["head"]["sha"]
        state, desc = _verify_state(client, ref, sha)
        if state != "success" and not args.force:
            raise GiteaConflict(
                f"#{args.number}: commit status {CONTEXT} on its head {sha[:12]} is {state}"
                + (f" ({desc})" if desc else "") + "; not merging",
                hint=f"fix the branch, or check it with `raibid gitops pr verify {args.number}`; --force merges anyway",
            )
        # head_sha: Gitea refuses if someone pushed to the branch after we looked at its status.
        client.merge_pull(ref, args.number, style=args.style, delete_branch=args.delete_branch, head_sha=sha)
        merged = client.get_pull(ref, args.number)
    print(f"merged #{args.number} into {merged['base']['ref']} as {str(merged.get('merge_commit_sha'))[:12]}",
          file=sys.stderr)
    _follow_merge(args, str(merged["base"]["ref"]))
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"number": args.number, "repository": ref.full_name, "state": "merged", "base": merged["base"]["ref"],
              "mergeCommit": merged.get("merge_commit_sha")}, args.output)
    else:
        print(merged.get("merge_commit_sha") or "")
    return 0


def cmd_pr_close(args: argparse.Namespace) -> int:
    from raibid_gitops.errors import GiteaConflict

    ref, client = _target(args)
    with client:
        pull = client.get_pull(ref, args.number)
        if pull.get("merged"):
            raise GiteaConflict(f"#{args.number} is already merged; closing it would change nothing", status=None,
                                hint="to undo its change, set the old values again (or revert the merge commit)")
        already = pull.get("state") == "closed"
        if not already:
            client.close_pull(ref, args.number)
        branch = pull["head"]["ref"]
        deleted = False
        if args.delete_branch and (pull["head"].get("repo") or {}).get("full_name", ref.full_name) == ref.full_name:
            client.delete_branch(ref, branch)
            deleted = True
    note = " (it was already closed)" if already else ""
    print(f"closed #{args.number} in {ref.full_name}{note}" + (f"; deleted branch {branch}" if deleted else ""),
          file=sys.stderr)
    if is_data(args.output):
        from raibid_gitops.cli.output import emit

        emit({"number": args.number, "repository": ref.full_name, "state": "closed", "wasClosed": already,
              "branch": branch, "branchDeleted": deleted}, args.output)
    return 0
