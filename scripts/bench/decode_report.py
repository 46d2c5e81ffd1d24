"""The decode benchmark's summary: per implementation and mode the median prefill and time per
token over the rounds, the ratios the targets name (each the median of per-round ratios, so
the implementations compared ran back to back), whether greedy decoding chose the same
tokens, and the markdown table."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from scripts.reporting.tables import markdown_table

# (implementation, reference, target on decode time per token)
TARGETS = (("torch", "transformers", 1.1), ("mindspore", "torch", 1.5))


def per_round_ratio(rounds: Sequence[Mapping[str, Any]], name: str, reference: str, mode: str, key: str) -> float:
    """Median over rounds of rounds[r][mode][name][key] / rounds[r][mode][reference][key]."""
    return float(np.median([r[mode][name][key] / r[mode][reference][key] for r in rounds]))


def summarise(rounds: Sequence[Mapping[str, Any]], names: Sequence[str], modes: Sequence[str]) -> Dict[str, Any]:
    """rounds: one {mode: {implementation: row}} per round (row: prefill_ms, ms_per_token,
    tokens) -> {"rows": one per (implementation, mode) with medians and ratios, "targets":
    lines, "greedy_tokens_agree": implementation -> bool (against the first)}."""
    rows: List[Dict[str, Any]] = []
    for mode in modes:
        for name in names:
            prefill = [r[mode][name]["prefill_ms"] for r in rounds]
            per_token = [r[mode][name]["ms_per_token"] for r in rounds]
            row = {"implementation": name, "mode": mode, "prefill_ms": float(np.median(prefill)),
                   "ms_per_token": float(np.median(per_token)), "ms_per_token_min": float(np.min(per_token)),
                   "rounds": len(rounds)}
            for other, reference, _ in TARGETS:
                if other == name and reference in names:
                    row["reference"] = reference
                    row["decode_ratio"] = per_round_ratio(rounds, name, reference, mode, "ms_per_token")
                    row["prefill_ratio"] = per_round_ratio(rounds, name, reference, mode, "prefill_ms")
            rows.append(row)
    targets = [f"{row['implementation']} {row['mode']} decode / {row['reference']}: {row['decode_ratio']:.2f}x "
               f"(target <= {limit}x): {'met' if row['decode_ratio'] <= limit else 'NOT met'}"
               for row in rows for name, _, limit in TARGETS if row["implementation"] == name and "reference" in row]
    agree = {}
    if "greedy" in modes and rounds:
        first = rounds[0]["greedy"]
        agree = {name: first[name]["tokens"] == first[names[0]]["tokens"] for name in names[1:]}
    return {"rows": rows, "targets": targets, "greedy_tokens_agree": agree}


def table(summary: Mapping[str, Any]) -> str:
    """Markdown: implementation, mode, prefill ms, decode ms/token (median and min), tokens/s
    (median), ratios to the reference."""
    lines = []
    for row in summary["rows"]:
        ratio = (f"{row['decode_ratio']:.2f}x {row['reference']}" if "reference" in row else "")
        prefill_ratio = (f"{row['prefill_ratio']:.2f}x" if "reference" in row else "")
        lines.append([row["implementation"], row["mode"], f"{row['prefill_ms']:.0f}", f"{row['ms_per_token']:.1f}",
                      f"{row['ms_per_token_min']:.1f}", f"{1e3 / row['ms_per_token']:.1f}", ratio, prefill_ratio])
    return markdown_table(["implementation", "mode", "prefill ms", "decode ms/token", "min", "decode tokens/s",
                           "decode vs reference", "prefill vs reference"], lines, "llrrrrrr")
