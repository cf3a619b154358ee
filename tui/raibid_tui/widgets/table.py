"""A DataTable whose rows are keyed (by uid or id) and updated in place, repainting only the
changed row: ``DataTable.update_cell`` refreshes the whole widget, which with hundreds of rows
and a watch event per second is most of the TUI's CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

#: The private DataTable attributes :class:`_Internals` reaches, all of them (checked by
#: tests/test_tui_units.py::TestTextualInternals, so an upgrade that renames one fails there,
#: loudly, instead of in front of a user).
PRIVATE_ATTRIBUTES = ("_data", "_update_count", "_row_locations")


class _Internals:
    """The one place the TUI touches DataTable internals, and why: the public
    ``update_cell`` repaints the whole table (88 ms for 46 lines here, against 6 ms for the
    changed row — benchmarks/tui_repaint.py), and ``sort`` sees only cell values, while a
    cell may be cut or not hold the order at all. Textual is pinned below its next major."""

    def __init__(self, table: DataTable) -> None:
        self.table = table

    def set_cell(self, row_key: RowKey, column_key: ColumnKey, value: object) -> None:
        """Change a cell's value without a repaint (the caller repaints the row)."""
        self.table._data[row_key][column_key] = value  # noqa: SLF001 - see the class doc

    def invalidate(self) -> None:
        """Every render cache is keyed by this counter: bumping it invalidates cached lines; only
        regions marked dirty are rendered again."""
        self.table._update_count += 1  # noqa: SLF001 - see the class doc

    def order_rows(self, ordered: list[RowKey]) -> None:
        from textual._two_way_dict import TwoWayDict  # a private module: see the class doc

        self.table._row_locations = TwoWayDict({key: i for i, key in enumerate(ordered)})  # noqa: SLF001
        self.invalidate()


def _identity(value: object) -> object:
    """What makes a cell look the way it does. ``Text.__eq__`` compares only the characters
    and spans, so a cell that changes colour alone (yellow "…" to red) would not repaint."""
    if isinstance(value, Text):
        return (value.plain, str(value.style), tuple(value.spans))
    return value


def _width(value: object) -> int:
    return value.cell_len if isinstance(value, Text) else len(str(value))


class KeyedTable(DataTable):
    """Rows set by :meth:`upsert` (add or change) and :meth:`discard` (remove)."""

    def __init__(self, *, follow_row: bool = True, **kwargs: object) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: Keep the cursor on its row when rows move (see :meth:`_keeping_cursor`); off for a live list
        #: that only shows, where following would scroll the view away from the newest rows.
        self.follow_row = follow_row
        self._internals = _Internals(self)
        self._shown: dict[str, tuple[object, ...]] = {}
        #: Rows repainted by in-place updates (the benchmark reads it).
        self.row_repaints = 0

    def upsert(self, key: str, cells: Sequence[object]) -> bool:
        """Show ``cells`` in the row ``key``; returns False when nothing changed."""
        cells = tuple(cells)
        old = self._shown.get(key)
        if old is not None and tuple(map(_identity, old)) == tuple(map(_identity, cells)):
            return False
        self._shown[key] = cells
        if old is None:
            self.add_row(*cells, key=key)
            return True
        row_key = RowKey(key)
        widen = []
        for column, new, prev in zip(self.ordered_columns, cells, old, strict=False):
            if _identity(new) != _identity(prev):
                self._internals.set_cell(row_key, column.key, new)
                if column.auto_width and _width(new) > column.content_width:
                    widen.append((column.key, new))
        # Only the row's region is marked dirty below, so only that row is rendered again.
        self._internals.invalidate()
        if widen:
            for column_key, new in widen:
                self.update_cell(row_key, column_key, new, update_width=True)
        else:
            self.row_repaints += 1
            self.refresh_row(self.get_row_index(row_key))
        return True

    def discard(self, key: str) -> None:
        if self._shown.pop(key, None) is not None:
            with self._keeping_cursor():
                self.remove_row(key)

    def sort(self, *columns: ColumnKey | str, key: Callable[[Any], Any] | None = None,
             reverse: bool = False) -> KeyedTable:
        with self._keeping_cursor():
            super().sort(*columns, key=key, reverse=reverse)
        return self

    def sort_by_key(self, rank: Callable[[str], Any], reverse: bool = False) -> None:
        """Order the rows by ``rank(row key)``: ``DataTable.sort`` only sees cell values, and a
        cell may be cut (a long job id) or not hold the order at all (a submission time)."""
        ordered = sorted(self.rows, key=lambda row_key: rank(str(row_key.value)), reverse=reverse)
        with self._keeping_cursor():
            self._internals.order_rows(ordered)
        self.refresh()

    @contextmanager
    def _keeping_cursor(self) -> Iterator[None]:
        """Put the cursor back on its row after the rows moved under it. DataTable keeps the
        cursor's line, not its row: a re-sort or a removal above it would leave the cursor on
        another row, and Enter or an action would then open or act on a row the user did not
        pick (a watch event can land between the keypress that moved the cursor and Enter)."""
        key = self.selected_key() if self.follow_row and self.cursor_type == "row" else None
        yield
        if key is not None and key in self._shown:
            index = self.get_row_index(RowKey(key))
            if index != self.cursor_row:
                self.move_cursor(row=index)

    def keys(self) -> list[str]:
        return list(self._shown)

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:  # noqa: BLE001 - empty or moving table
            return None

    def clear_rows(self) -> None:
        self._shown.clear()
        self.clear()
