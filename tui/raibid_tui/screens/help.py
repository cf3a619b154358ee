"""``?``: every key binding, by tab."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]raibid tui[/b] — Flux, pending changes, the queue and the agents

[b]Everywhere[/b]
  1 2 3 4      Flux / Changes / Queue / Agents tab
  tab          next widget          ?   this help          q   quit

[b]Flux[/b]  (live through Kubernetes watches)
  enter / i    details: conditions and recent events
  r            reconcile with source; waits until the commit is applied and Ready
  s            suspend / resume
  READY        Failed/Stalled: the last attempt failed (also while Flux retries)
               Waiting: a dependency is not ready;  Reconciling: in progress
  COMMIT       the subject of the applied REVISION
  ATTEMPTED    ⚠ red: a newer commit failed, the cluster runs REVISION
               … yellow: a newer commit not applied yet

[b]Changes[/b]
  settings     config repo HEAD, live ConfigMap, what agents run: ✔ valid, = HEAD,
               ✘ does not validate (reason below the table), ✘ refused by agents
  enter / d    view the selected pull request's diff
  m            merge the selected pull request (confirmed)
  R            refresh now

[b]Queue[/b]   lag, pending, dead letters, throughput; the newest 50 jobs
[b]Agents[/b]  ⚠ stale: on other settings than the live ConfigMap; ✘ in REFUSED SETTINGS:
        the agent refused a version and keeps its last good settings

A backend that cannot be reached shows a red banner in its own tab; the others keep working.
Every change asks for confirmation (y / n).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; height: auto; max-height: 90%; border: thick $accent;
                                  background: $surface; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP)

    def action_close(self) -> None:
        self.dismiss(None)
