"""The train step, written once: the policy lives here, each framework gives two small hooks.

``make_train_step(backend, module, objective, lr, ...)`` returns a ``TrainStep`` with:

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
- ``optimizer_state() -> dict[str, np.ndarray]`` / ``load_optimizer_state(values)``: the
  AdamW state as numpy with backend-neutral names (``backends.optimizer_layout``), so a
  checkpoint written by one framework loads into the other; ``master_weights()`` /
  ``load_master_weights(values)``: the float32 masters of a bfloat16/float16 model.

Host-side state that compiled code reads as constants (a router's measured capacity, hence
a shape) is reported by the component's ``static_key()``: the step compares it before every
call and has the framework recompile when it changed.

The framework hooks (``backends.torch_train.TorchHooks``, ``backends.mindspore_train.
MindSporeHooks``) hold no policy: ``gradients(scale, num_inputs, tensors) -> (loss, metrics,
grads, norm)`` (gradients of ``loss * scale`` in ``order``, and their global norm) and
``apply(grads, lr, coef)`` (AdamW on ``grads * coef``), compiled or not, plus tensor
conversion, evaluation and the optimizer's state.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from backends import check_backend
from backends.loss_scale import APPLY, OVERFLOW, SKIP, step_outcome
from backends.optimizer_layout import decays, optimizer_state_names
from core.errors import ConfigError
from parallel.distributed_optimizer import DistributedOptimizer
from parallel.gradient_sync import GradientSync

EXECUTIONS = ("auto", "compiled", "eager")


def forward_compiles(expert_parallel: int, component=None, exchanges_compile: Optional[bool] = None) -> bool:
    """Whether a step's forward and backward may be compiled (MindSpore ``ms.jit`` /
    GRAPH_MODE, ``torch.compile``): not when experts are split over processes and an
    all-to-all reads its split sizes on the host (``exchanges_compile``, by default the
    component's: dropless or hierarchical exchanges), nor for a component that declares
    ``compiles = False`` (it reports through host-side attributes during the forward)."""
    if exchanges_compile is None:
        exchanges_compile = getattr(component, "exchanges_compile", False)
    return (expert_parallel == 1 or exchanges_compile) and getattr(component, "compiles", True)


def split_micro_batches(values: Sequence, count: int, batch_axes: Optional[Sequence] = None) -> List[tuple]:
    """``values`` (inputs then targets: numpy arrays or tensors) cut into ``count`` equal
    slices along their batch axis, for gradient accumulation. ``batch_axes``: each value's
    batch axis, None for a value that goes whole to every slice; by default axis 0 where
    it has the batch's length (that of ``values[0]``), else whole (e.g. a scalar)."""
    rows = values[0].shape[0]
    if rows % count:
        raise ConfigError(f"train.grad_accum={count} must divide the {rows} sequences of a step on this rank")
    size = rows // count
    if batch_axes is None:
        batch_axes = [0 if len(getattr(v, "shape", ())) and v.shape[0] == rows else None for v in values]

    def part(value, axis, i):
        if axis is None:
            return value
        index = (slice(None),) * axis + (slice(i * size, (i + 1) * size),)
        return value[index]
    return [tuple(part(v, axis, i) for v, axis in zip(values, batch_axes)) for i in range(count)]


def mean_metrics(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """The micro-batches' metrics averaged, key by key (one: as they are)."""
    if len(parts) == 1:
        return parts[0]
    return {key: np.mean([part[key] for part in parts], 0) for key in parts[0]}


class TrainStep:
    """One AdamW step (Loshchilov & Hutter 2019, decoupled weight decay on parameters with
    two or more axes) after global-norm clipping (g <- g * min(1, clip / (||g|| + 1e-6)),
    no clipping when ``grad_clip`` is 0). With ``loss_scale`` the backward pass runs on the
    scaled loss; the norm is the unscaled gradients', and the one multiplier ``clip /
    scale`` unscales and clips in the update. With ``parallel`` (a
    ``core.layout.ParallelRun``) gradients are averaged between the two hooks; with
    ``sharded`` (a ``parallel.distributed_optimizer.DistributedOptimizer``) they are
    reduce-scattered instead, and that optimizer updates its shards in place of ``apply``."""

    def __init__(self, hooks, grad_clip: float = 0.0, parallel=None, loss_scale=None, sharded=None) -> None:
        self.hooks = hooks
        self.module = hooks.module
        self.F = hooks.module.ops
        self.grad_clip = float(grad_clip)
        self.loss_scale = loss_scale
        self.sync = None if parallel is None else GradientSync(parallel, hooks.order, self.module.specs)
        self.sharded = sharded
        self.skipped, self.overflows, self.overflowed = 0, 0, False
        self._static_key = self._current_key()

    @property
    def order(self) -> Tuple[str, ...]:
        """The trainable parameters' names in the optimizer's order."""
        return self.hooks.order

    @property
    def compiled(self) -> bool:
        """Whether the forward and backward run compiled."""
        return self.hooks.compiled

    def _current_key(self) -> tuple:
        key = getattr(self.module.component, "static_key", None)
        return key() if key is not None else ()

    def _follow_static_key(self) -> None:
        key = self._current_key()
        if key != self._static_key:
            self._static_key = key
            self.hooks.recompile()

    def _float32(self, grads: list) -> list:
        """Gradients in float32 before anything adds them up (micro-batches, ranks): a
        bfloat16/float16 model's gradients (still loss-scaled in float16) summed over W ranks
        in their own type lose precision or overflow where one process would not."""
        return [g if g.dtype == self.F.float32 else self.F.cast(g, self.F.float32) for g in grads]

    def _numpy(self, metrics: dict) -> Dict[str, np.ndarray]:
        return {key: np.asarray(self.F.to_numpy(value)) for key, value in metrics.items()}

    def step(self, inputs: Sequence, targets: Sequence, lr: float, micro_batches: int = 1,
             batch_axes: Optional[Sequence] = None) -> Tuple[float, Dict[str, np.ndarray], float]:
        """inputs/targets: tuples of numpy arrays or tensors -> (loss, metrics, grad_norm);
        ``micro_batches``: gradient accumulation over that many slices of the batch
        (``batch_axes``: see ``split_micro_batches``)."""
        self._follow_static_key()
        tensors = self.hooks.tensors(inputs, targets)
        scale = 1.0 if self.loss_scale is None else self.loss_scale.value
        total, losses, parts = None, [], []
        for part in split_micro_batches(tensors, micro_batches, batch_axes):
            loss, metrics, grads, norm = self.hooks.gradients(scale, len(inputs), part)
            grads = self._float32(grads)
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
            losses.append(loss)
            parts.append(self._numpy(metrics))
        grads = total
        if micro_batches > 1:
            grads = [g * (1.0 / micro_batches) for g in total]
            loss, norm = self.F.mean(self.F.stack(losses, 0)), self.F.global_norm(grads)
        total = None  # the gradients live on in ``grads`` alone: replacing it by shards frees them
        if self.sharded is not None:
            grads = self.sharded.shard_gradients(self.F, grads)
            norm, loss = self.sharded.global_norm(self.F, grads), self.sync.batch_mean(self.F, loss)
        elif self.sync is not None:
            grads = self.sync.average(self.F, grads)
            norm, loss = self.sync.global_norm(self.F, grads), self.sync.batch_mean(self.F, loss)
        loss_value, norm_value = float(self.F.to_numpy(loss)), float(self.F.to_numpy(norm)) / scale
        outcome = step_outcome(self.loss_scale, loss_value, norm_value)
        if outcome == APPLY:
            clip = min(1.0, self.grad_clip / (norm_value + 1e-6)) if self.grad_clip > 0 else 1.0
            if self.sharded is not None:
                self.hooks.assign(self.sharded.update(self.F, grads, self.hooks.parameters(), float(lr), clip / scale))
            else:
                self.hooks.apply(grads, float(lr), clip / scale)
        self.skipped += outcome == SKIP
        self.overflows += outcome == OVERFLOW
        self.overflowed = outcome == OVERFLOW
        return loss_value, mean_metrics(parts), norm_value

    def evaluate(self, inputs: Sequence, targets: Sequence) -> Tuple[float, Dict[str, np.ndarray]]:
        """The objective without gradients or updates -> (loss, metrics)."""
        self._follow_static_key()
        loss, metrics = self.hooks.evaluate(len(inputs), self.hooks.tensors(inputs, targets))
        return float(self.F.to_numpy(loss)), self._numpy(metrics)

    def master_weights(self) -> Dict[str, np.ndarray]:
        """The float32 weights AdamW updates, by parameter name: the master copies of a
        bfloat16/float16 model (what a checkpoint must keep), {} for a float32 model."""
        if self.sharded is not None:
            return self.sharded.masters(self.F)
        return self.hooks.master_weights()

    def load_master_weights(self, values: Dict[str, np.ndarray]) -> None:
        """Set the master copies from float32 ``values``; nothing for a float32 model."""
        if self.sharded is not None:
            self.sharded.load_masters(self.F, values)
        else:
            self.hooks.load_master_weights(values)

    def optimizer_state(self) -> Dict[str, np.ndarray]:
        """AdamW moments and step count as numpy copies (``optimizer_state_names``); whole
        tensors under the distributed optimizer too (every rank must call it)."""
        if self.sharded is not None:
            return self.sharded.state(self.F)
        return self.hooks.optimizer_state()

    def load_optimizer_state(self, values: Dict[str, np.ndarray]) -> None:
        """Inverse of ``optimizer_state`` (one written by either backend); copies, so training
        never writes into ``values``."""
        missing = sorted(set(optimizer_state_names(self.hooks.order)) - set(values))
        if missing:
            raise KeyError(f"optimizer state lacks {missing[0]}")
        if self.sharded is not None:
            self.sharded.load_state(self.F, values)
        else:
            self.hooks.load_optimizer_state(values)


def make_train_step(backend: str, module, objective: Callable, lr: float,
                    betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    weight_decay: float = 0.0, grad_clip: float = 0.0, parallel=None, loss_scale=None,
                    execution: str = "auto", distributed_optimizer: bool = False) -> TrainStep:
    """The train step for ``module`` (a TorchModule or MindSporeModule) on ``backend``;
    ``parallel``: the run's ``core.layout.ParallelRun`` (None: one process); ``loss_scale``: a
    ``backends.loss_scale.LossScale`` (None: the loss is not scaled); ``execution``: ``auto``
    (MindSpore compiles where ``forward_compiles`` allows, torch runs eagerly), ``compiled``
    (``ms.jit`` / ``torch.compile``) or ``eager``. The update is compiled on MindSpore in
    every mode. ``distributed_optimizer``: AdamW's state sharded over the data-parallel
    groups (``parallel.distributed_optimizer``; nothing to shard in one process)."""
    if execution not in EXECUTIONS:
        raise ConfigError(f"execution={execution!r}: valid values are {', '.join(EXECUTIONS)}")
    expert_parallel = 1 if parallel is None else parallel.layout.expert_parallel
    allowed = forward_compiles(expert_parallel, module.component)
    if execution == "compiled" and not allowed:
        raise ConfigError("execution=compiled: this step cannot compile its forward (experts split over "
                          "processes, or a component that declares compiles = False); use auto or eager")
    if check_backend(backend) == "torch":
        from backends.torch_train import TorchHooks as Hooks
    else:
        from backends.mindspore_train import MindSporeHooks as Hooks
    compiled = execution == "compiled" or (execution == "auto" and allowed and Hooks.compiles_by_default)
    shard = distributed_optimizer and parallel is not None and parallel.layout.world_size > 1
    hooks = Hooks(module, objective, lr, betas, eps, weight_decay, compiled, optimizer=not shard)
    sharded = None
    if shard:
        params = hooks.parameters()
        shapes = [tuple(p.shape) for p in params]
        sharded = DistributedOptimizer(module.ops, parallel, hooks.order, shapes, module.specs,
                                       [decays(s) for s in shapes], params, betas, eps, weight_decay, hooks.mixed)
    return TrainStep(hooks, grad_clip, parallel, loss_scale, sharded)
