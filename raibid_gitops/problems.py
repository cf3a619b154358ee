"""A verify finding: where it is and what differs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in the config repository, located as precisely as known."""

    file: str
    field: str
    message: str
    line: int | None = None
    expected: str | None = None
    found: str | None = None

    def format(self) -> str:
        loc = self.file + (f":{self.line}" if self.line else "")
        text = f"{loc}: {self.field}: {self.message}"
        parts = [f"{what} {value}" for what, value in (("expected", self.expected), ("found", self.found))
                 if value is not None]
        if parts:
            text += f" ({', '.join(parts)})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}
