"""Numbers and markdown tables as the results files show them."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A number with ``digits`` decimals, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_mean_sd(summary: Mapping[str, Optional[float]], digits: int = 3) -> str:
    """'mean ± sd' of a ``stats.stats`` summary ('mean' alone for one value, n/a for none)."""
    if summary["mean"] is None:
        return "n/a"
    return fmt(summary["mean"], digits) + (f" ± {summary['sd']:.{digits}f}" if summary["n"] > 1 else "")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A GitHub markdown table; ``align`` one letter per column (l / r), default left then right."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)
