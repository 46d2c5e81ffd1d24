"""Per-forward routing metrics (no gradient): load per expert, drops, adaptivity, FLOPs."""
from __future__ import annotations


def true_assignment_count(F, expert_index, num_experts: int):
    """Assignments to true (non-null) experts: expert_index [T, k] -> scalar float32."""
    return F.sum(F.cast(F.stop_gradient(expert_index) < num_experts, F.float32))


def routing_metrics(F, num_tokens: int, true_assignments, tokens_per_expert, expert_rows,
                    flops_per_row: int) -> dict:
    """true_assignments: (token, true expert) pairs the router asked for; tokens_per_expert
    [E]: assignments each expert processed; expert_rows: rows the experts computed (E*C
    with buffers, the processed rows dropless).

    - ``tokens_per_expert`` [E] float32;
    - ``dropped_fraction``: share of requested true-expert assignments not processed (0
      when none was requested, e.g. every AdaMoE assignment null);
    - ``mean_true_experts_per_token``: true experts selected per token (AdaMoE "load");
    - ``expert_flops``: forward FLOPs of the expert FFNs in this call."""
    processed = F.cast(F.stop_gradient(tokens_per_expert), F.float32)
    requested = F.stop_gradient(true_assignments)
    dropped = (requested - F.sum(processed)) / F.maximum(requested, F.ones((), F.float32))  # none asked: 0
    return {"tokens_per_expert": processed,
            "dropped_fraction": dropped,
            "mean_true_experts_per_token": requested / num_tokens,
            "expert_flops": F.cast(expert_rows, F.float32) * float(flops_per_row)}
