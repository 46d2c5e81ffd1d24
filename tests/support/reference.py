"""Independent NumPy (float64) reference of routing, router losses, capacity dispatch and
the whole MoE layer, written from /work/shared/PAPERS.md and the docstrings in models/,
never from models/ code: plain loops over tokens and assignments, no op vocabulary.

Conventions (the spec the library must meet):
- ``logits``/``probs`` [T, S] over S = n true + m null slots; ``index`` [T, k] (values >= n
  are null experts); ``weight`` [T, k].
- top-k ties go to the lower expert index.
- capacity C = max(1, ceil(capacity_factor * T * k / S)); null assignments never use it.
- drop policy ``position``: slot-major priority (every token's first choice before anyone's
  second, tokens in order: GShard); ``probability``: largest weight first, equal weights
  in slot-major order.
- parameters are named as the layer names them: ``router.weight`` [d, n],
  ``router.null_weight`` [d, m], ``experts.w_up``/``w_gate`` [E, d, f], ``experts.w_down`` [E, f, d].
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import numpy as np
from scipy.special import erf


def softmax(logits: np.ndarray) -> np.ndarray:
    """[T, S] -> [T, S] row-wise softmax in float64."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """[T, S] -> [T]."""
    z = np.asarray(logits, np.float64)
    top = z.max(-1)
    return top + np.log(np.exp(z - top[:, None]).sum(-1))


def top_k(probs: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The k largest per row, descending, ties to the lower index: (index [T, k], value [T, k])."""
    index = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return index, np.take_along_axis(probs, index, -1)


def topk_routing(logits: np.ndarray, k: int, renormalize: bool):
    """Softmax top-k (GShard/Mixtral; Switch is k=1 without renormalisation).
    Returns (probs [T, S], index [T, k], weight [T, k])."""
    probs = softmax(logits)
    index, weight = top_k(probs, k)
    if renormalize:
        weight = weight / weight.sum(-1, keepdims=True)
    return probs, index, weight


def adamoe_routing(logits: np.ndarray, num_experts: int, k: int):
    """AdaMoE: softmax over n+m, top-k over all, weights renormalised over the selected true
    experts only (denominator 1 when none is true), nulls get weight 0."""
    probs = softmax(logits)
    index, top = top_k(probs, k)
    weight = np.zeros_like(top)
    for t in range(index.shape[0]):
        true = index[t] < num_experts
        total = top[t][true].sum() if true.any() else 1.0
        weight[t][true] = top[t][true] / total
    return probs, index, weight


def assignment_counts(index: np.ndarray, num_slots: int) -> np.ndarray:
    """c_i over all (token, slot) pairs: [num_slots] float64."""
    counts = np.zeros(num_slots)
    for e in np.asarray(index).ravel():
        counts[e] += 1
    return counts


def switch_balance_loss(probs: np.ndarray, index: np.ndarray, num_experts: int) -> float:
    """N * sum_i f_i P_i, f over the T*k assignments, P = mean router probability."""
    f = assignment_counts(index, num_experts) / index.size
    return float(num_experts * np.dot(f, probs.mean(0)))


def null_bucket_balance_loss(probs: np.ndarray, index: np.ndarray, num_experts: int, num_null: int) -> float:
    """AdaMoE: null counts replaced by their mean, f = c / sum c, L = (n+m) sum_i f_i P_i."""
    counts = assignment_counts(index, num_experts + num_null)
    counts[num_experts:] = counts[num_experts:].mean()
    f = counts / counts.sum()
    return float((num_experts + num_null) * np.dot(f, probs.mean(0)))


def z_loss(logits: np.ndarray) -> float:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
    return float(np.mean(logsumexp(logits) ** 2))


def capacity_slots(capacity_factor: float, num_tokens: int, k: int, num_slots: int) -> int:
    """C = max(1, ceil(cf * T * k / (n + m)))."""
    return max(1, math.ceil(capacity_factor * num_tokens * k / num_slots))


def keep_mask(index: np.ndarray, weight: np.ndarray, num_experts: int, capacity: int, policy: str) -> np.ndarray:
    """Which assignments an expert processes: [T, k] bool. Nulls are never kept."""
    num_tokens, k = index.shape
    order = [(t, j) for j in range(k) for t in range(num_tokens)]
    if policy == "probability":
        order = sorted(order, key=lambda a: -float(weight[a]))  # Python's sort is stable
    elif policy != "position":
        raise ValueError(policy)
    used = np.zeros(num_experts, int)
    kept = np.zeros(index.shape, bool)
    for t, j in order:
        e = index[t, j]
        if e < num_experts and used[e] < capacity:
            kept[t, j] = True
            used[e] += 1
    return kept


def silu(z: np.ndarray) -> np.ndarray:
    return z / (1.0 + np.exp(-z))


