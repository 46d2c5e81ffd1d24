"""The per-framework train step behind one interface.

``make_train_step(backend, module, objective, lr, betas, eps, weight_decay, grad_clip)``
returns a ``TorchTrainStep`` or ``MindSporeTrainStep`` with:

- ``step(inputs: tuple, targets: tuple, lr: float) -> (loss: float, metrics: dict[str,
  np.ndarray], grad_norm: float)``: forward, ``objective(F, module(*inputs), *targets) ->
  (loss, metrics)``, backward, global-norm clipping, AdamW at learning rate ``lr``; a
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

from typing import Callable, Iterable, List, Sequence, Tuple

from backends import check_backend


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


def make_train_step(backend: str, module, objective: Callable, lr: float,
                    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.0, grad_clip: float = 0.0, parallel=None, loss_scale=None):
    """The train step for ``module`` (a TorchModule or MindSporeModule) on ``backend``;
    ``parallel``: the run's ``parallel.process_groups.ParallelRun`` (None: one process);
    ``loss_scale``: a ``backends.loss_scale.LossScale`` (None: the loss is not scaled)."""
    if check_backend(backend) == "torch":
        from backends.torch_train import TorchTrainStep as Step
    else:
        from backends.mindspore_train import MindSporeTrainStep as Step
    return Step(module, objective, lr, betas, eps, weight_decay, grad_clip, parallel=parallel, loss_scale=loss_scale)
