"""The language-model training objective, written once on the op vocabulary ``F``:

    L = mean over counted positions t of l_t  +  aux["loss"],   l_t = -log softmax(z_t)[target_t]

Targets < 0 are not counted (padding). The cross-entropy is computed in float32 from a
fused log-softmax (on MindSpore CPU 12x faster with its gradient than logsumexp(z) -
z[target], whose max-reduction gradient is slow).

Stochastic routers (skip, balanced) also need the score-function part of their gradient
(see models/routers/skip.py): with r_t = aux["routing_log_prob"][t] (summed over MoE
layers) the objective adds S - stop_gradient(S),

    S = sum_t stop_gradient(l_t) r_t / (counted positions),

which leaves the loss value unchanged and adds the score term to the gradient. Token t's
own loss l_t stands for its downstream loss (in a transformer its routing also reaches
later positions through attention). A baseline is the router's (``router_options.baseline:
leave_one_out`` rewrites r so that the sum becomes sum_t (l_t - mean_{u != t} l_u) r_t:
models/routers/sampling.py).
"""
from __future__ import annotations

from typing import Tuple


def lm_objective(F, outputs, targets) -> Tuple[object, dict]:
    """outputs = (logits [B, S, V], aux) from ``Transformer.forward``; targets [B, S] int
    (the target of position s is the token at s + 1; < 0 = not counted) -> (loss scalar
    float32, metrics).
    The trainer's ``objective(F, module_outputs, *targets)``.

    metrics: ``loss`` (total), ``lm_loss`` (cross-entropy), ``aux_loss`` (aux["loss"]),
    and every other aux entry under its own name, except ``routing_log_prob``."""
    logits, aux = outputs
    z = F.cast(logits, F.float32)
    counted = targets >= 0
    safe = F.cast(F.where(counted, targets, F.zeros((), targets.dtype)), F.index_dtype)
    nll = -F.take_along_axis(F.log_softmax(z, -1), F.expand_dims(safe, -1), -1)[..., 0]
    weight = F.cast(counted, F.float32)
    count = F.maximum(F.sum(weight), F.ones((), F.float32))
    lm_loss = F.sum(nll * weight) / count
    loss = lm_loss + aux["loss"]
    if "routing_log_prob" in aux:
        loss = loss + score_term(F, nll, weight, count, aux["routing_log_prob"])
    metrics = {key: value for key, value in aux.items() if key not in ("loss", "routing_log_prob")}
    metrics.update({"loss": loss, "lm_loss": lm_loss, "aux_loss": aux["loss"]})
    return loss, metrics


def score_term(F, nll, weight, count, routing_log_prob):
    """S - stop_gradient(S) (module docstring): value 0, gradient the score term.
    nll, weight [B, S]; routing_log_prob [B * S]."""
    advantage = F.stop_gradient(F.reshape(nll * weight, (-1,)))
    surrogate = F.sum(advantage * routing_log_prob) / count
    return surrogate - F.stop_gradient(surrogate)
