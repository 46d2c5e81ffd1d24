"""Per-forward routing metrics (no gradient): load per expert, drops, adaptivity, FLOPs."""
from __future__ import annotations

import numpy as np


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
    - ``dropped_per_token``: those assignments per token; averaged over equal batches (ranks,
      micro-batches) with ``mean_true_experts_per_token`` it gives the pooled
      ``dropped_fraction`` of them all (``pooled_dropped_fraction``);
    - ``mean_true_experts_per_token``: true experts selected per token (AdaMoE "load");
    - ``expert_flops``: forward FLOPs of the expert FFNs in this call."""
    processed = F.cast(F.stop_gradient(tokens_per_expert), F.float32)
    requested = F.stop_gradient(true_assignments)
    dropped = (requested - F.sum(processed)) / F.maximum(requested, F.ones((), F.float32))  # none asked: 0
    return {"tokens_per_expert": processed,
            "dropped_fraction": dropped,
            "dropped_per_token": (requested - F.sum(processed)) / num_tokens,
            "mean_true_experts_per_token": requested / num_tokens,
            "expert_flops": F.cast(expert_rows, F.float32) * float(flops_per_row)}


def pooled_dropped_fraction(metrics: dict) -> dict:
    """Host side, numpy: the ``dropped_fraction`` of batches whose metrics were averaged
    (ranks of a multi-process run, micro-batches: every one with the same token count),
    from their averaged ``layers.dropped_per_token`` and ``layers.mean_true_experts_per_token``:
    all dropped assignments over all requested ones, per MoE layer, and the mean over layers
    as the model's (the mean of the batches' own fractions weighed a batch that asked for
    few assignments like one that asked for many). {} when the metrics lack them."""
    if "layers.dropped_per_token" not in metrics or "layers.mean_true_experts_per_token" not in metrics:
        return {}
    dropped = np.asarray(metrics["layers.dropped_per_token"], np.float64)
    requested = np.asarray(metrics["layers.mean_true_experts_per_token"], np.float64)
    per_layer = np.where(requested > 0, dropped / np.maximum(requested, 1e-30), 0.0)
    return {"layers.dropped_fraction": per_layer, "dropped_fraction": np.asarray(per_layer.mean())}
