"""The language-model training objective, written once on the op vocabulary ``F``:

    L = mean over counted positions t of l_t  +  aux["loss"],   l_t = -log softmax(z_t)[target_t]

Targets < 0 are not counted (padding). The cross-entropy is computed in float32 from a
fused log-softmax (on MindSpore CPU 12x faster with its gradient than logsumexp(z) -
z[target], whose max-reduction gradient is slow).

Stochastic routers (skip, balanced) also need the score-function part of their gradient
(see models/routers/skip.py): with r_t = aux["routing_log_prob"][t] (summed over MoE
layers) the objective adds S - stop_gradient(S),

    S = sum_t stop_gradient(l_t - b) r_t / (counted positions),

which leaves the loss value unchanged and adds the score term to the gradient. Token t's
own loss l_t stands for its downstream loss (in a transformer its routing also reaches
later positions through attention). b is ``loss_baseline``: 0 by default (unbiased); any
value that does not depend on this batch's routing noise (e.g. a running mean of past
losses, passed by the trainer) keeps it unbiased and lowers the variance.
"""
from __future__ import annotations

from typing import Tuple


def lm_objective(F, outputs, targets, loss_baseline=None) -> Tuple[object, dict]:
    """outputs = (logits [B, S, V], aux) from ``Transformer.forward``; targets [B, S] int
    (the target of position s is the token at s + 1; < 0 = not counted); loss_baseline:
    optional scalar float32 tensor (module docstring) -> (loss scalar float32, metrics).
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
        loss = loss + score_term(F, nll, weight, count, aux["routing_log_prob"], loss_baseline)
    metrics = {key: value for key, value in aux.items() if key not in ("loss", "routing_log_prob")}
    metrics.update({"loss": loss, "lm_loss": lm_loss, "aux_loss": aux["loss"]})
    return loss, metrics


def score_term(F, nll, weight, count, routing_log_prob, loss_baseline=None):
    """S - stop_gradient(S) (module docstring): value 0, gradient the score term.
    nll, weight [B, S]; routing_log_prob [B * S]."""
    advantage = F.stop_gradient(F.reshape(nll * weight, (-1,)))
    if loss_baseline is not None:
        advantage = advantage - F.stop_gradient(loss_baseline) * F.reshape(weight, (-1,))
    surrogate = F.sum(advantage * routing_log_prob) / count
    return surrogate - F.stop_gradient(surrogate)
