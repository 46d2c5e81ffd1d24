"""The per-framework train step behind one interface.

``make_train_step(backend, module, objective, lr, betas, eps, weight_decay, grad_clip)``
returns a ``TorchTrainStep`` or ``MindSporeTrainStep`` with:

- ``step(inputs: tuple, targets: tuple, lr: float, micro_batches: int = 1) -> (loss: float,
  metrics: dict[str, np.ndarray], grad_norm: float)``: forward, ``objective(F,
  module(*inputs), *targets) -> (loss, metrics)``, backward, global-norm clipping, AdamW at
  learning rate ``lr``; with ``micro_batches`` k > 1 the batch is cut into k equal slices
  (``split_micro_batches``) whose gradients, losses and metrics are averaged before the update
  (gradient accumulation: the same step as the whole batch when the objective is a mean
  over equal slices and has no batch-level term such as a load-balancing loss); a
  NaN/Inf loss or gradient norm leaves weights and optimizer state untouched and adds one
  to ``skipped`` (under a dynamic loss scale, a float16 overflow of the gradients halves the
  scale instead, adds one to ``overflows`` and sets ``overflowed``); in a multi-process run
  (``parallel``) loss, gradients and norm are the global batch's
  (``parallel.gradient_sync``), so every rank takes the same decision;
- ``evaluate(inputs, targets) -> (loss, metrics)``: no gradients, no update;
- ``invalidate()``: recompile at the next call (host-side state read as a compile-time
  constant changed); nothing to do on torch;
- ``optimizer_state() -> dict[str, np.ndarray]`` / ``load_optimizer_state(values)``: the
  AdamW state as numpy with backend-neutral names (``optimizer_state_names``), so a
  checkpoint written by one framework loads into the other.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import numpy as np

from backends import check_backend
from core.errors import ConfigError


def decays(shape: Sequence[int]) -> bool:
    """Weight decay applies to matrices and expert stacks (two or more axes), not to
    norm gains or biases."""
    return len(tuple(shape)) >= 2


def optimizer_state_names(param_names: Iterable[str]) -> List[str]:
    """``step`` plus ``exp_avg.<param>`` and ``exp_avg_sq.<param>`` for every trainable
    parameter (names as in the component's ``param_specs``)."""
    names = ["step"]
    for name in param_names:
        names += [f"exp_avg.{name}", f"exp_avg_sq.{name}"]
    return names


def split_micro_batches(values: Sequence, count: int) -> List[tuple]:
    """``values`` (inputs then targets: numpy arrays or tensors) cut into ``count`` equal
    slices along axis 0, for gradient accumulation; a value whose first axis is not the
    batch (that of ``values[0]``), e.g. a scalar, goes whole to every slice."""
    rows = values[0].shape[0]
    if rows % count:
        raise ConfigError(f"train.grad_accum={count} must divide the {rows} sequences of a step on this rank")
    size = rows // count
    return [tuple(v[i * size:(i + 1) * size] if len(getattr(v, "shape", ())) and v.shape[0] == rows else v
                  for v in values) for i in range(count)]


def mean_metrics(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """The micro-batches' metrics averaged, key by key (one: as they are)."""
    if len(parts) == 1:
        return parts[0]
    return {key: np.mean([part[key] for part in parts], 0) for key in parts[0]}


def make_train_step(backend: str, module, objective: Callable, lr: float,
                    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.0, grad_clip: float = 0.0, parallel=None, loss_scale=None):
    """The train step for ``module`` (a TorchModule or MindSporeModule) on ``backend``;
    ``parallel``: the run's ``launch.process_groups.ParallelRun`` (None: one process);
    ``loss_scale``: a ``backends.loss_scale.LossScale`` (None: the loss is not scaled)."""
    if check_backend(backend) == "torch":
        from backends.torch_train import TorchTrainStep as Step
    else:
        from backends.mindspore_train import MindSporeTrainStep as Step
    return Step(module, objective, lr, betas, eps, weight_decay, grad_clip, parallel=parallel, loss_scale=loss_scale)
