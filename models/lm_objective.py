"""The language-model training objective, written once on the op vocabulary ``F``:

    L = mean over counted positions of -log softmax(logits)[target]  +  aux["loss"]

Targets < 0 are not counted (padding). The cross-entropy is computed in float32 from a
fused log-softmax (on MindSpore CPU 12x faster with its gradient than logsumexp(z) -
z[target], whose max-reduction gradient is slow).
"""
from __future__ import annotations

from typing import Tuple


def lm_objective(F, outputs, targets) -> Tuple[object, dict]:
    """outputs = (logits [B, S, V], aux) from ``Transformer.forward``; targets [B, S] int
    (the target of position s is the token at s + 1; < 0 = not counted) -> (loss scalar
    float32, metrics). The trainer's ``objective(F, module_outputs, *targets)``.

    metrics: ``loss`` (total), ``lm_loss`` (cross-entropy), ``aux_loss`` (aux["loss"]),
    and every other aux entry under its own name."""
    logits, aux = outputs
    z = F.cast(logits, F.float32)
    counted = targets >= 0
    safe = F.cast(F.where(counted, targets, F.zeros((), targets.dtype)), F.index_dtype)
    nll = -F.take_along_axis(F.log_softmax(z, -1), F.expand_dims(safe, -1), -1)[..., 0]
    weight = F.cast(counted, F.float32)
    lm_loss = F.sum(nll * weight) / F.maximum(F.sum(weight), F.ones((), F.float32))
    loss = lm_loss + aux["loss"]
    metrics = {key: value for key, value in aux.items() if key != "loss"}
    metrics.update({"loss": loss, "lm_loss": lm_loss, "aux_loss": aux["loss"]})
    return loss, metrics
