"""A panel refreshed by a thread worker on a timer (Changes, Queue, Agents): the blocking
read runs off the main thread, the widgets change on it, and a failure shows the banner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.containers import Vertical

from raibid_tui.widgets.banner import Banner

if TYPE_CHECKING:
    from raibid_tui.app import RaibidApp


class PollingPanel(Vertical):
    """Subclasses set ``INTERVAL``, ``TITLE_DOWN`` and implement ``read`` (worker thread) and
    ``show`` (main thread)."""

    if TYPE_CHECKING:
        app: RaibidApp  # the app this lives in, for the type checker

    INTERVAL = 5.0
    #: Banner title when ``read`` fails.
    TITLE_DOWN = "backend unreachable"

    def __init__(self, *, live: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.live = live
        #: What the last successful read returned (None before one succeeded).
        self.last: Any = None

    def source(self) -> Any:
        raise NotImplementedError

    def read(self) -> Any:
        raise NotImplementedError

    def show(self, data: Any) -> None:
        raise NotImplementedError

    def on_mount(self) -> None:
        if not self.live:
            return
        if self.source() is None:
            self.query_one(Banner).show(self.TITLE_DOWN, "not configured")
            return
        self.poll()
        self.set_interval(self.INTERVAL, self.poll)

    def poll(self) -> None:
        self._poll()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _poll(self) -> None:
        try:
            data = self.read()
        except Exception as exc:  # noqa: BLE001 - the banner says what failed; never a traceback
            self._from_thread(self.failed, exc)
            return
        self._from_thread(self.succeeded, data)

    def _from_thread(self, fn: Any, *args: Any) -> None:
        try:
            self.app.call_from_thread(self.app.guarded, fn, *args)
        except RuntimeError:  # app shutting down
            pass

    def succeeded(self, data: Any) -> None:
        self.last = data
        self.query_one(Banner).clear()
        self.show(data)

    def failed(self, error: BaseException) -> None:
        self.query_one(Banner).show(self.TITLE_DOWN, str(error))
