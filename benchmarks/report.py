"""The benchmark's table: one row per target, ratios of numbers measured in the same run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.load import Measured

X = "\N{MULTIPLICATION SIGN}"


@dataclass
class Row:
    what: str
    app: str
    compared: str
    ratio: str
    target: str
    met: str  # "yes", "no", "n/a" or "" (for information)


def rate(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}/s"


def ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def mb(value: float) -> str:
    return f"{value:.0f} MB"


def times(value: float, target: float | None = None) -> str:
    return "n/a" if math.isnan(value) or math.isinf(value) else number(value, 2, target) + X


def number(value: float, digits: int, target: float | None = None) -> str:
    """``value`` with ``digits`` decimals, or more when fewer would show it equal to a target
    it misses or meets by less (0.7998 against 0.8 is "0.7998", not "0.80" marked "no")."""
    while target is not None and digits < 6 and value != target:
        if round(value, digits) != target:
            break
        digits += 1
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def markdown(rows: Sequence[Row]) -> str:
    header = Row("what", "app", "compared with", "ratio", "target", "met")
    lines = [_line(header), "|" + "---|" * 6]
    lines += [_line(row) for row in rows]
    return "\n".join(lines)


def _line(row: Row) -> str:
    cells = (row.what, row.app, row.compared, row.ratio, row.target, row.met)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def cpu_table(measurements: Iterable[Measured], columns: Sequence[str]) -> str:
    """Where the CPU went: milliseconds of CPU per completed request, by process."""
    lines = [
        "| CPU ms per request | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in measurements:
        cells = [
            "n/a" if (v := m.cpu_ms.get(c)) is None or math.isnan(v) else f"{v:.2f}"
            for c in columns
        ]
        lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
