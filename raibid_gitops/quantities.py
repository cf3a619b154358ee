"""Kubernetes resource quantities ("2", "1500m", "4Gi"), enough to compare capacities."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
#: Whole-string match (no surrounding spaces, no trailing newline): Kubernetes refuses those,
#: so the model must too. 18 integer digits is more than any node has (and than int64 milli-units).
_QUANTITY = re.compile(r"([0-9]{1,18}(?:\.[0-9]{1,9})?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?")


def parse_quantity(text: str | int | float) -> Decimal:
    """Return the quantity's value in base units; ValueError with a readable message if malformed."""
    from raibid_gitops.errors import shown

    s = str(text)
    m = _QUANTITY.fullmatch(s)
    if not m:
        raise ValueError(f"{shown(s)} is not a Kubernetes quantity (examples: 2, 500m, 4Gi)")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{s!r} is not a number") from exc
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    return number * _DECIMAL[suffix]


def format_cpu(value: Decimal) -> str:
    return f"{value.normalize():f}" if value == value.to_integral_value() else f"{int(value * 1000)}m"


def format_bytes(value: Decimal) -> str:
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if value >= unit and value % unit == 0:
            return f"{int(value // unit)}{suffix}"
    return str(int(value))
