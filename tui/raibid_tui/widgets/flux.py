"""The Flux tab: GitRepositories and Kustomizations, live through watches, rows keyed by uid
and updated in place; reconcile (``r``) and suspend/resume (``s``), each confirmed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static
from textual.worker import get_current_worker

from raibid_gitops.errors import RaibidError
from raibid_tui.sources.flux import GIT_REPOSITORY, KUSTOMIZATION, FluxRow, FluxUpdate, short_revision
from raibid_tui.widgets import formatting as fmt
from raibid_tui.widgets.banner import Banner
from raibid_tui.widgets.table import KeyedTable

if TYPE_CHECKING:
    from raibid_tui.app import RaibidApp
    from raibid_tui.sources import FluxReader

COLUMNS = (
    ("kind", "KIND"), ("namespace", "NAMESPACE"), ("name", "NAME"), ("status", "READY"),
    ("revision", "REVISION"), ("subject", "COMMIT"), ("attempted", "ATTEMPTED"),
    ("suspended", "SUSPENDED"), ("age", "AGE"), ("message", "MESSAGE"),
)
#: Widths of the free-text columns; the detail view shows them in full.
SUBJECT_WIDTH, MESSAGE_WIDTH = 36, 60
#: The attempted commit's subject beside its revision in ATTEMPTED.
ATTEMPTED_SUBJECT_WIDTH = 20
#: Ages are re-rendered this often (seconds); only rows whose text changed repaint.
AGE_REFRESH = 30.0


def attempted_cell(row: FluxRow) -> Text:
    """ATTEMPTED: "= applied", or the other commit Flux attempted with its own subject — red
    ⚠ when that attempt failed (the cluster still runs REVISION/COMMIT), yellow while applying."""
    if row.kind != KUSTOMIZATION.kind:
        return Text("-", style="dim")
    if not row.new_attempt:
        return Text("= applied" if row.attempted else "-", style="dim")
    label = short_revision(row.attempted)
    if row.attempted_subject:
        label += " " + fmt.clip(row.attempted_subject, ATTEMPTED_SUBJECT_WIDTH)
    if row.failing_new_commit:
        return Text(f"⚠ {label}", style="bold red")
    return Text(f"… {label}", style="yellow")


def cells(row: FluxRow, now) -> tuple[object, ...]:
    """What the table shows for ``row``: REVISION and COMMIT are what is applied; ATTEMPTED
    another commit Flux tried (a failing newer commit stands out)."""
    kind = "GitRepo" if row.kind == GIT_REPOSITORY.kind else "Kustomization"
    attempted = attempted_cell(row)
    message = f"{row.reason}: {row.message}" if row.reason and row.message else row.message or row.reason
    return (
        kind, row.namespace, row.name, fmt.status(row.status), row.short_revision or "-",
        fmt.clip(row.subject, SUBJECT_WIDTH) or "-", attempted,
        Text("yes", style="bold magenta") if row.suspended else Text("no", style="dim"),
        fmt.age(row.created, now), fmt.clip(message, MESSAGE_WIDTH),
    )


def _order(row: FluxRow) -> tuple[int, str, str]:
    return (0 if row.kind == GIT_REPOSITORY.kind else 1, row.namespace, row.name)


class FluxPanel(Vertical):
    """Watches both kinds in two thread workers; events reach the table on the main thread."""

    if TYPE_CHECKING:
        app: RaibidApp  # the app this lives in, for the type checker

    BINDINGS = [
        Binding("i", "details", "Details (enter)"),
        Binding("r", "reconcile", "Reconcile"),
        Binding("s", "suspend", "Suspend/resume"),
    ]

    DEFAULT_CSS = """
    FluxPanel { height: 1fr; }
    FluxPanel > #flux-progress { height: auto; display: none; color: $warning; padding: 0 1; }
    FluxPanel > #flux-progress.-active { display: block; }
    FluxPanel > KeyedTable { height: 1fr; }
    """

    def __init__(self, *, live: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: dict[str, FluxRow] = {}
        self.live = live
        self._stop = threading.Event()
        self._errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Banner(id="flux-banner")
        yield Static(id="flux-progress")
        table = KeyedTable(id="flux-table")
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#flux-table", KeyedTable)

    def on_mount(self) -> None:
        source = self.app.sources.flux
        if source is None:
            self.query_one(Banner).show("Flux: not configured", "no Kubernetes connection was given")
            return
        if self.live:
            self._watch_gitrepositories(source)
            self._watch_kustomizations(source)
            self.set_interval(AGE_REFRESH, self.refresh_ages)

    def on_unmount(self) -> None:
        self._stop.set()

    # -- watches (thread workers) -----------------------------------------------------------

    @work(thread=True, exclusive=True, group="flux-watch-gitrepositories", exit_on_error=False)
    def _watch_gitrepositories(self, source: FluxReader) -> None:
        self._watch(source, GIT_REPOSITORY.kind)

    @work(thread=True, exclusive=True, group="flux-watch-kustomizations", exit_on_error=False)
    def _watch_kustomizations(self, source: FluxReader) -> None:
        self._watch(source, KUSTOMIZATION.kind)

    def _watch(self, source: FluxReader, kind: str) -> None:
        worker = get_current_worker()

        def emit(update: FluxUpdate) -> None:
            if not worker.is_cancelled and not self._stop.is_set():
                self._from_thread(self.apply, update)

        def on_error(error: RaibidError | None) -> None:
            if not worker.is_cancelled and not self._stop.is_set():
                self._from_thread(self.set_error, kind, error)

        try:
            source.watch(kind, emit, on_error, self._stop)
        except Exception as exc:  # noqa: BLE001 - a watch that dies shows why; never a traceback
            self._from_thread(self.set_error, kind, exc)

    def _from_thread(self, fn, *args) -> None:
        try:
            self.app.call_from_thread(self.app.guarded, fn, *args)
        except RuntimeError:  # the app is shutting down
            self._stop.set()

    # -- main thread ------------------------------------------------------------------------

    def apply(self, update: FluxUpdate) -> None:
        """Apply a watch update: only rows that changed are touched (and repainted)."""
        table = self.table
        now = self.app.now()
        if update.reset:
            keep = {r.uid for r in update.rows}
            for uid in [u for u, r in self.rows.items() if r.kind == update.kind and u not in keep]:
                self.rows.pop(uid, None)
                table.discard(uid)
            rows: Sequence[FluxRow] = sorted(update.rows, key=_order)
        else:
            rows = update.rows
        for uid in update.deleted:
            self.rows.pop(uid, None)
            table.discard(uid)
        for row in rows:
            self.rows[row.uid] = row
            table.upsert(row.uid, cells(row, now))
        if update.reset:
            # New rows are appended; after a (re)list put them in order once.
            table.sort("kind", "namespace", "name", key=lambda k: (k[0] != "GitRepo", k[1], k[2]))

    def set_rows(self, rows: Sequence[FluxRow]) -> None:
        """Show exactly ``rows`` (tests and snapshots)."""
        for kind in (GIT_REPOSITORY.kind, KUSTOMIZATION.kind):
            self.apply(FluxUpdate(kind, rows=tuple(r for r in rows if r.kind == kind), reset=True))

    def refresh_ages(self) -> None:
        now = self.app.now()
        for uid, row in self.rows.items():
            self.table.upsert(uid, cells(row, now))

    def set_error(self, kind: str, error: BaseException | None) -> None:
        if error is None:
            self._errors.pop(kind, None)
        else:
            self._errors[kind] = str(error)
        banner = self.query_one(Banner)
        if self._errors:
            banner.show("Kubernetes unreachable — Flux rows may be out of date",
                        "\n".join(dict.fromkeys(self._errors.values())))
        else:
            banner.clear()

    def selected(self) -> FluxRow | None:
        key = self.table.selected_key()
        return self.rows.get(key) if key else None

    def show_progress(self, message: str | None) -> None:
        progress = self.query_one("#flux-progress", Static)
        progress.set_class(bool(message), "-active")
        progress.update(Text(f"⟳ {message}") if message else "")

    # -- actions ----------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        event.stop()
        self.action_details()

    def action_details(self) -> None:
        row = self.selected()
        if row is not None:
            from raibid_tui.screens.flux_detail import FluxDetailScreen

            self.app.push_screen(FluxDetailScreen(row))

    def action_reconcile(self) -> None:
        row, source = self.selected(), self.app.sources.flux
        if row is None or source is None:
            return
        from raibid_tui.screens.confirm import ConfirmScreen

        what = "with its source" if row.kind == KUSTOMIZATION.kind else "(fetch the repository)"

        def done(yes: bool | None) -> None:
            if yes:
                self.show_progress(f"reconciling {row.ref}…")
                self._reconcile(source, row)

        self.app.push_screen(ConfirmScreen(f"Reconcile {row.ref} {what}?",
                                           "Waits until the source's newest commit is applied and Ready."), done)

    def action_suspend(self) -> None:
        row, source = self.selected(), self.app.sources.flux
        if row is None or source is None:
            return
        from raibid_tui.screens.confirm import ConfirmScreen

        verb = "Resume" if row.suspended else "Suspend"
        detail = ("Flux will apply this object's source again." if row.suspended
                  else "Flux stops applying changes to it until resumed.")

        def done(yes: bool | None) -> None:
            if yes:
                self._suspend(source, row, not row.suspended)

        self.app.push_screen(ConfirmScreen(f"{verb} {row.ref}?", detail), done)

    @work(thread=True, exclusive=True, group="flux-action", exit_on_error=False)
    def _reconcile(self, source: FluxReader, row: FluxRow) -> None:
        try:
            revision = source.reconcile(row, progress=lambda m: self._from_thread(self.show_progress, m))
        except Exception as exc:  # noqa: BLE001 - shown to the user, never raised
            self._from_thread(self._action_failed, f"Reconcile {row.ref} failed", exc)
            return
        self._from_thread(self._action_done, f"{row.ref} applied {short_revision(revision)} and is Ready")

    @work(thread=True, exclusive=True, group="flux-action", exit_on_error=False)
    def _suspend(self, source: FluxReader, row: FluxRow, suspend: bool) -> None:
        try:
            source.set_suspended(row, suspend)
        except Exception as exc:  # noqa: BLE001
            self._from_thread(self._action_failed, f"{'Suspend' if suspend else 'Resume'} {row.ref} failed", exc)
            return
        self._from_thread(self._action_done, f"{row.ref} {'suspended' if suspend else 'resumed'}")

    def _action_done(self, message: str) -> None:
        self.show_progress(None)
        self.app.notify(message, title="Flux")

    def _action_failed(self, title: str, error: BaseException) -> None:
        self.show_progress(None)
        self.app.notify(str(error), title=title, severity="error", timeout=12)
