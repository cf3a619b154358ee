"""The Changes tab: settings by hash (config repo HEAD / live ConfigMap / agents) and the open
pull requests with their verify status; view a PR's diff, merge it (confirmed)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from raibid_tui.sources.changes import BAD, HEAD, LIVE, OK, WARN, ChangesSnapshot, PullRow, judge, problems
from raibid_tui.widgets import formatting as fmt
from raibid_tui.widgets.banner import Banner
from raibid_tui.widgets.polling import PollingPanel
from raibid_tui.widgets.table import KeyedTable

TONE_STYLE = {OK: "green", WARN: "bold yellow", BAD: "bold red"}
#: Lines of each settings problem shown under the table; the whole message is what
#: `raibid gitops verify` prints (or the agent logs).
PROBLEM_LINES = 3

VERIFY_STYLE = {"success": ("✔ passed", "green"), "failure": ("✘ failed", "bold red"),
                "error": ("✘ error", "bold red"), "pending": ("… running", "yellow"), "": ("- none", "dim")}


def verify_text(state: str) -> Text:
    label, style = VERIFY_STYLE.get(state, (state, ""))
    return Text(label, style=style)


def problem_text(found: tuple[tuple[str, str], ...]) -> Text:
    """Settings that do not validate or were refused: what, then why (up to PROBLEM_LINES)."""
    text = Text()
    for i, (what, why) in enumerate(found):
        text.append(("\n" if i else "") + "✘ " + what, style="bold red")
        lines = why.splitlines()
        for line in lines[:PROBLEM_LINES]:
            text.append("\n    " + line, style="red")
        if len(lines) > PROBLEM_LINES:
            text.append(f"\n    … {len(lines) - PROBLEM_LINES} more", style="red")
    return text


class ChangesPanel(PollingPanel):
    INTERVAL = 10.0
    TITLE_DOWN = "Changes could not be read"

    BINDINGS = [
        Binding("d", "diff", "View diff (enter)"),
        Binding("m", "merge", "Merge…"),
        Binding("R", "refresh", "Refresh"),
    ]

    DEFAULT_CSS = """
    ChangesPanel { height: 1fr; }
    ChangesPanel .section { text-style: bold; color: $accent; margin-top: 1; }
    ChangesPanel #settings-table { height: auto; max-height: 10; }
    ChangesPanel #settings-problems { height: auto; max-height: 12; padding: 0 1; display: none; }
    ChangesPanel #settings-problems.-shown { display: block; }
    ChangesPanel #pulls-table { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot = ChangesSnapshot()

    def compose(self) -> ComposeResult:
        yield Banner(id="changes-banner")
        yield Static("Settings (by hash)", classes="section")
        settings = KeyedTable(id="settings-table", cursor_type="none")
        for key, label in (("where", "WHERE"), ("hash", "SETTINGS HASH"), ("state", "STATE"), ("detail", "DETAIL")):
            settings.add_column(label, key=key)
        yield settings
        yield Static("", id="settings-problems")
        yield Static("Open pull requests", classes="section", id="pulls-title")
        pulls = KeyedTable(id="pulls-table")
        for key, label in (("number", "#"), ("title", "TITLE"), ("branch", "BRANCH"), ("author", "AUTHOR"),
                           ("verify", "raibid/verify"), ("mergeable", "MERGEABLE")):
            pulls.add_column(label, key=key)
        yield pulls

    def source(self) -> Any:
        return self.app.sources.changes

    def read(self) -> ChangesSnapshot:
        return self.source().snapshot()

    def succeeded(self, data: ChangesSnapshot) -> None:
        self.last = data
        self.show(data)

    def show(self, snap: ChangesSnapshot) -> None:
        self.snapshot = snap
        self.app.expected_hash = snap.live_hash or None
        banner = self.query_one(Banner)
        if snap.errors:
            # Only what could not be read; settings that do not validate are shown as such below.
            names = ", ".join(dict.fromkeys(e.split(":", 1)[0] for e in snap.errors))
            banner.show(f"Changes: cannot read {names}", "\n".join(snap.errors))
        else:
            banner.clear()
        head, live = snap.place(HEAD), snap.place(LIVE)
        settings = self.query_one("#settings-table", KeyedTable)
        keys = []
        for i, s in enumerate(snap.settings):
            key = f"{s.where}/{i}"
            keys.append(key)
            label, tone = judge(s, head, live)
            state = Text(label, style=TONE_STYLE.get(tone, "dim"))
            # The reasons of invalid and refused settings are listed in full under the table.
            detail = s.error or (f"{s.detail}; they keep their last good settings" if s.refused else s.detail)
            settings.upsert(key, (s.where, fmt.short_hash(s.hash), state, fmt.clip(detail, 70)))
        for key in set(settings.keys()) - set(keys):
            settings.discard(key)
        lines = problems(snap.settings)
        box = self.query_one("#settings-problems", Static)
        box.update(problem_text(lines))
        box.set_class(bool(lines), "-shown")
        title = "Open pull requests" + "".join(f" — {n}" for n in snap.notes)
        self.query_one("#pulls-title", Static).update(Text(title))
        pulls = self.query_one("#pulls-table", KeyedTable)
        current = {str(p.number) for p in snap.pulls}
        for key in set(pulls.keys()) - current:
            pulls.discard(key)
        for p in snap.pulls:
            pulls.upsert(str(p.number), (str(p.number), fmt.clip(p.title, 50), p.branch, p.author,
                                         verify_text(p.verify),
                                         Text("yes", style="green") if p.mergeable else Text("no", style="red")))

    def selected(self) -> PullRow | None:
        key = self.query_one("#pulls-table", KeyedTable).selected_key()
        return next((p for p in self.snapshot.pulls if str(p.number) == key), None)

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "pulls-table":
            self.action_diff()

    def action_refresh(self) -> None:
        if self.source() is not None:
            self.poll()

    def action_diff(self) -> None:
        pr = self.selected()
        if pr is not None and self.source() is not None:
            self._load_diff(pr)

    @work(thread=True, exclusive=True, group="changes-diff", exit_on_error=False)
    def _load_diff(self, pr: PullRow) -> None:
        try:
            text = self.source().diff(pr)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            # Bind the text now: Python unbinds `exc` when the except block ends.
            message = str(exc)
            self._from_thread(lambda: self.app.notify(message, title=f"Diff of #{pr.number} failed",
                                                      severity="error"))
            return
        self._from_thread(self._show_diff, pr, text)

    def _show_diff(self, pr: PullRow, text: str) -> None:
        from raibid_tui.screens.diff import DiffScreen

        def done(merge: bool | None) -> None:
            if merge:
                self._confirm_merge(pr)

        self.app.push_screen(DiffScreen(pr, text), done)

    def action_merge(self) -> None:
        pr = self.selected()
        if pr is not None and self.source() is not None:
            self._confirm_merge(pr)

    def _confirm_merge(self, pr: PullRow) -> None:
        from raibid_tui.screens.confirm import ConfirmScreen

        warn = "" if pr.verify == "success" else f"  raibid/verify is {pr.verify or 'missing'}!"
        self.app.push_screen(
            ConfirmScreen(f"Merge #{pr.number} “{pr.title}” into the config repo?",
                          f"Flux applies it on its next sync.{warn}"),
            lambda yes: self._merge_if(pr, yes))

    def _merge_if(self, pr: PullRow, yes: bool | None) -> None:
        if yes:
            self._merge(pr)

    @work(thread=True, exclusive=True, group="changes-merge", exit_on_error=False)
    def _merge(self, pr: PullRow) -> None:
        try:
            self.source().merge(pr)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            message = str(exc)
            self._from_thread(lambda: self.app.notify(message, title=f"Merge of #{pr.number} failed",
                                                      severity="error", timeout=12))
            return
        self._from_thread(lambda: self.app.notify(f"#{pr.number} merged", title="Changes"))
        self._from_thread(self.poll)