def gelu(z: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU."""
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def expert_ffn(rows: np.ndarray, expert: int, params: Dict[str, np.ndarray], swiglu: bool,
               prefix: str = "") -> np.ndarray:
    """Expert ``expert`` on rows [N, d] -> [N, d]. SwiGLU: down(silu(x W_gate) * x W_up);
    GELU: down(gelu(x W_up))."""
    p = {name: np.asarray(params[prefix + "experts." + name], np.float64)[expert]
         for name in (("w_up", "w_gate", "w_down") if swiglu else ("w_up", "w_down"))}
    rows = np.asarray(rows, np.float64)
    up = rows @ p["w_up"]
    hidden = silu(rows @ p["w_gate"]) * up if swiglu else gelu(up)
    return hidden @ p["w_down"]


def route(tokens: np.ndarray, params: Dict[str, np.ndarray], config, prefix: str = "") -> dict:
    """The router of ``config.router`` on tokens [T, d]: logits, probs, index, weight, and
    the unweighted ``balance`` and ``z`` losses."""
    c = config
    tokens = np.asarray(tokens, np.float64)
    logits = tokens @ np.asarray(params[prefix + "router.weight"], np.float64)
    if c.router == "adamoe":
        logits = np.concatenate([logits, tokens @ np.asarray(params[prefix + "router.null_weight"], np.float64)], -1)
        probs, index, weight = adamoe_routing(logits, c.num_experts, c.top_k)
        balance = null_bucket_balance_loss(probs, index, c.num_experts, c.num_null_experts)
    elif c.router in ("topk", "switch"):
        renormalize = c.renormalize if c.router == "topk" else False
        probs, index, weight = topk_routing(logits, c.top_k, renormalize)
        balance = switch_balance_loss(probs, index, c.num_experts)
    else:
        raise ValueError(c.router)
    return {"logits": logits, "probs": probs, "index": index, "weight": weight,
            "balance": balance, "z": z_loss(logits)}


def layer_plan(x: np.ndarray, params: Dict[str, np.ndarray], config, prefix: str = "") -> dict:
    """Routing plus dispatch for x [..., d]: the ``route`` dict with ``tokens`` [T, d],
    ``kept`` [T, k] and ``capacity`` (None when dropless)."""
    c = config
    tokens = np.asarray(x, np.float64).reshape(-1, c.d_model)
    plan = route(tokens, params, c, prefix)
    plan["tokens"] = tokens
    if c.dispatch == "capacity":
        plan["capacity"] = capacity_slots(c.capacity_factor, tokens.shape[0], c.top_k,
                                          c.num_experts + c.num_null_experts)
        plan["kept"] = keep_mask(plan["index"], plan["weight"], c.num_experts, plan["capacity"], c.drop_policy)
    else:
        plan["capacity"] = None
        plan["kept"] = plan["index"] < c.num_experts
    return plan


def combine(plan: dict, params: Dict[str, np.ndarray], config, kept: np.ndarray, prefix: str = "") -> np.ndarray:
    """y [T, d] = sum over assignments marked in ``kept`` [T, k] of weight * expert(token)."""
    tokens = plan["tokens"]
    y = np.zeros_like(tokens)
    swiglu = config.expert_type == "swiglu"
    for t, j in zip(*np.nonzero(kept)):
        e = int(plan["index"][t, j])
        y[t] += plan["weight"][t, j] * expert_ffn(tokens[t:t + 1], e, params, swiglu, prefix)[0]
    return y


def moe_layer(x: np.ndarray, params: Dict[str, np.ndarray], config, prefix: str = ""):
    """The MoE layer: x [..., d] -> (y [..., d] without residual, aux) with aux keys as the
    library's: loss, balance_loss, z_loss, tokens_per_expert, dropped_fraction,
    dropped_per_token, mean_true_experts_per_token, expert_flops."""
    c = config
    plan = layer_plan(x, params, c, prefix)
    y = combine(plan, params, c, plan["kept"], prefix)
    num_tokens = plan["tokens"].shape[0]
    requested = int((plan["index"] < c.num_experts).sum())
    processed = int(plan["kept"].sum())
    flops_per_row = 2 * (3 if c.expert_type == "swiglu" else 2) * c.d_model * c.ffn_hidden
    rows = c.num_experts * plan["capacity"] if c.dispatch == "capacity" else processed
    aux = {"balance_loss": plan["balance"], "z_loss": plan["z"],
           "loss": c.balance_loss_coef * plan["balance"] + c.z_loss_coef * plan["z"],
           "tokens_per_expert": assignment_counts(plan["index"][plan["kept"]], c.num_experts),
           "dropped_fraction": (requested - processed) / requested if requested else 0.0,
           "dropped_per_token": (requested - processed) / num_tokens,
           "mean_true_experts_per_token": requested / num_tokens,
           "expert_flops": float(rows * flops_per_row)}
    return y.reshape(np.shape(x)), aux
